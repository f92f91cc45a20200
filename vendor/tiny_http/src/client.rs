use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read};

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::common::HTTPVersion;
use crate::head::{parse_head, HeadError, HeadScanner};
use crate::util::RefinedTcpStream;
use crate::util::{
    DeadlineReader, SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder,
};
use crate::Request;

/// How long, at most, a connection closed with unread input is drained
/// after its last response (see `close_gracefully`).
const LINGER_TIME: Duration = Duration::from_secs(1);
/// How many bytes, at most, are drained then.
const LINGER_BYTES: usize = 256 * 1024;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // limits on reading a request head
    limits: HeadLimits,

    // tells when the response to the previous request is done, or that its
    // handler takes the connection over
    previous_response: Option<mpsc::Receiver<Done>>,

    // tells the connection slots when a new request starts
    progress: crate::util::Progress,
    // the previous request's body was read in full; its response said
    // `Connection: close` (see `Request::body_state`)
    previous_body: Option<(Arc<AtomicBool>, Arc<AtomicBool>)>,
}

/// What the connection thread hears about the response to its last request.
pub(crate) enum Done {
    /// The response's writer was dropped; `failed`: a write to it failed,
    /// so the connection is dead.
    Complete { failed: bool },
    /// The handler takes the socket over (`Request::into_raw_stream`): the
    /// connection thread sends it the socket once the request's reader and
    /// writer are dropped, and ends.
    Detach(mpsc::SyncSender<Option<std::net::TcpStream>>),
    /// Like `Detach`, for a handler that runs on the connection thread and
    /// so cannot wait for the socket: the connection thread calls this with
    /// it once the handler has returned.
    DetachThen(TakeOver),
}

/// What runs with a handed-over socket (`Request::into_raw_stream_then`).
pub(crate) type TakeOver = Box<dyn FnOnce(std::net::TcpStream) + Send + 'static>;

/// Limits on reading a request head and body (see `ConnectionLimits`).
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadLimits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) body_timeout: Option<Duration>,
}

/// The response writer handed to a request: it reports to the connection
/// when it is dropped (the response is complete) and whether a write failed.
struct TrackedWriter<W: Write> {
    inner: W,
    failed: bool,
    done: mpsc::Sender<Done>,
}

impl<W: Write> Write for TrackedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        let r = self.inner.write(buf);
        self.failed |= r.is_err();
        r
    }

    fn flush(&mut self) -> IoResult<()> {
        let r = self.inner.flush();
        self.failed |= r.is_err();
        r
    }
}

impl<W: Write> Drop for TrackedWriter<W> {
    fn drop(&mut self) {
        let _ = self.done.send(Done::Complete {
            failed: self.failed,
        });
    }
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// The head cannot be served (malformed, refused framing, HTTP/2...).
    Refused(HeadError),
    ReadIoError(IoError),
    /// the head did not arrive in time; `partial` if some of it did
    HeadTimeout { partial: bool },
    /// the head is larger than allowed; `in_request_line` if already its first line
    HeadTooLarge { in_request_line: bool },
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`,
    /// with limits on reading request heads.
    pub(crate) fn with_limits(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: HeadLimits,
        progress: crate::util::Progress,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits,
            previous_response: None,
            progress,
            previous_body: None,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads a request head: the bytes up to its first empty line, at most
    /// `max_head_bytes` of them, within `head_timeout`. Bytes after the head
    /// stay in the connection's buffer, for the body or the next request.
    fn read_head(&mut self) -> Result<Vec<u8>, ReadError> {
        let deadline = self.limits.timeout.map(|t| Instant::now() + t);
        let max = self.limits.max_bytes.unwrap_or(usize::MAX);
        let mut head = Vec::new();
        let mut scanner = HeadScanner::default();
        let reader = match self.next_header_source.inner_mut() {
            Some(r) => r,
            None => return Err(ReadError::ReadIoError(ErrorKind::ConnectionAborted.into())),
        };
        loop {
            if reader.buffer().is_empty() {
                // Each socket read waits only until the deadline, so a head
                // that trickles in byte by byte is cut off in time too.
                let wait = match deadline {
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(ReadError::HeadTimeout {
                                partial: scanner.started,
                            });
                        }
                        Some(left)
                    }
                    None => None,
                };
                let _ = reader.get_ref().set_read_timeout(wait);
            }
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return Err(ReadError::HeadTimeout {
                        partial: scanner.started,
                    })
                }
                Err(e) => return Err(ReadError::ReadIoError(e)),
            };
            if buf.is_empty() {
                return Err(ReadError::ReadIoError(IoError::new(
                    ErrorKind::ConnectionAborted,
                    "Unexpected EOF",
                )));
            }
            let room = &buf[..buf.len().min(max - head.len())];
            let (taken, complete) = match scanner.feed(room) {
                Some(n) => (n, true),
                None => (room.len(), false),
            };
            head.extend_from_slice(&room[..taken]);
            reader.consume(taken);
            if complete {
                return Ok(head);
            }
            if head.len() >= max {
                return Err(ReadError::HeadTooLarge {
                    in_request_line: !scanner.past_request_line,
                });
            }
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let head = self.read_head()?;
        let parsed = parse_head(&head).map_err(ReadError::Refused)?;
        // One deadline for the whole body, from the end of its head.
        let body_deadline = self.limits.body_timeout.map(|t| Instant::now() + t);

        // building the writer for the request
        let (done, previous_response) = mpsc::channel();
        // Only a plain TCP connection can be handed over to the handler.
        let detach = (!self.secure && self.sink_is_tcp()).then(|| done.clone());
        let writer = TrackedWriter {
            inner: self.sink.next().unwrap(),
            failed: false,
            done,
        };
        self.previous_response = Some(previous_response);

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            parsed.method,
            parsed.target,
            parsed.version,
            parsed.headers,
            // a peer that reset at once has no address: not worth a panic
            self.remote_addr.as_ref().ok().copied().flatten(),
            DeadlineReader::new(data_source, body_deadline),
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::Head(e) => ReadError::Refused(e),
            }
        })?;

        self.no_more_requests = parsed.last;
        self.previous_body = Some(request.body_state());
        Ok(request.with_detach(detach).with_last(parsed.last))
    }

    /// Answers `status` with a one-line `reason` and `Connection: close`,
    /// then closes (see `close_gracefully`).
    fn refuse(&mut self, status: u16, reason: &str) {
        use crate::{Response, StatusCode};
        if let Some(writer) = self.sink.next() {
            let response =
                Response::from_string(format!("{reason}\n")).with_status_code(StatusCode(status));
            let _ = response.print(writer, HTTPVersion(1, 1), &[], false, None, true);
        }
        self.close_gracefully();
    }

    /// Ends a connection whose input is not all read (a body left unread, a
    /// refused head) without losing the response: the response is flushed
    /// and followed by a FIN, then the client's input is read and dropped
    /// for a little while, as nginx's lingering close does. Closing with
    /// unread input would send a reset, which can destroy the response
    /// before the client reads it. Nothing read here is ever parsed.
    fn close_gracefully(&mut self) {
        let _ = self.sink.with_inner(|w| {
            let _ = w.flush();
            let _ = w.get_mut().shutdown_write();
        });
        if self.secure {
            // A TLS read has no timeout here: do not wait on one.
            return;
        }
        let reader = match self.next_header_source.inner_mut() {
            Some(r) => r,
            None => return,
        };
        let end = Instant::now() + LINGER_TIME;
        let mut left = LINGER_BYTES;
        let buffered = reader.buffer().len();
        reader.consume(buffered);
        let mut buf = [0u8; 4096];
        while left > 0 {
            let wait = end.saturating_duration_since(Instant::now());
            if wait.is_zero() || reader.get_ref().set_read_timeout(Some(wait)).is_err() {
                return;
            }
            match reader.get_mut().read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    fn sink_is_tcp(&self) -> bool {
        self.sink
            .peek(|w| w.get_ref().is_tcp())
            .unwrap_or(false)
    }

    /// Hands the socket to a handler that called `Request::into_raw_stream`.
    /// It drops the request's reader and then its writer right after asking,
    /// so the next message (or the channel closing) says both are gone.
    fn detach(&mut self, previous: mpsc::Receiver<Done>) -> Option<std::net::TcpStream> {
        // From now on the socket is not this connection's: the slots must
        // never shut it down to make room.
        self.progress.forget();
        let _ = previous.recv();
        // Bytes read past the head (a pipelined request) are dropped with
        // the read half; its descriptor is a duplicate, closed here so the
        // socket costs one descriptor from now on.
        let fresh = self.source.next();
        let old = match fresh {
            Some(fresh) => std::mem::replace(&mut self.next_header_source, fresh),
            None => return None,
        };
        if let Some(read_half) = old.into_inner() {
            read_half.into_inner().disarm();
        }
        self.sink.take_inner().and_then(|w| {
            // Nothing was written through it: the handler took the
            // connection before responding.
            let (w, _) = w.into_parts();
            w.into_tcp()
        })
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // The next request is read only once the previous response is done:
        // a long response (a stream) must not be cut by the head timeout,
        // and a pipelined request must not wait in a handler, blocked behind
        // the response before it. It also keeps the connection (and its
        // slot under the connection cap) held for as long as a response is
        // being written.
        if let Some(previous) = self.previous_response.take() {
            let r = previous.recv();
            match r {
                Ok(Done::Complete { failed: false }) => {}
                Ok(Done::Detach(reply)) => {
                    let _ = reply.send(self.detach(previous));
                    return None;
                }
                Ok(Done::DetachThen(take_over)) => {
                    if let Some(socket) = self.detach(previous) {
                        take_over(socket);
                    }
                    return None;
                }
                // writing failed: the peer is gone or stuck, so close
                _ => return None,
            }
            // A body not read in full leaves bytes that cannot be told from
            // a next request: never read on (PATCHES.md, 13).
            if let Some((done, close_sent)) = self.previous_body.take() {
                if !done.load(Ordering::Acquire) {
                    self.close_gracefully();
                    return None;
                }
                if close_sent.load(Ordering::Acquire) {
                    return None;
                }
            }
        }

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        // The slots judge a connection by how long its current request has
        // kept it: from here.
        self.progress.new_request();
        match self.read() {
            Ok(rq) => Some(rq),

            // an idle keep-alive connection is closed without a word
            Err(ReadError::HeadTimeout { partial: false }) => None,

            Err(ReadError::HeadTimeout { partial: true }) => {
                self.refuse(408, "request head not received in time");
                None
            }

            Err(ReadError::HeadTooLarge { in_request_line }) => {
                if in_request_line {
                    self.refuse(414, "request line too long");
                } else {
                    self.refuse(431, "request header fields too large");
                }
                None
            }

            // malformed or ambiguous: we don't know where the next request
            // would start, so we have to close
            Err(ReadError::Refused(e)) => {
                self.refuse(e.status, e.reason);
                None
            }

            // a small body, read before the request is handed over, did not
            // come in time
            Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                self.refuse(408, "request body not received in time");
                None
            }

            Err(ReadError::ReadIoError(_)) => None,
        }
    }
}
