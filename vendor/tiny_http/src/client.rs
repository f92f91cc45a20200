use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Method};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

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

/// Limits on reading a request head (see `ConnectionLimits`).
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadLimits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_bytes: Option<usize>,
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
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
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
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line. `budget` is what is left of the
    ///  head size limit; `deadline` ends the wait for the head.
    fn read_next_line(
        &mut self,
        budget: &mut usize,
        deadline: Option<Instant>,
        in_request_line: bool,
    ) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            if let Some(deadline) = deadline {
                // Each socket read waits only until the deadline, so a head
                // that trickles in byte by byte is cut off in time too.
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadError::HeadTimeout {
                        partial: !(in_request_line && buf.is_empty()),
                    });
                }
                if let Some(reader) = self.next_header_source.inner_mut() {
                    if reader.buffer().is_empty() {
                        let _ = reader.get_ref().set_read_timeout(Some(left));
                    }
                }
            }

            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(Ok(b)) => b,
                Some(Err(e))
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut =>
                {
                    return Err(ReadError::HeadTimeout {
                        partial: !(in_request_line && buf.is_empty()),
                    })
                }
                Some(Err(e)) => return Err(ReadError::ReadIoError(e)),
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| {
                    ReadError::ReadIoError(IoError::new(
                        ErrorKind::InvalidInput,
                        "Header is not in ASCII",
                    ))
                });
            }

            if *budget == 0 {
                return Err(ReadError::HeadTooLarge { in_request_line });
            }
            *budget -= 1;

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let deadline = self.limits.timeout.map(|t| Instant::now() + t);
        let mut budget = self.limits.max_bytes.unwrap_or(usize::MAX);
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(&mut budget, deadline, true)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(&mut budget, deadline, false)?;

                    if line.is_empty() {
                        break;
                    };
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // The body is read by the handler: each of its reads may wait as long
        // as a whole head may take, no longer.
        if let Some(timeout) = self.limits.timeout {
            if let Some(reader) = self.next_header_source.inner_mut() {
                let _ = reader.get_ref().set_read_timeout(Some(timeout));
            }
        }

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
            method,
            path,
            version.clone(),
            headers,
            // a peer that reset at once has no address: not worth a panic
            self.remote_addr.as_ref().ok().copied().flatten(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // return the request
        Ok(request.with_detach(detach))
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
        use crate::{Response, StatusCode};

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
        }

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        // The slots judge a connection by how long its current request has
        // kept it: from here.
        self.progress.new_request();
        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                // an idle keep-alive connection is closed without a word
                Err(ReadError::HeadTimeout { partial: false }) => return None,

                Err(ReadError::HeadTimeout { partial: true }) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::HeadTooLarge { in_request_line }) => {
                    let writer = self.sink.next().unwrap();
                    let code = if in_request_line { 414 } else { 431 };
                    let response = Response::new_empty(StatusCode(code));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    // request timeout
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                // Answered through the request's own writer: a new writer
                // from `sink` would wait for this request's to be dropped,
                // which upstream only did after, so the connection hung.
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(rq.into_writer(), HTTPVersion(1, 1), &[], false, None)
                    .ok();
                return None;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
