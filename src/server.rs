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
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

use crate::auth::{AuthCheck, Authorize, Authorizer};
use crate::defaults;
use crate::event::Event;
use crate::hub::{Hub, HubLimits};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::request::StreamRequest;
use crate::routes;
use crate::state::{Settings, Shared, StreamHandler};

/// Writer pool threads at most: one per core, as each is busy only while
/// it writes.
const MAX_POOL_THREADS: usize = 4;
/// After shutdown begins, streams still open this long are dropped: within
/// `ServerHandle::join`'s 2 s.
const STOP_DEADLINE: Duration = Duration::from_millis(1800);

/// How long a join waits for the Redis follower past the streams' deadline:
/// its read blocks 250 ms at a time. A hung Redis holds it longer; it is
/// then left to end on its own.
#[cfg(feature = "redis")]
const FOLLOWER_GRACE: Duration = Duration::from_millis(300);

/// Builds and starts a server.
///
/// ```
/// use tinysse::{Event, Server};
///
/// let server = Server::builder()
///     .addr("127.0.0.1:0")
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
    store: Option<PathBuf>,
    store_sync: StoreSync,
    history_age: Option<Duration>,
    redis: Option<String>,
}

/// How hard a store's commit pushes an event to the disk before the
/// publish is acknowledged (see [`ServerBuilder::store`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreSync {
    /// SQLite `synchronous=NORMAL` (WAL): an acknowledged event survives
    /// the process being killed; the last ones may be lost on power loss.
    #[default]
    Normal,
    /// SQLite `synchronous=FULL`: every commit is on the disk, so an
    /// acknowledged event survives power loss too.
    Full,
}

/// Every setting, the publish token and the JWT key left out (a `Debug`
/// line may end up in a log).
impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let mut routes: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        routes.sort_unstable();
        f.debug_struct("ServerBuilder")
            .field("addr", &self.addr)
            .field("public_dir", &s.public)
            .field("heartbeat", &s.heartbeat)
            .field("retry", &s.retry)
            .field("max_streams", &s.max_streams)
            .field("queue", &self.limits.queue)
            .field("history", &self.limits.history)
            .field("max_topics", &self.limits.max_topics)
            .field("history_bytes", &self.limits.history_bytes)
            .field("max_body", &s.max_body)
            .field("publish_token", &s.publish_token.as_ref().map(|_| "<set>"))
            .field("cors_origin", &s.cors_origin)
            .field("auth", &s.auth)
            .field("firehose", &s.firehose)
            .field("write_timeout", &self.write_timeout)
            .field("header_timeout", &self.head_timeout)
            .field("max_connections", &self.max_connections)
            .field("writer_threads", &self.writer_threads)
            .field("stream_routes", &routes)
            .field("store", &self.store)
            .field("store_sync", &self.store_sync)
            .field("history_age", &self.history_age)
            // Its URL may hold a password.
            .field("redis", &self.redis.as_ref().map(|_| "<set>"))
            .finish()
    }
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
    /// A builder for an embedding program: the settings in [`defaults`]
    /// (the binary's too), no static files and no custom routes.
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
            addr: defaults::ADDR.to_string(),
            settings: Settings {
                // An embedding program opts in to files; the binary's Config
                // turns them on.
                public: None,
                heartbeat: Some(defaults::HEARTBEAT),
                retry: Some(defaults::RETRY_MS),
                max_streams: defaults::MAX_STREAMS,
                max_body: defaults::MAX_BODY,
                publish_token: None,
                cors_origin: None,
                firehose: false,
                auth: None,
            },
            limits: HubLimits::default(),
            write_timeout: Some(defaults::WRITE_TIMEOUT),
            head_timeout: Some(defaults::HEADER_TIMEOUT),
            max_connections: None,
            writer_threads: None,
            routes: HashMap::new(),
            store: None,
            store_sync: StoreSync::Normal,
            history_age: None,
            redis: None,
        }
    }
}

/// Why the server did not start. Where an underlying error caused it,
/// [`source`](std::error::Error::source) returns it.
///
/// ```
/// use std::error::Error;
///
/// let err = tinysse::Server::builder().addr("127.0.0.1").start().unwrap_err();
/// assert!(matches!(err, tinysse::StartError::Resolve(..)));
/// println!("{err}"); // cannot resolve 127.0.0.1: invalid socket address
/// assert!(err.source().is_some()); // the io::Error
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The address did not resolve.
    Resolve(String, io::Error),
    /// Binding or configuring the listening socket failed.
    Bind(SocketAddr, io::Error),
    /// A thread of the server (a writer pool thread) could not start.
    Thread(io::Error),
    /// The HTTP layer refused the listener.
    Http(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A builder value is unusable (a route path not starting with `/`, a
    /// header value with a line break); the message names it.
    Invalid(String),
    /// The store could not be opened: a file that is not a tinysse
    /// database, a corrupt one, one that cannot be written, or one in use
    /// (the file was left untouched); or a Redis URL this build cannot use,
    /// or a server that is not a Redis it can use.
    Store(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Redis could not be reached, or did not answer in time, at start-up:
    /// nothing is wrong with the setting, try again.
    Unavailable(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Resolve(a, e) => write!(f, "cannot resolve {a}: {e}"),
            StartError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            StartError::Thread(e) => write!(f, "cannot start a server thread: {e}"),
            StartError::Http(e) => write!(f, "cannot start the HTTP server: {e}"),
            StartError::Invalid(e) => write!(f, "invalid setting: {e}"),
            StartError::Store(e) | StartError::Unavailable(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Resolve(_, e) | StartError::Bind(_, e) | StartError::Thread(e) => Some(e),
            StartError::Http(e) | StartError::Store(e) | StartError::Unavailable(e) => Some(&**e),
            StartError::Invalid(_) => None,
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
        /// Default: [`defaults::ADDR`].
        addr, impl Into<String>, |s, v| s.addr = v.into(), "addr(\"127.0.0.1:0\")"
    );
    setter!(
        /// The static files directory (`/` serves its `index.html`); `None` serves none.
        public_dir, Option<PathBuf>, |s, v| s.settings.public = v, "public_dir(Some(\"public\".into()))"
    );
    setter!(
        /// The idle time after which a stream gets `: keep-alive`; `None` turns it off.
        /// Default: [`defaults::HEARTBEAT`].
        heartbeat, Option<Duration>, |s, v| s.settings.heartbeat = v,
        "heartbeat(Some(std::time::Duration::from_secs(30)))"
    );
    setter!(
        /// The `retry:` sent at the start of each stream, in milliseconds;
        /// `None` sends none. Default: [`defaults::RETRY_MS`].
        retry, Option<u64>, |s, v| s.settings.retry = v, "retry(Some(5000))"
    );
    setter!(
        /// Open streams allowed at once; one more gets `503` with `Retry-After`.
        /// Default: [`defaults::MAX_STREAMS`].
        max_streams, u64, |s, v| s.settings.max_streams = v, "max_streams(4096)"
    );
    setter!(
        /// Frames queued per subscriber before it is evicted (at least 1).
        /// Default: [`defaults::QUEUE`].
        queue, usize, |s, v| s.limits.queue = v, "queue(1024)"
    );
    setter!(
        /// Events kept per topic for `Last-Event-ID` replay (at least 1).
        /// Default: [`defaults::HISTORY`].
        history, usize, |s, v| s.limits.history = v, "history(100)"
    );
    setter!(
        /// Topics held at once (at least 1); a publish or subscribe that would
        /// create one more gets `429`. Default: [`defaults::MAX_TOPICS`].
        max_topics, usize, |s, v| s.limits.max_topics = v, "max_topics(100)"
    );
    setter!(
        /// Bytes of retained events of all topics together, counted by encoded
        /// frame size (at least 1); over it, the oldest events across topics
        /// leave the history first. Default: [`defaults::HISTORY_BYTES`].
        history_bytes, usize, |s, v| s.limits.history_bytes = v, "history_bytes(16 << 20)"
    );
    setter!(
        /// Events older than this leave the history (in memory and in the
        /// store), and a client asking for them gets a `gap`; `None` keeps
        /// them until the other limits drop them. Default: `None`.
        history_age, Option<Duration>, |s, v| s.history_age = v,
        "history_age(Some(std::time::Duration::from_secs(3600)))"
    );
    setter!(
        /// Keeps history in a SQLite database file (created when missing),
        /// so it survives restarts and crashes: retained events are loaded
        /// at start, a publish is acknowledged only once it is committed
        /// (concurrent publishers share a commit), and ids keep growing
        /// past every stored one even when the clock went back. A file that
        /// is not a tinysse database, is corrupt or cannot be written makes
        /// [`start`](Self::start) fail with [`StartError::Store`], leaving
        /// it untouched. `None` (the default) keeps history in memory only.
        store, Option<PathBuf>, |s, v| s.store = v, "store(Some(\"/var/lib/tinysse/history.db\".into()))"
    );
    setter!(
        /// How durable a stored event is before its publish is
        /// acknowledged (with [`store`](Self::store)). Default: `Normal`.
        store_sync, StoreSync, |s, v| s.store_sync = v, "store_sync(tinysse::StoreSync::Full)"
    );
    #[cfg(feature = "redis")]
    setter!(
        /// Shares topics, ids and history with every other server pointed at
        /// the same Redis (7 or later; `redis://[user:password@]host[:port][/db]`
        /// or `unix://PATH`), so that they behave as one: an event published
        /// on any of them reaches the subscribers of all, in one order, with
        /// one id, and a client that moves between them with `Last-Event-ID`
        /// is replayed exactly what it missed. A publish is acknowledged once
        /// Redis holds it. Not with [`store`](Self::store). A URL that cannot
        /// be used makes [`start`](Self::start) fail with
        /// [`StartError::Store`]; a Redis that cannot be reached then, with
        /// [`StartError::Unavailable`]. Default: `None`. Needs the `redis`
        /// feature (on by default). docs/redis.md has the design.
        redis, Option<String>, |s, v| s.redis = v, "redis(Some(\"redis://127.0.0.1:6379/\".into()))"
    );
    setter!(
        /// The largest publish body in bytes. Default: [`defaults::MAX_BODY`].
        max_body, u64, |s, v| s.settings.max_body = v, "max_body(1 << 20)"
    );
    setter!(
        /// Requires `Authorization: Bearer <token>` to publish; without one, only
        /// loopback peers may publish. Not with an [`authorizer`](Self::authorizer)
        /// (which decides publishing by JWT).
        publish_token, Option<String>, |s, v| s.settings.publish_token = v,
        "publish_token(Some(\"secret\".into()))"
    );
    setter!(
        /// The `Access-Control-Allow-Origin` value for SSE and publish answers.
        /// With an [`authorizer`](Self::authorizer) (or a custom check), they
        /// also carry `Access-Control-Allow-Credentials: true`, so a page on
        /// that origin may send the token cookie
        /// (`new EventSource(url, {withCredentials: true})`), unless the
        /// origin is `*`, which browsers never accept with credentials.
        cors_origin, Option<String>, |s, v| s.settings.cors_origin = v,
        "cors_origin(Some(\"https://example.com\".into()))"
    );
    setter!(
        /// Serves `/firehose`, a throughput test stream.
        firehose, bool, |s, v| s.settings.firehose = v, "firehose(true)"
    );
    setter!(
        /// How long a write to a client may block before the stream is dropped
        /// (a client that stopped reading); `None` waits forever. Default:
        /// [`defaults::WRITE_TIMEOUT`].
        write_timeout, Option<Duration>, |s, v| s.write_timeout = v,
        "write_timeout(Some(std::time::Duration::from_secs(10)))"
    );
    setter!(
        /// How long a connection may take to send a request head, counted from
        /// its accept or the end of its previous response (so idle keep-alive
        /// connections are closed after it too); a request body must then
        /// arrive in full within this long of the end of its head. Never
        /// applies while a stream is open. `None` waits forever. Default: [`defaults::HEADER_TIMEOUT`].
        header_timeout, Option<Duration>, |s, v| s.head_timeout = v,
        "header_timeout(Some(std::time::Duration::from_secs(30)))"
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

    /// Authorization by JWT (see [`Authorizer`] and the contract's
    /// "Authorization"): subscribing to a topic that is not open, and every
    /// publish, need a token that allows the topic, from the
    /// `Authorization: Bearer` header, the `access_token` query parameter
    /// or the `tinysse_token` cookie. A refusal is `401` (no valid token)
    /// or `403` (not this topic), with nothing subscribed or published. A
    /// stream ends when its token expires ([`Grant::expires_at`](crate::Grant::expires_at)),
    /// so a browser reconnects with a fresh cookie. `/metrics`,
    /// `/healthz`, static files and custom stream routes stay open. Not
    /// with [`publish_token`](Self::publish_token): [`start`](Self::start)
    /// refuses both. Replaces a check set with
    /// [`authorize`](Self::authorize).
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    /// use tinysse::{Authorizer, EventStream, Pattern, Server};
    ///
    /// let key = b"a long random secret, 32 bytes or more";
    /// let auth = Authorizer::from_secret(key)?.with_open_topics(Pattern::parse_list("news")?);
    /// let server = Server::builder().addr("127.0.0.1:0").authorizer(auth).start()?;
    ///
    /// // An open topic needs no token; a private one does.
    /// assert_eq!(EventStream::connect(server.addr(), "/events?topic=news", &[])?.status(), 200);
    /// assert_eq!(EventStream::connect(server.addr(), "/events?topic=user/42/inbox", &[])?.status(), 401);
    ///
    /// let claims = serde_json::json!({
    ///     "exp": jsonwebtoken::get_current_timestamp() + 600,
    ///     "tinysse": {"subscribe": ["user/42/*"]},
    /// });
    /// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(key)?)?;
    /// let bearer = format!("Bearer {token}");
    /// let mut inbox = EventStream::connect(
    ///     server.addr(),
    ///     "/events?topic=user/42/inbox",
    ///     &[("Authorization", bearer.as_str())],
    /// )?;
    /// assert_eq!(inbox.status(), 200);
    /// server.hub().publish("user/42/inbox", &tinysse::Event::data("hello"))?;
    /// assert_eq!(inbox.next_message()?.unwrap().data, "hello");
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authorizer(mut self, authorizer: Authorizer) -> ServerBuilder {
        self.settings.auth = Some(AuthCheck::Jwt(Arc::new(authorizer)));
        self
    }

    /// An embedding program's own check instead of JWTs: anything
    /// implementing [`Authorize`], such as a closure that gets the request
    /// and the topics and answers with a [`Grant`](crate::Grant) or an
    /// [`AuthError`](crate::AuthError) (`401`/`403`, its reason sent as the
    /// body). It is asked, on the request's thread and before anything is
    /// subscribed or published:
    ///
    /// - for `GET`/`HEAD /events`, with the subscribed topics;
    /// - for `POST /publish`, twice: with no topic before the body is read,
    ///   then with the topic once it is parsed;
    /// - for a custom stream route and `/firehose`, with no topics
    ///   ([`Action::Stream`](crate::Action::Stream)).
    ///
    /// A stream ends at the grant's [`expires_at`](crate::Grant::expires_at).
    /// Replaces an [`authorizer`](Self::authorizer); not with
    /// [`publish_token`](Self::publish_token).
    ///
    /// ```
    /// use tinysse::{Action, AuthError, AuthRequest, EventStream, Grant, Server};
    ///
    /// // A session cookie the program checks itself; only loopback publishes.
    /// let server = Server::builder()
    ///     .addr("127.0.0.1:0")
    ///     .authorize(|rq: &AuthRequest<'_>, _topics: &[&str]| -> Result<Grant, AuthError> {
    ///         let req = rq.request();
    ///         match rq.action() {
    ///             Action::Subscribe if req.header("Cookie") == Some("session=valid") => Ok(Grant::unlimited()),
    ///             Action::Subscribe => Err(AuthError::Unauthorized("log in first".into())),
    ///             Action::Publish if req.remote_addr().is_some_and(|a| a.ip().is_loopback()) => {
    ///                 Ok(Grant::unlimited())
    ///             }
    ///             Action::Publish => Err(AuthError::Forbidden("publishing is local".into())),
    ///             _ => Ok(Grant::unlimited()),
    ///         }
    ///     })
    ///     .start()?;
    /// let refused = EventStream::connect(server.addr(), "/events?topic=a", &[])?;
    /// assert_eq!(refused.status(), 401);
    /// let ok = EventStream::connect(server.addr(), "/events?topic=a", &[("Cookie", "session=valid")])?;
    /// assert_eq!(ok.status(), 200);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authorize(mut self, check: impl Authorize + 'static) -> ServerBuilder {
        self.settings.auth = Some(AuthCheck::Custom(Arc::new(check)));
        self
    }

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
    ///   refuses them.
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
    ///
    /// ```
    /// use tinysse::{Server, StartError};
    ///
    /// let server = Server::builder().addr("127.0.0.1:0").start()?;
    /// // The port is taken now: a second server on it is refused.
    /// let err = Server::builder().addr(server.addr().to_string()).start().unwrap_err();
    /// assert!(matches!(err, StartError::Bind(..)));
    /// server.join();
    /// # Ok::<(), StartError>(())
    /// ```
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
        if self.settings.publish_token.is_none()
            && self.settings.auth.is_none()
            && !local.ip().to_canonical().is_loopback()
        {
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
        let metrics = Arc::new(Metrics::new());
        let store = match &self.store {
            Some(path) => {
                let opts = crate::store_sqlite::StoreOptions {
                    sync: match self.store_sync {
                        StoreSync::Normal => crate::store_sqlite::SyncMode::Normal,
                        StoreSync::Full => crate::store_sqlite::SyncMode::Full,
                    },
                    history: self.limits.history.max(1),
                    history_age: self.history_age,
                };
                let opened = crate::store_sqlite::SqliteStore::open(path, opts)
                    .map_err(|e| StartError::Store(Box::new(e)))?;
                Some(Arc::new(opened) as Arc<dyn crate::store::Store>)
            }
            None => None,
        };
        #[cfg(feature = "redis")]
        let (hub, follower) = match &self.redis {
            Some(url) => {
                let (hub, follower) =
                    start_redis(url, self.limits, metrics.clone(), self.history_age)?;
                (hub, Some(follower))
            }
            None => (
                Hub::start(
                    self.limits,
                    metrics.clone(),
                    self.history_age,
                    store,
                    Arc::new(crate::hub::system_clock_us),
                )
                .map_err(|e| StartError::Store(e.into()))?,
                None,
            ),
        };
        #[cfg(not(feature = "redis"))]
        let hub = Hub::start(
            self.limits,
            metrics.clone(),
            self.history_age,
            store,
            Arc::new(crate::hub::system_clock_us),
        )
        .map_err(|e| StartError::Store(e.into()))?;
        let housekeeping = match self.history_age {
            Some(age) => Some(Housekeeping::start(hub.clone(), age).map_err(StartError::Thread)?),
            None => None,
        };
        let (alive_tx, alive_rx) = bounded::<()>(0);
        let pool_threads = self.writer_threads.unwrap_or_else(|| {
            thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_POOL_THREADS)
        });
        let pool = Pool::start(pool_threads).map_err(StartError::Thread)?;
        let shared = Arc::new(Shared {
            config: self.settings,
            hub: hub.clone(),
            metrics: metrics.clone(),
            routes: self.routes,
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
        let handler: tiny_http::Handler = Arc::new(move |rq| routes::handle(&sh, rq));
        let http =
            match tiny_http::Server::from_listener_with_handler(listener, None, limits, handler) {
                Ok(h) => h,
                Err(e) => {
                    shared.pool.stop(Instant::now());
                    shared.pool.join();
                    return Err(StartError::Http(e));
                }
            };
        let http = Arc::new(http);
        log::info!("listening on http://{local}");
        Ok(ServerHandle {
            addr: local,
            hub,
            metrics,
            shared,
            http: Mutex::new(Some(http)),
            streams_done: alive_rx,
            housekeeping: Mutex::new(housekeeping),
            #[cfg(feature = "redis")]
            follower: Mutex::new(follower),
        })
    }
}

/// Connects to Redis and starts a hub that shares its ids and history
/// there, fed by a follower from the highest id issued now.
#[cfg(feature = "redis")]
fn start_redis(
    url: &str,
    limits: HubLimits,
    metrics: Arc<Metrics>,
    history_age: Option<Duration>,
) -> Result<(Hub, crate::store_redis::Follower), StartError> {
    use crate::event::ID_ROOM;
    use crate::store_redis::{Followed, RedisCluster, RedisError, RedisOptions, RedisStore};

    let refused = |e: RedisError| {
        if e.is_config() {
            StartError::Store(Box::new(e))
        } else {
            StartError::Unavailable(Box::new(e))
        }
    };
    let mut opts = RedisOptions::new(url);
    opts.history = limits.history.max(1);
    opts.history_age = history_age;
    let store = RedisStore::connect(opts).map_err(refused)?;
    let from = store.highest_id().map_err(refused)?;
    let (cluster, health) = RedisCluster::new(store.clone());
    let hub = Hub::start_cluster(limits, metrics, history_age, Arc::new(cluster), from);
    let fed = hub.clone();
    let deliver = Box::new(move |f: Followed| match f {
        Followed::Event(e) => {
            let mut bytes = Vec::with_capacity(ID_ROOM + e.payload.len());
            bytes.resize(ID_ROOM, 0);
            bytes.extend_from_slice(&e.payload);
            let at_ms = crate::hub::system_clock_us() / 1000;
            if let Err(err) = fed.ingest(&e.topic, e.id, at_ms, bytes.into()) {
                log::warn!(
                    "redis: event {} of topic {} not held here: {err}",
                    e.id,
                    e.topic
                );
            }
        }
        Followed::Gap { after } => {
            log::warn!(
                "redis: events after {after} may have been missed here; ending open streams \
                 so that their clients catch up"
            );
            fed.lost_track();
        }
    });
    let on_health = Box::new(move |h: Result<(), String>| {
        match &h {
            Ok(()) => log::info!("redis: usable"),
            Err(e) => log::warn!("redis: {e}"),
        }
        *health.lock().unwrap_or_else(|p| p.into_inner()) = h;
    });
    let follower = store
        .follow(Some(from), deliver, on_health)
        .map_err(refused)?;
    Ok((hub, follower))
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

/// A running server. Dropping it does not stop it: call
/// [`shutdown`](Self::shutdown), then [`join`](Self::join).
pub struct ServerHandle {
    addr: SocketAddr,
    hub: Hub,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    http: Mutex<Option<Arc<tiny_http::Server>>>,
    streams_done: Receiver<()>,
    housekeeping: Mutex<Option<Housekeeping>>,
    #[cfg(feature = "redis")]
    follower: Mutex<Option<crate::store_redis::Follower>>,
}

/// The thread that drops what `history_age` no longer allows, in memory and
/// in the store, once a second (or more often for a shorter age), so a
/// topic nobody touches is pruned and forgotten too.
struct Housekeeping {
    stop: Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Housekeeping {
    fn start(hub: Hub, age: Duration) -> io::Result<Housekeeping> {
        let every = (age / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let (stop, stopped) = bounded::<()>(0);
        let thread = thread::Builder::new()
            .name("tinysse-housekeeping".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    hub.prune_aged();
                }
            })?;
        Ok(Housekeeping { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address actually bound (with the port chosen, for port 0).
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// assert!(server.addr().ip().is_loopback());
    /// assert_ne!(server.addr().port(), 0);
    /// server.join();
    /// # Ok::<(), tinysse::StartError>(())
    /// ```
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

    /// The server's counters (what `/metrics` serves).
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// server.hub().publish("t", &tinysse::Event::data("x"))?;
    /// assert_eq!(server.metrics().events_published(), 1);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Starts a graceful shutdown and returns at once: new requests are
    /// refused, and every open stream ends with a complete response. Call it
    /// from any thread that holds a reference, then [`join`](Self::join).
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let mut stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// server.shutdown();
    /// assert_eq!(stream.next_message()?, None); // the response ended
    /// assert!(server.join());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Stopping takes the follower up to its read's 250 ms: under way
        // while the streams end, joined in `join`.
        #[cfg(feature = "redis")]
        if let Some(f) = &*self.follower.lock().unwrap_or_else(|p| p.into_inner()) {
            f.stop();
        }
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
    /// from the shutdown); returns whether every stream ended in time, and
    /// every thread of the server (connections, writer pool, housekeeping)
    /// has been joined when it returns.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let hub = server.hub().clone();
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert!(server.join()); // the open stream ended in time
    /// assert_eq!(hub.metrics().streams_active(), 0);
    /// # drop(stream);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(self) -> bool {
        self.join_timeout(Duration::from_secs(2))
    }

    /// Like [`join`](Self::join) with a chosen deadline for open streams
    /// (never later than 1.8 s after the shutdown): streams still open then
    /// are dropped.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// assert!(server.join_timeout(std::time::Duration::from_millis(500)));
    /// # Ok::<(), tinysse::StartError>(())
    /// ```
    pub fn join_timeout(self, streams: Duration) -> bool {
        self.shutdown();
        let deadline = Instant::now() + streams;
        self.shared.pool.stop(deadline);
        // The listener closes, connections waiting for a request end, and
        // every connection thread is joined (answers being written get
        // until the deadline).
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner()).take();
        let connections_done = http.is_none_or(|h| h.join(Some(deadline)));
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
        if let Some(h) = self
            .housekeeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.stop();
        }
        #[cfg(feature = "redis")]
        let follower_ended = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_none_or(|f| f.join_until(deadline.max(Instant::now() + FOLLOWER_GRACE)));
        #[cfg(not(feature = "redis"))]
        let follower_ended = true;
        // No stream can come any more: the pool threads end now, dropping
        // any stream still open.
        self.shared.pool.stop(Instant::now());
        let pool_ended = self.shared.pool.join();
        connections_done && ended && pool_ended && follower_ended
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
    if b.redis.is_some() && b.store.is_some() {
        return invalid(
            "redis and store do not go together: with redis, Redis keeps the history".into(),
        );
    }
    if b.settings.publish_token.is_some() && b.settings.auth.is_some() {
        return invalid(
            "publish_token and an authorizer do not go together: with an authorizer, a \
             publisher needs a token that allows the topic"
                .into(),
        );
    }
    Ok(())
}
