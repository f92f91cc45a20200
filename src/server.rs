//! The server: a builder, the listener (socket2, handed to tiny_http, which
//! runs each request on its connection's own thread), the writer pool that
//! serves every stream, and graceful shutdown.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

use crate::event::Event;
use crate::hub::{Hub, HubLimits};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::request::StreamRequest;
use crate::routes;

/// A custom stream route's handler: it gets the request and a `Sender`, runs
/// on a producer thread of its own, and ends the stream by dropping the sender
/// (see [`ServerBuilder::stream_route`]).
pub type StreamHandler = dyn Fn(&StreamRequest, Sender<Event>) + Send + Sync + 'static;

/// Writer pool threads at most: one per core, as each is busy only while
/// it writes.
const MAX_POOL_THREADS: usize = 4;
/// Stack for a custom route's producer thread: user code, so more room.
const PRODUCER_STACK: usize = 256 * 1024;
/// After shutdown begins, streams still open this long are dropped: within
/// `ServerHandle::join`'s 2 s.
const STOP_DEADLINE: Duration = Duration::from_millis(1800);

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub(crate) config: Settings,
    pub(crate) hub: Hub,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) routes: HashMap<String, Arc<StreamHandler>>,
    /// Disconnects when shutdown begins.
    pub(crate) shutdown: Receiver<()>,
    pub(crate) stopping: AtomicBool,
    /// Cloned into every stream slot, so that all of them dropped means
    /// every stream has ended; `None` once shutdown has begun.
    pub(crate) streams: Mutex<Option<Sender<()>>>,
    /// The threads that write every stream.
    pub(crate) pool: Pool,
    /// How long a stream's socket may take nothing before it is dropped.
    pub(crate) write_timeout: Option<Duration>,
}

/// The settings a server runs with (the builder's values).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) public: Option<PathBuf>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) retry: Option<u64>,
    pub(crate) max_streams: u64,
    pub(crate) max_body: u64,
    pub(crate) publish_token: Option<String>,
    pub(crate) cors_origin: Option<String>,
    pub(crate) demo: bool,
    pub(crate) firehose: bool,
}

/// Builds and starts a server.
///
/// ```
/// use tinysse::{Event, Server};
///
/// let server = Server::builder()
///     .addr("127.0.0.1:0")
///     .demo(false)
///     .stream_route("/ticks", |_req, tx| {
///         for i in 0..3 {
///             if tx.send(Event::data(i.to_string())).is_err() {
///                 return; // the client went away
///             }
///         }
///     })
///     .start()?;
/// println!("listening on http://{}", server.addr());
/// server.shutdown();
/// server.join();
/// # Ok::<(), tinysse::StartError>(())
/// ```
pub struct ServerBuilder {
    addr: String,
    settings: Settings,
    limits: HubLimits,
    write_timeout: Option<Duration>,
    head_timeout: Option<Duration>,
    max_connections: Option<usize>,
    writer_threads: Option<usize>,
    routes: HashMap<String, Arc<StreamHandler>>,
}

/// Connections held at once beyond `max_streams`: room for short requests and
/// for connections still sending their request head.
pub(crate) const EXTRA_CONNECTIONS: usize = 512;
/// The largest request head (request line and headers) read.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder for an embedding program: `127.0.0.1:8080`, no demo, no
    /// static files, and otherwise the binary's defaults (heartbeat 15 s,
    /// `retry: 2000`, 1024 streams, queue 256, history 1024).
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// assert_ne!(server.addr().port(), 0);
    /// server.join();
    /// # Ok::<(), tinysse::StartError>(())
    /// ```
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            addr: "127.0.0.1:8080".to_string(),
            settings: Settings {
                // An embedding program opts in to files and the demo; the
                // binary's Config turns both on.
                public: None,
                heartbeat: Some(Duration::from_secs(15)),
                retry: Some(2000),
                max_streams: 1024,
                max_body: 65536,
                publish_token: None,
                cors_origin: None,
                demo: false,
                firehose: false,
            },
            limits: HubLimits::default(),
            write_timeout: Some(Duration::from_secs(5)),
            head_timeout: Some(Duration::from_secs(10)),
            max_connections: None,
            writer_threads: None,
            routes: HashMap::new(),
        }
    }
}

/// Why the server did not start.
///
/// ```
/// let err = tinysse::Server::builder().addr("127.0.0.1").start().unwrap_err();
/// assert!(matches!(err, tinysse::StartError::Resolve(..)));
/// println!("{err}"); // cannot resolve 127.0.0.1: invalid socket address
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The address did not resolve.
    Resolve(String, io::Error),
    /// Binding or configuring the listening socket failed.
    Bind(SocketAddr, io::Error),
    /// The HTTP layer refused the listener, or a thread could not start.
    Http(String),
    /// A builder value is unusable (a route path not starting with `/`, a
    /// header value with a line break); the message names it.
    Invalid(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Resolve(a, e) => write!(f, "cannot resolve {a}: {e}"),
            StartError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            StartError::Http(e) => write!(f, "cannot start the HTTP server: {e}"),
            StartError::Invalid(e) => write!(f, "invalid setting: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Resolve(_, e) | StartError::Bind(_, e) => Some(e),
            StartError::Http(_) | StartError::Invalid(_) => None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $ty:ty, |$s:ident, $v:ident| $body:expr, $example:literal) => {
        $(#[$doc])*
        ///
        /// ```
        #[doc = concat!("let b = tinysse::Server::builder().", $example, ";")]
        /// # let _ = b;
        /// ```
        pub fn $name(mut self, $v: $ty) -> ServerBuilder {
            let $s = &mut self;
            $body;
            self
        }
    };
}

impl ServerBuilder {
    setter!(
        /// The listen address; port 0 picks a free port (see [`ServerHandle::addr`]).
        addr, impl Into<String>, |s, v| s.addr = v.into(), "addr(\"127.0.0.1:0\")"
    );
    setter!(
        /// The static files directory (`/` serves its `index.html`); `None` serves none.
        public_dir, Option<PathBuf>, |s, v| s.settings.public = v, "public_dir(Some(\"public\".into()))"
    );
    setter!(
        /// The idle time after which a stream gets `: keep-alive`; `None` turns it off.
        heartbeat, Option<Duration>, |s, v| s.settings.heartbeat = v,
        "heartbeat(Some(std::time::Duration::from_secs(15)))"
    );
    setter!(
        /// The `retry:` sent at the start of each stream; `None` sends none.
        retry, Option<u64>, |s, v| s.settings.retry = v, "retry(Some(2000))"
    );
    setter!(
        /// Open streams allowed at once; one more gets `503` with `Retry-After`.
        max_streams, u64, |s, v| s.settings.max_streams = v, "max_streams(1024)"
    );
    setter!(
        /// Frames queued per subscriber before it is evicted.
        queue, usize, |s, v| s.limits.queue = v, "queue(256)"
    );
    setter!(
        /// Events kept per topic for `Last-Event-ID` replay.
        history, usize, |s, v| s.limits.history = v, "history(1024)"
    );
    setter!(
        /// Topics held at once; a publish or subscribe that would create one more gets `429`.
        max_topics, usize, |s, v| s.limits.max_topics = v, "max_topics(10_000)"
    );
    setter!(
        /// Bytes of retained events of all topics together, counted by encoded
        /// frame size (64 MiB by default); over it, the oldest events across
        /// topics leave the history first.
        history_bytes, usize, |s, v| s.limits.history_bytes = v, "history_bytes(64 << 20)"
    );
    setter!(
        /// The largest publish body in bytes.
        max_body, u64, |s, v| s.settings.max_body = v, "max_body(65536)"
    );
    setter!(
        /// Requires `Authorization: Bearer <token>` to publish; without one, only
        /// loopback peers may publish.
        publish_token, Option<String>, |s, v| s.settings.publish_token = v,
        "publish_token(Some(\"secret\".into()))"
    );
    setter!(
        /// The `Access-Control-Allow-Origin` value for SSE and publish answers.
        cors_origin, Option<String>, |s, v| s.settings.cors_origin = v,
        "cors_origin(Some(\"https://example.com\".into()))"
    );
    setter!(
        /// Serves the seed's `/async` demo and publishes host metrics on topic `demo`.
        demo, bool, |s, v| s.settings.demo = v, "demo(false)"
    );
    setter!(
        /// Serves `/firehose`, a throughput test stream.
        firehose, bool, |s, v| s.settings.firehose = v, "firehose(true)"
    );
    setter!(
        /// How long a write to a client may block before the stream is dropped
        /// (a client that stopped reading); `None` waits forever.
        write_timeout, Option<Duration>, |s, v| s.write_timeout = v,
        "write_timeout(Some(std::time::Duration::from_secs(5)))"
    );
    setter!(
        /// How long a connection may take to send a request head, counted from
        /// its accept or the end of its previous response (so idle keep-alive
        /// connections are closed after it too); each read of a request body
        /// waits at most this long as well. Never applies while a stream is
        /// open. `None` waits forever.
        header_timeout, Option<Duration>, |s, v| s.head_timeout = v,
        "header_timeout(Some(std::time::Duration::from_secs(10)))"
    );
    setter!(
        /// Threads that write every stream (`/events`, custom routes, `/async`,
        /// `/firehose`), each serving many of them over non-blocking sockets;
        /// at least 1. By default one per core, at most 4.
        writer_threads, usize, |s, v| s.writer_threads = Some(v.max(1)), "writer_threads(2)"
    );
    setter!(
        /// Connections held by tiny_http at once (short requests, connections
        /// still sending a request head, and streams it could not hand over);
        /// at the cap, new ones wait in the listen backlog. A stream holds no
        /// connection slot once its socket is handed over (plain TCP): those
        /// are capped by [`max_streams`](Self::max_streams). `None` means
        /// `max_streams + 512`.
        max_connections, Option<usize>, |s, v| s.max_connections = v,
        "max_connections(Some(2048))"
    );

    /// Adds a stream route: each `GET path` (matched exactly, any query
    /// string allowed) runs `handler` on a producer thread of its own with
    /// the request and a `Sender`. Every event sent is written and flushed at
    /// once; the response ends when the last clone of the sender is dropped.
    ///
    /// - `tx.send` blocks while the client's queue (see
    ///   [`queue`](Self::queue)) is full: a slow client slows its producer,
    ///   never the server.
    /// - `tx.send` fails once the client has gone or the server is shutting
    ///   down: return then. A handler that never sends is never told, so
    ///   long waits belong in `recv_timeout`-style loops that send or check.
    /// - The handler may move `tx` into another thread and return; the
    ///   stream stays open until that thread drops it.
    /// - The producer thread has a 256 KiB stack; a panic in the handler ends
    ///   the stream like a drop of the sender.
    /// - Each stream counts towards [`max_streams`](Self::max_streams).
    ///   `/events` (and `/firehose` when on) are taken: [`start`](Self::start)
    ///   refuses them. A route at `/async` replaces the demo's.
    ///
    /// ```
    /// use tinysse::{Event, EventStream, Server};
    ///
    /// let server = Server::builder()
    ///     .addr("127.0.0.1:0")
    ///     .retry(None)
    ///     .stream_route("/countdown", |req, tx| {
    ///         let from: u32 = req.query("from").and_then(|v| v.parse().ok()).unwrap_or(3);
    ///         for n in (1..=from).rev() {
    ///             if tx.send(Event::data(n.to_string())).is_err() {
    ///                 return; // the client went away
    ///             }
    ///         }
    ///         // Returning drops `tx`: the response ends here.
    ///     })
    ///     .start()?;
    /// let stream = EventStream::connect(server.addr(), "/countdown?from=2", &[])?;
    /// let got: Vec<String> = stream.map(|m| m.map(|m| m.data)).collect::<Result<_, _>>()?;
    /// assert_eq!(got, ["2", "1"]);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_route<F>(mut self, path: &str, handler: F) -> ServerBuilder
    where
        F: Fn(&StreamRequest, Sender<Event>) + Send + Sync + 'static,
    {
        self.routes.insert(path.to_string(), Arc::new(handler));
        self
    }

    /// Binds the listener and starts serving on background threads; returns
    /// once the port is bound, so clients may connect at once.
    pub fn start(self) -> Result<ServerHandle, StartError> {
        check_settings(&self)?;
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| StartError::Resolve(self.addr.clone(), e))?
            .next()
            .ok_or_else(|| {
                StartError::Resolve(
                    self.addr.clone(),
                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                )
            })?;
        let listener = listen(addr, self.write_timeout).map_err(|e| StartError::Bind(addr, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| StartError::Bind(addr, e))?;
        if self.settings.publish_token.is_none() && !local.ip().to_canonical().is_loopback() {
            log::warn!(
                "listening on {local} (not only loopback) with no publish token: only local \
                 clients may publish, but a forwarder on this host makes anyone look local; \
                 set --publish-token"
            );
        }
        let max_connections = self.max_connections.unwrap_or_else(|| {
            usize::try_from(self.settings.max_streams)
                .unwrap_or(usize::MAX)
                .saturating_add(EXTRA_CONNECTIONS)
        });
        let limits = tiny_http::ConnectionLimits {
            max_connections: Some(max_connections.max(1)),
            head_timeout: self.head_timeout,
            body_timeout: self.head_timeout,
            max_head_bytes: Some(MAX_HEAD_BYTES),
        };
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::with_metrics(self.limits, metrics.clone());
        let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
        let (alive_tx, alive_rx) = bounded::<()>(0);
        let mut routes = self.routes;
        if self.settings.demo {
            routes
                .entry("/async".to_string())
                .or_insert_with(|| Arc::new(crate::demo::async_route));
        }
        let pool_threads = self.writer_threads.unwrap_or_else(|| {
            thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_POOL_THREADS)
        });
        let pool = Pool::start(pool_threads)
            .map_err(|e| StartError::Http(format!("cannot start the writer pool: {e}")))?;
        let shared = Arc::new(Shared {
            config: self.settings,
            hub: hub.clone(),
            metrics: metrics.clone(),
            routes,
            shutdown: shutdown_rx,
            stopping: AtomicBool::new(false),
            streams: Mutex::new(Some(alive_tx)),
            pool,
            write_timeout: self.write_timeout,
        });

        // Every request runs on its connection's own thread (tiny_http's,
        // bounded by `max_connections`): reading a body and writing an
        // answer wait on that one client, never on a thread that others
        // need.
        let sh = shared.clone();
        let handler: tiny_http::Handler = Arc::new(move |rq| handle(&sh, rq));
        let http =
            match tiny_http::Server::from_listener_with_handler(listener, None, limits, handler) {
                Ok(h) => h,
                Err(e) => {
                    shared.pool.stop(Instant::now());
                    shared.pool.join();
                    return Err(StartError::Http(e.to_string()));
                }
            };
        let http = Arc::new(http);
        let mut threads = Vec::new();
        if shared.config.demo {
            let sh = shared.clone();
            let demo = spawn_named("tinysse-demo".into(), 256 * 1024, move || {
                crate::demo::producer(&sh)
            });
            match demo {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.pool.stop(Instant::now());
                    shared.pool.join();
                    return Err(e);
                }
            }
        }
        log::info!("listening on http://{local}");
        Ok(ServerHandle {
            addr: local,
            hub,
            metrics,
            shared,
            http: Mutex::new(Some(http)),
            shutdown: Mutex::new(Some(shutdown_tx)),
            threads: Mutex::new(threads),
            streams_done: alive_rx,
        })
    }
}

fn spawn_named<F>(name: String, stack: usize, f: F) -> Result<JoinHandle<()>, StartError>
where
    F: FnOnce() + Send + 'static,
{
    thread::Builder::new()
        .name(name)
        .stack_size(stack)
        .spawn(f)
        .map_err(|e| StartError::Http(format!("cannot start a thread: {e}")))
}

/// The listening socket, with options Linux copies to every accepted socket:
/// no Nagle delay on frames, a send timeout that drops clients who stop
/// reading, and keepalive plus a user timeout that find peers who vanished.
fn listen(addr: SocketAddr, write_timeout: Option<Duration>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_write_timeout(write_timeout)?;
    socket.set_keepalive(true)?;
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ka = ka.with_retries(3);
    socket.set_tcp_keepalive(&ka)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(write_timeout.map(|t| t.max(Duration::from_secs(1))))?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Answers one request, on its connection's thread. A panic here (a bug)
/// ends this connection only: the client gets a `500` from the request's
/// drop, and everyone else is served on.
fn handle(sh: &Arc<Shared>, rq: tiny_http::Request) {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if sh.stopping.load(Ordering::Acquire) {
            let _ = rq.respond(routes::text(503, "shutting down"));
            return;
        }
        if let Some(rq) = routes::try_stream(sh, rq) {
            routes::handle_short(sh, rq);
        }
    }));
    if served.is_err() {
        log::error!("a request handler panicked; its connection was closed");
    }
}

/// Holds one slot of `--max-streams` and keeps the server's shutdown waiting
/// until the stream that owns it ends.
pub(crate) struct StreamSlot {
    shared: Arc<Shared>,
    _alive: Sender<()>,
}

impl StreamSlot {
    /// Takes a slot, or `None` when `max_streams` are open (counted as
    /// rejected) or shutdown has begun.
    pub(crate) fn take(sh: &Arc<Shared>) -> Option<StreamSlot> {
        let m = &sh.metrics;
        let max = sh.config.max_streams;
        // Under the registry's lock, so a slot is either taken before
        // shutdown takes the registry, or not given at all.
        let streams = sh.streams.lock().unwrap_or_else(|p| p.into_inner());
        let alive = streams.as_ref()?;
        let ok = m
            .streams_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !ok {
            m.streams_rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        m.streams_total.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot {
            shared: sh.clone(),
            _alive: alive.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.shared
            .metrics
            .streams_active
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a custom route's handler on a producer thread of its own.
pub(crate) fn spawn_producer(
    handler: Arc<StreamHandler>,
    rq: StreamRequest,
    tx: Sender<Event>,
) -> io::Result<()> {
    thread::Builder::new()
        .name("tinysse-producer".into())
        .stack_size(PRODUCER_STACK)
        .spawn(move || handler(&rq, tx))
        .map(drop)
}

/// A running server. Dropping it does not stop it: call
/// [`shutdown`](Self::shutdown), then [`join`](Self::join).
pub struct ServerHandle {
    addr: SocketAddr,
    hub: Hub,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    http: Mutex<Option<Arc<tiny_http::Server>>>,
    shutdown: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    streams_done: Receiver<()>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub: publish to the server's topics from any thread. A `Hub` is a
    /// cheap clone, so move one into each thread that publishes.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let hub = server.hub().clone();
    /// let worker = std::thread::spawn(move || hub.publish("jobs", &tinysse::Event::data("done")));
    /// assert!(worker.join().unwrap().is_ok());
    /// server.join();
    /// # Ok::<(), tinysse::StartError>(())
    /// ```
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Starts a graceful shutdown and returns at once: new requests are
    /// refused, and every open stream ends with a complete response.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        drop(
            self.shutdown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        self.shared.pool.stop(Instant::now() + STOP_DEADLINE);
        // No slot is given from now on; each one taken keeps `streams_done`
        // connected until its stream ends.
        drop(
            self.shared
                .streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }

    /// Waits (after [`shutdown`](Self::shutdown), which it calls if needed)
    /// until the server's threads end, giving open streams up to 2 s (1.8 s
    /// from the shutdown); returns whether every stream ended in time.
    pub fn join(self) -> bool {
        self.join_timeout(Duration::from_secs(2))
    }

    /// Like [`join`](Self::join) with a chosen deadline for open streams
    /// (never later than 1.8 s after the shutdown): streams still open then
    /// are dropped.
    pub fn join_timeout(self, streams: Duration) -> bool {
        self.shutdown();
        let deadline = Instant::now() + streams;
        self.shared.pool.stop(deadline);
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
        // Dropping the last handle on tiny_http's server closes the listener.
        drop(self.http.lock().unwrap_or_else(|p| p.into_inner()).take());
        // Every slot dropped: every stream ended, those still being handed
        // over to the pool included.
        let ended = loop {
            match self
                .streams_done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        // No stream can come any more: the pool threads end now, dropping
        // any stream still open.
        self.shared.pool.stop(Instant::now());
        let pool_ended = self.shared.pool.join();
        ended && pool_ended
    }
}

/// Refuses values that would be ignored or corrupt a response head, so an
/// embedding program learns at start-up, not from a puzzled browser.
fn check_settings(b: &ServerBuilder) -> Result<(), StartError> {
    let invalid = |m: String| Err(StartError::Invalid(m));
    for path in b.routes.keys() {
        if !path.starts_with('/') || path.contains(['?', '#', ' ', '\r', '\n']) {
            return invalid(format!(
                "stream route {path:?}: a path starts with '/' and has no query"
            ));
        }
        if path == "/events" || (path == "/firehose" && b.settings.firehose) {
            return invalid(format!(
                "stream route {path:?} is taken by the built-in route"
            ));
        }
    }
    let header_safe = |v: &str| !v.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0);
    if let Some(o) = &b.settings.cors_origin
        && !header_safe(o)
    {
        return invalid("cors_origin holds a line break".into());
    }
    if let Some(t) = &b.settings.publish_token
        && (t.is_empty() || !header_safe(t))
    {
        return invalid("publish_token is empty or holds a line break".into());
    }
    Ok(())
}
