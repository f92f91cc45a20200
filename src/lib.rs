//! # tinysse
//!
//! A Server-Sent Events server and library for programs that do not want an
//! async runtime: plain threads, blocking I/O and crossbeam channels. A
//! synchronous program (a long computation, a CLI tool, a device daemon)
//! starts it with one builder call, publishes from any of its threads, and
//! browsers watch with `EventSource`.
//!
//! ```
//! use tinysse::{Event, EventStream, Server};
//!
//! let server = Server::builder().addr("127.0.0.1:0").start()?;
//! let mut stream = EventStream::connect(server.addr(), "/events?topic=news", &[])?;
//! server.hub().publish("news", &Event::data("hello"))?;
//! let msg = stream.next_message()?.expect("an event");
//! assert_eq!(msg.data, "hello");
//! server.join(); // shuts down: every stream ends with a complete response
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The pieces
//!
//! | item | what it is |
//! |---|---|
//! | [`Server::builder`] → [`ServerHandle`] | the HTTP server on background threads: `/events`, `/publish`, custom stream routes, static files, graceful shutdown |
//! | [`Hub`] | topics: publish from any thread, subscribe, history for `Last-Event-ID` replay, eviction of slow subscribers |
//! | [`ServerBuilder::stream_route`] | the classic shape: a handler gets the request and a `Sender<Event>`, and the stream ends when it drops the sender |
//! | [`Event`], [`Frame`] | one event, validated when built, encoded per the WHATWG format; a frame is its encoded bytes, shared by every subscriber |
//! | [`Subscription`] | a hub subscriber: the replay after a `Last-Event-ID`, then a queue of live frames |
//! | [`StreamWriter`] | the writer loop on its own, over any `std::io::Write` and a `Receiver` |
//! | [`SseReader`], [`EventStream`] | the parser over any `BufRead`, and a blocking client over `TcpStream` |
//! | [`StreamRequest`] | the request a stream route's handler sees: path, query, headers, `Last-Event-ID` |
//! | [`defaults`] | every default setting, defined once |
//!
//! Each fallible operation has its own small error type implementing
//! `std::error::Error`: [`StartError`], [`PublishError`], [`SubscribeError`],
//! [`EventError`]. Each is `#[non_exhaustive]` (match with a `_` arm), and
//! one caused by another error keeps it as its
//! [`source`](std::error::Error::source). The client and the reader return
//! `std::io::Error`, as any reader does (`InvalidInput` for a request that
//! would be unsafe to send, `InvalidData` for a response that breaks the
//! protocol). Bad input is an error, never a panic.
//!
//! ## The library and the binary
//!
//! The `tinysse` binary (`src/bin/tinysse/`) is a thin program on this
//! public API, nothing more: flags, signals, the open-files limit, and the
//! demo (the seed's `/async` as a [`stream_route`](ServerBuilder::stream_route)
//! and a producer that publishes host numbers through
//! [`ServerHandle::hub`]). What only it needs (`ctrlc`, `lexopt`, `libc`)
//! is behind the default feature `cli`; a program that embeds the library
//! turns it off:
//!
//! ```toml
//! [dependencies]
//! tinysse = { version = "0.1", default-features = false }
//! crossbeam-channel = "0.5" # for stream routes' Sender
//! ```
//!
//! ## The model
//!
//! - A [`tiny_http`] listener (built with `socket2`, so timeouts and
//!   keepalive are set once and inherited by every connection) runs each
//!   request on its connection's own thread, so reading a body or writing
//!   an answer waits on that one client, never on a thread others need.
//!   Connections are capped; at the cap, the one that has kept its slot
//!   longest for one request is closed to make room.
//! - Every stream (`/events`, custom routes, `/async`, `/firehose`) takes
//!   its socket over from tiny_http once the request head is read, and is
//!   served by a small pool of writer threads (one per core, at most 4; see
//!   [`ServerBuilder::writer_threads`]), each owning many non-blocking
//!   sockets. A publish lists each subscriber on its
//!   writer thread and wakes each thread at most once; the thread then
//!   writes everything queued for each listed subscriber as one chunk, so a
//!   lone event goes out at once and a burst costs one `write` per
//!   subscriber.
//! - A [`Hub`] holds topics. Publishing encodes an event once, shares the
//!   bytes with every subscriber (an `Arc`, no copies), keeps it in the
//!   topic's history for `Last-Event-ID` replay and `try_send`s it to each
//!   subscriber's queue. A publisher never blocks on a subscriber: one whose
//!   queue is full is evicted and reconnects to catch up from history.
//!   Frames stay in that queue until the subscriber's socket has taken the
//!   previous batch, so a client that stops reading is evicted at `queue`
//!   frames, and one whose socket takes nothing for the write timeout is
//!   dropped.
//! - Custom stream routes have the shape of the classic walking skeleton: a
//!   handler gets the request and a `Sender<Event>`, produces on a thread of
//!   its own, and ends the stream by dropping the sender. A relay thread
//!   tells the pool when a producer's channel has frames; the pool takes
//!   them only as the socket drains, so a slow client blocks only its own
//!   producer's `send`.
//!
//! ## What blocks, and what never does
//!
//! | call | blocks? |
//! |---|---|
//! | [`Hub::publish`] | never on a subscriber; holds the topic's lock for a `try_send` per subscriber |
//! | [`Hub::subscribe`] | only for the topics' locks, briefly |
//! | [`ServerBuilder::start`] | until the port is bound, then returns |
//! | `Sender::send` in a stream route | while that one client's queue is full: back-pressure on its producer only |
//! | [`ServerHandle::shutdown`] | never: it signals and returns |
//! | [`ServerHandle::join`] | until the threads end, at most 2 s for open streams |
//! | [`EventStream::next_message`], [`SseReader::next_message`] | until an event or the end: bound it with [`EventStream::set_read_timeout`] |
//! | [`StreamWriter::run`] | for the life of the stream |
//!
//! ## What a stream costs
//!
//! An `/events` stream holds no thread and one file descriptor: a socket in
//! a writer thread's poll set, its subscription, and a buffer for the batch
//! being written, so an idle stream costs a few KiB; its queue of at most
//! `queue` frames shares their bytes with every other subscriber. Each
//! event costs one `write` per subscriber and one wake-up per writer
//! thread. A custom route's stream (and `/firehose`, `/async`) is served the
//! same way and costs its producer thread (256 KiB stack) on top. Open
//! streams are capped by
//! [`ServerBuilder::max_streams`] (one more gets `503`).
//!
//! ## Trade-offs against an async server
//!
//! Nothing in the library needs a runtime: every call is an ordinary blocking
//! call that can be stepped through in a debugger, a handler is a plain
//! closure on a plain thread that may block on anything, and embedding it in
//! a synchronous program is one builder call with no `async` spreading
//! through it. Hub subscribers share a few writer threads (10,000 open
//! `/events` streams were measured with heartbeats on time, see
//! `docs/benchmarks.md`); custom routes, with a producer thread each, are
//! for a few thousand. For hundreds of thousands, an event loop (tokio with axum or
//! hyper) is the right tool. HTTP/2 and TLS
//! are left to a reverse proxy in front (see `deploy/nginx.conf`), which
//! browsers need anyway past six streams per origin.
//!
//! ## More
//!
//! `examples/` in the repository: `progress` (a blocking job streaming its
//! progress to a browser), `seed` (a route that produces from its own thread
//! and ends by dropping the sender), `client` (a blocking client that
//! reconnects with `Last-Event-ID`); the binary's `src/bin/tinysse/demo.rs`
//! is the demo built the same way. `docs/embedding.md` and `docs/proxy.md`
//! cover embedding and running behind nginx and systemd; `CHANGELOG.md`
//! lists every change to this API.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod auth;
mod client;
pub mod defaults;
mod engine;
mod event;
mod files;
mod firehose;
mod hub;
mod metrics;
mod pool;
mod reader;
mod request;
mod routes;
mod server;
mod state;
mod store;
#[cfg(feature = "redis")]
mod store_redis;
mod store_sqlite;
mod stream;

pub use auth::{
    Action, AuthError, AuthRequest, Authorize, Authorizer, Claims, DEFAULT_LEEWAY, Grant,
    JwtAlgorithm, KeyError, Pattern, PatternError, TOKEN_COOKIE, TOKEN_QUERY, token_from,
};
pub use client::EventStream;
pub use event::{Event, EventError, Frame};
pub use hub::{Hub, PublishError, SubscribeError, Subscription, valid_topic};
pub use metrics::Metrics;
pub use reader::{Item, Message, SseReader};
pub use request::StreamRequest;
pub use server::{Server, ServerBuilder, ServerHandle, StartError, StoreSync};
pub use stream::{StreamEnd, StreamWriter};

/// The Redis engine (`src/store_redis.rs`), for tests/redis_store.rs, which
/// tests it on its own: not part of the API.
#[cfg(feature = "redis")]
#[doc(hidden)]
pub mod redis_engine {
    pub use crate::store_redis::{
        Followed, Follower, PUBLISH_LUA, Published, RedisError, RedisEvent, RedisOptions,
        RedisStore, Replayed,
    };
}

/// Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by
/// default): not part of the API.
#[cfg(feature = "fuzzing")]
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
