//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{RawStreamError, ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

// For the fuzz target (PATCHES.md, 18): not part of the API.
#[doc(hidden)]
pub use head::{head_end, parse_head, Framing, HeadError, ParsedHead};
#[doc(hidden)]
pub use util::chunked::decode_chunked;

mod client;
mod common;
mod connection;
mod head;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // the accept thread, which ends (after every connection thread) once
    // `close` is set: see `stop` and `join`
    accept: std::sync::Mutex<Option<thread::JoinHandle<()>>>,

    // when `join` gives up on connection threads still busy
    join_deadline: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

/// Limits that keep a server standing whatever its clients do
/// (patched in for tinysse: see PATCHES.md). The default is unlimited, as
/// upstream behaves.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLimits {
    /// Connections held at once. At the cap, new connections wait in the
    /// listen backlog until one ends. `None`: no cap.
    pub max_connections: Option<usize>,
    /// Time a connection gets to send a complete request head, counted from
    /// when it is accepted or its previous response ended (so it also bounds
    /// idle keep-alive). It never applies while a response is being written.
    /// `None`: no limit.
    pub head_timeout: Option<Duration>,
    /// Time a request body gets to arrive in full, counted from the end of
    /// its head; past it, reads of the body fail with `TimedOut`. `None`: no
    /// limit.
    pub body_timeout: Option<Duration>,
    /// Largest request head (request line and headers) in bytes; a longer
    /// request line gets `414`, longer headers `431`. `None`: no limit.
    pub max_head_bytes: Option<usize>,
}

/// A request handler run on each connection's own thread (patched in for
/// tinysse, see PATCHES.md): whatever it does waits on that one client only.
pub type Handler = Arc<dyn Fn(Request) + Send + Sync + 'static>;

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, ConnectionLimits::default())
    }

    /// Like [`from_listener`](Self::from_listener), with limits on connections
    /// (patched in for tinysse: see PATCHES.md).
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(listener.into(), ssl_config, limits, None)
    }

    /// Like [`from_listener_with_limits`](Self::from_listener_with_limits),
    /// but each request is handed to `handler` on its connection's own
    /// thread instead of being queued for [`recv`](Self::recv) (which then
    /// never returns a request). Reading the body and writing the answer
    /// then wait on that client only, never on a thread other clients
    /// need (patched in for tinysse: see PATCHES.md).
    pub fn from_listener_with_handler<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: ConnectionLimits,
        handler: Handler,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(listener.into(), ssl_config, limits, Some(handler))
    }

    fn start(
        listener: Listener,
        ssl_config: Option<SslConfig>,
        limits: ConnectionLimits,
        handler: Option<Handler>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let slots = util::ConnectionSlots::new(limits.max_connections);
        let head = client::HeadLimits {
            timeout: limits.head_timeout,
            max_bytes: limits.max_head_bytes,
            body_timeout: limits.body_timeout,
        };
        let join_deadline = Arc::new(std::sync::Mutex::new(None));
        let deadline = join_deadline.clone();
        let accept = thread::spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();
            // Grows while accept keeps failing (EMFILE leaves the connection
            // queued, so retrying at once would spin), reset by a success.
            let mut backoff = Duration::from_millis(5);

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                // At the cap, leave new connections in the kernel's backlog
                // until one of ours ends.
                let slot = match slots.acquire(&inside_close_trigger) {
                    Some(slot) => slot,
                    None => break,
                };
                let new_client = match server.accept() {
                    Ok((sock, _)) => {
                        use util::RefinedTcpStream;
                        let (read_closable, write_closable) = match ssl {
                            None => {
                                // The socket is duplicated for its read and
                                // write halves; out of descriptors (EMFILE),
                                // hold on to the client and retry, as accept
                                // does, rather than drop it.
                                let mut sock: util::refined_tcp_stream::Stream = sock.into();
                                let pair = loop {
                                    match RefinedTcpStream::new(sock) {
                                        Ok(pair) => break Some(pair),
                                        Err((e, back)) => {
                                            if inside_close_trigger.load(Relaxed) {
                                                break None;
                                            }
                                            log::error!("Error setting up a new client: {}", e);
                                            thread::sleep(backoff);
                                            backoff = (backoff * 2).min(Duration::from_secs(1));
                                            sock = back;
                                        }
                                    }
                                };
                                match pair {
                                    Some(pair) => pair,
                                    None => break,
                                }
                            }
                            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                            Some(ref ssl) => {
                                // trying to apply SSL over the connection
                                // if an error occurs, we just close the socket and resume listening
                                let sock = match ssl.accept(sock) {
                                    Ok(s) => s,
                                    Err(_) => continue,
                                };

                                match RefinedTcpStream::new(sock) {
                                    Ok(pair) => pair,
                                    Err(_) => continue,
                                }
                            }
                            #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                            Some(ref _ssl) => unreachable!(),
                        };

                        // A handle on the socket for the slot registry, so
                        // that at the cap the connection waiting longest on
                        // its client can be shut down to make room. Without
                        // a spare descriptor it just cannot be preempted.
                        if let Some(tcp) = read_closable.try_clone_tcp() {
                            slot.watch(tcp);
                        }
                        Ok(ClientConnection::with_limits(
                            write_closable,
                            read_closable,
                            head.clone(),
                            slot.progress(),
                        ))
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok(client) => {
                        backoff = Duration::from_millis(5);
                        let messages = inside_messages.clone();
                        let handler = handler.clone();
                        let mut client = Some(client);
                        let mut slot = Some(slot);
                        tasks_pool.spawn(Box::new(move || {
                            // Released only once the connection is gone.
                            let _slot = slot.take();
                            if let Some(mut client) = client.take() {
                                if let Some(handler) = &handler {
                                    // Each request on this thread, one after
                                    // the other; `next()` waits for the
                                    // previous response, and hands a socket
                                    // over when its handler took it.
                                    while let Some(rq) = client.next() {
                                        handler(rq);
                                    }
                                } else if client.secure() {
                                    // Synchronization is needed for HTTPS requests to avoid a deadlock
                                    let (sender, receiver) = mpsc::channel();
                                    for rq in client {
                                        messages.push(rq.with_notify_sender(sender.clone()).into());
                                        if receiver.recv().is_err() {
                                            break;
                                        }
                                    }
                                } else {
                                    for rq in client {
                                        messages.push(rq.into());
                                    }
                                }
                            }
                        }));
                    }

                    // An accept error (EMFILE, ENFILE, ENOBUFS, ECONNABORTED...)
                    // is about one connection or a passing shortage: never a
                    // reason to stop serving for good.
                    Err(e) => {
                        if inside_close_trigger.load(Relaxed) {
                            break;
                        }
                        log::error!("Error accepting new client: {}", e);
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            log::debug!("Terminating accept thread");
            // New connections are refused from now on, not left waiting.
            drop(server);
            // No request is read from here on: connections waiting for one
            // (idle keep-alive, a head or body on its way) end now, while
            // answers being written go on until their connection thread is
            // done, which `join` waits for.
            slots.stop_reading();
            let until = *deadline.lock().unwrap_or_else(|p| p.into_inner());
            if !tasks_pool.join(until) {
                slots.shut_down_all();
                tasks_pool.join(until.map(|t| t + Duration::from_millis(200)));
            }
        });

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            accept: std::sync::Mutex::new(Some(accept)),
            join_deadline,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Stops accepting: the listening socket closes once the accept thread
    /// sees it, connections waiting for a request are closed, and requests
    /// being answered finish (patched in for tinysse: see PATCHES.md).
    /// Returns at once; [`join`](Self::join) waits.
    pub fn stop(&self) {
        if self.close.swap(true, Relaxed) {
            return;
        }
        self.wake_accept();
    }

    /// Stops (see [`stop`](Self::stop)) and waits until the accept thread
    /// and every connection thread have ended, or `deadline` has passed
    /// (then the connections still open are shut down, and their threads
    /// get 200 ms more); returns whether every thread ended.
    pub fn join(&self, deadline: Option<std::time::Instant>) -> bool {
        *self.join_deadline.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
        self.stop();
        let handle = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle {
            Some(h) => h.join().is_ok(),
            None => true,
        }
    }

    fn wake_accept(&self) {
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
