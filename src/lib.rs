//! # tinysse
//!
//! A Server-Sent Events server and library for programs that do not want an
//! async runtime: plain threads, blocking I/O and crossbeam channels.
//!
//! ## The model
//!
//! - A [`tiny_http`] listener (built with `socket2`, so timeouts and
//!   keepalive are set once and inherited by every connection) hands each
//!   request to a dispatcher thread.
//! - Short requests (static files, `/publish`, `/metrics`) run on a small,
//!   bounded pool of worker threads.
//! - Each SSE stream gets a writer thread of its own with a small stack. It
//!   blocks on a bounded crossbeam channel, and when woken drains everything
//!   queued into one chunk: one `write` and one `flush` per wake-up, so a lone
//!   event goes out at once and a burst costs one syscall.
//! - A [`Hub`] holds topics. Publishing encodes an event once, shares the
//!   bytes with every subscriber (an `Arc`, no copies), keeps it in the
//!   topic's history for `Last-Event-ID` replay and `try_send`s it to each
//!   subscriber's queue. A publisher never blocks on a subscriber: one whose
//!   queue is full is evicted and reconnects to catch up from history.
//! - Custom stream routes have the shape of the classic walking skeleton: a
//!   handler gets the request and a `Sender<Event>`, produces on a thread of
//!   its own, and ends the stream by dropping the sender.
//!
//! ## Trade-offs against an async server
//!
//! A stream costs two threads (tiny_http's connection thread and our writer),
//! mostly idle, with small stacks: a few tens of KiB of memory each, and one
//! wake-up per event per subscriber. In exchange nothing in the library needs
//! a runtime, every call is an ordinary blocking call that can be stepped
//! through in a debugger, and embedding it in a synchronous program is one
//! builder call. For thousands of streams per core an event loop is cheaper.
//!
//! ## Example
//!
//! ```
//! use tinysse::{Event, EventStream, Server};
//!
//! let server = Server::builder().addr("127.0.0.1:0").demo(false).start()?;
//! let mut stream = EventStream::connect(server.addr(), "/events?topic=news", &[])?;
//! server.hub().publish("news", &Event::data("hello"))?;
//! let msg = stream.next_message()?.expect("an event");
//! assert_eq!(msg.data, "hello");
//! server.shutdown();
//! server.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod config;
mod demo;
mod event;
mod files;
mod host;
mod hub;
mod metrics;
mod reader;
mod request;
mod routes;
mod server;
mod stream;

pub use client::EventStream;
pub use config::{Command, Config, ConfigError, USAGE};
pub use event::{Encode, Event, EventError, Frame};
pub use hub::{Hub, HubLimits, PublishError, SubscribeError, Subscription, valid_topic};
pub use metrics::Metrics;
pub use reader::{Item, Message, SseReader};
pub use request::StreamRequest;
pub use server::{Server, ServerBuilder, ServerHandle, StartError, StreamHandler};
pub use stream::{StreamEnd, StreamWriter};

/// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses a publish body (JSON or form): the topic and the encoded frame.
    pub fn parse_publish(body: &[u8], json: bool) -> Result<(String, Vec<u8>), String> {
        crate::routes::parse_publish(body, json).map(|p| (p.topic, p.event.to_bytes()))
    }

    /// Decodes `%XX` escapes.
    pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
        crate::files::percent_decode(s, plus_is_space)
    }

    /// Splits a request target into its path and decoded query pairs.
    pub fn split_target(target: &str) -> Option<(String, Vec<(String, String)>)> {
        crate::request::split_target(target)
            .ok()
            .map(|(p, q)| (p.to_string(), q))
    }

    /// Maps a URL path to a file under `root`, if it is served.
    pub fn resolve(root: &std::path::Path, url_path: &str) -> Option<std::path::PathBuf> {
        crate::files::resolve(root, url_path).ok()
    }
}
