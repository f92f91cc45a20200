//! The default settings, defined here once: [`Server::builder`](crate::Server::builder)
//! and [`Hub::new`](crate::Hub::new) start from them, and the `tinysse`
//! binary's flags default to them (its `--help` prints them).
//!
//! ```
//! use tinysse::{Server, defaults};
//!
//! // Room for bursts four times the usual size.
//! let server = Server::builder()
//!     .addr("127.0.0.1:0")
//!     .queue(defaults::QUEUE * 4)
//!     .start()?;
//! server.join();
//! # Ok::<(), tinysse::StartError>(())
//! ```

use std::time::Duration;

/// The listen address ([`ServerBuilder::addr`](crate::ServerBuilder::addr)).
pub const ADDR: &str = "127.0.0.1:8080";

/// Idle time after which a stream gets a heartbeat comment
/// ([`ServerBuilder::heartbeat`](crate::ServerBuilder::heartbeat)).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The `retry:` value, in milliseconds, sent at the start of each stream
/// ([`ServerBuilder::retry`](crate::ServerBuilder::retry)).
pub const RETRY_MS: u64 = 2000;

/// Open streams allowed at once
/// ([`ServerBuilder::max_streams`](crate::ServerBuilder::max_streams)).
pub const MAX_STREAMS: u64 = 1024;

/// Frames queued per subscriber before it is evicted
/// ([`ServerBuilder::queue`](crate::ServerBuilder::queue)).
pub const QUEUE: usize = 256;

/// Events kept per topic for `Last-Event-ID` replay
/// ([`ServerBuilder::history`](crate::ServerBuilder::history)).
pub const HISTORY: usize = 1024;

/// Topics held at once
/// ([`ServerBuilder::max_topics`](crate::ServerBuilder::max_topics)).
pub const MAX_TOPICS: usize = 10_000;

/// Bytes of retained events of all topics together, 64 MiB
/// ([`ServerBuilder::history_bytes`](crate::ServerBuilder::history_bytes)).
pub const HISTORY_BYTES: usize = 64 << 20;

/// The largest publish body, in bytes
/// ([`ServerBuilder::max_body`](crate::ServerBuilder::max_body)).
pub const MAX_BODY: u64 = 65_536;

/// How long a write to a client may block before its stream is dropped
/// ([`ServerBuilder::write_timeout`](crate::ServerBuilder::write_timeout)).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may take to send a request head, and each read of
/// a request body ([`ServerBuilder::header_timeout`](crate::ServerBuilder::header_timeout)).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
