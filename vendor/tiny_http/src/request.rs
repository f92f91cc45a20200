use std::io::Error as IoError;
use std::io::{self, BufRead, Cursor, ErrorKind, Read, Write};

use std::convert::TryFrom;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::sync::mpsc::Sender;

use crate::head::{Framing, HeadError};
use crate::util::{ChunkedDecoder, EqualReader};
use crate::{HTTPVersion, Header, Method, Response, StatusCode};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// This mechanic is disabled if:
///
///  - The body of a request is large enough (handling requires pipelining requires storing the
///    body of the request in a buffer ; if the body is too big, tiny-http will avoid doing that)
///  - A request sends a `Expect: 100-continue` header (which means that the client waits to
///    know whether its body will be processed before sending it)
///  - A request sends a `Connection: close` header or `Connection: upgrade` header (used for
///    websockets), which indicates that this is the last request that will be received on this
///    connection
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `into_writer` or `respond` being called,
/// an empty response with a 500 status code (internal server error) will automatically be
/// sent back to the client.
/// This means that if your code fails during the handling of a request, this "internal server
/// error" response will automatically be sent during the stack unwinding.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    // where to read the body from
    data_reader: Option<Box<dyn Read + Send + 'static>>,

    // if this writer is empty, then the request has been answered
    response_writer: Option<Box<dyn Write + Send + 'static>>,

    remote_addr: Option<SocketAddr>,

    // true if HTTPS, false if HTTP
    secure: bool,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<usize>,

    // true if a `100 Continue` response must be sent when `as_reader()` is called
    must_send_continue: bool,

    // If Some, a message must be sent after responding
    notify_when_responded: Option<Sender<()>>,

    // If Some, the connection can be handed over (`into_raw_stream`)
    detach: Option<Sender<crate::client::Done>>,

    // Set once the body was read in full: only then may the connection be
    // read on for a next request.
    body_done: Arc<AtomicBool>,

    // Set when the response said `Connection: close`.
    close_sent: Arc<AtomicBool>,

    // The client's last request on its connection (see `ParsedHead::last`).
    last: bool,
}

/// Why [`Request::into_raw_stream`] did not hand the connection over.
#[derive(Debug)]
pub enum RawStreamError {
    /// Not a plain TCP connection (TLS, a Unix socket, a test request), or
    /// the response was already started: the request comes back untouched.
    Unsupported(Request),
    /// The connection went away while being handed over; the request is
    /// gone (nothing was sent to the client).
    Lost,
}

struct NotifyOnDrop<R> {
    sender: Sender<()>,
    inner: R,
}

impl<R: Read> Read for NotifyOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}
impl<R: Write> Write for NotifyOnDrop<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
impl<R> Drop for NotifyOnDrop<R> {
    fn drop(&mut self) {
        self.sender.send(()).unwrap();
    }
}

/// Error that can happen when building a `Request` object.
#[derive(Debug)]
pub enum RequestCreationError {
    /// The head cannot be served: a refused framing, an unknown `Expect`.
    Head(HeadError),

    /// Error while reading data from the socket during the creation of the `Request`.
    CreationIoError(IoError),
}

impl From<IoError> for RequestCreationError {
    fn from(err: IoError) -> RequestCreationError {
        RequestCreationError::CreationIoError(err)
    }
}

/// Builds a new request.
///
/// After the request line and headers have been read from the socket, a new `Request` object
/// is built.
///
/// You must pass a `BufRead` that will allow the `Request` object to read from the incoming data.
/// It is the responsibility of the `Request` to read only the data of the request and not further:
/// the body is framed by `Content-Length` or `Transfer-Encoding: chunked` under the rules of
/// `head::framing` (PATCHES.md, 12), never by `Connection: upgrade` (PATCHES.md, 16).
///
/// The `Write` object will be used by the `Request` to write the response.
#[allow(clippy::too_many_arguments)]
pub fn new_request<R, W>(
    secure: bool,
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    mut source_data: R,
    writer: W,
) -> Result<Request, RequestCreationError>
where
    R: BufRead + Send + 'static,
    W: Write + Send + 'static,
{
    let framing = crate::head::framing(&headers, &version).map_err(RequestCreationError::Head)?;
    let expects_continue =
        crate::head::expects_continue(&headers).map_err(RequestCreationError::Head)?;

    let body_done = Arc::new(AtomicBool::new(false));
    let mut body_length = None;
    let reader = match framing {
        Framing::None | Framing::Length(0) => {
            if framing != Framing::None {
                body_length = Some(0);
            }
            body_done.store(true, Ordering::Release);
            Box::new(io::empty()) as Box<dyn Read + Send + 'static>
        }
        Framing::Length(n) => {
            let n = usize::try_from(n).map_err(|_| {
                RequestCreationError::Head(HeadError {
                    status: 400,
                    reason: "Content-Length is too large",
                })
            })?;
            body_length = Some(n);
            if n <= 1024 && !expects_continue {
                // A small body is read at once, so the handler never waits
                // on the client for it.
                let mut buffer = vec![0; n];
                source_data.read_exact(&mut buffer)?;
                body_done.store(true, Ordering::Release);
                Box::new(Cursor::new(buffer)) as Box<dyn Read + Send + 'static>
            } else {
                Box::new(EqualReader::new(source_data, n, Some(body_done.clone())))
                    as Box<dyn Read + Send + 'static>
            }
        }
        Framing::Chunked => Box::new(ChunkedDecoder::new(source_data, Some(body_done.clone())))
            as Box<dyn Read + Send + 'static>,
    };

    Ok(Request {
        data_reader: Some(reader),
        response_writer: Some(Box::new(writer) as Box<dyn Write + Send + 'static>),
        remote_addr,
        secure,
        method,
        path,
        http_version: version,
        headers,
        body_length,
        must_send_continue: expects_continue,
        notify_when_responded: None,
        detach: None,
        body_done,
        close_sent: Arc::new(AtomicBool::new(false)),
        last: false,
    })
}

impl Request {
    /// Returns true if the request was made through HTTPS.
    #[inline]
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes.
    ///
    /// Returns `None` if the length is unknown.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// Returns the address of the client that sent this request.
    ///
    /// The address is always `Some` for TCP listeners, but always `None` for UNIX listeners
    /// (as the remote address of a UNIX client is almost always unnamed).
    ///
    /// Note that this is gathered from the socket. If you receive the request from a proxy,
    /// this function will return the address of the proxy and not the address of the actual
    /// user.
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// Sends a response with a `Connection: upgrade` header, then turns the `Request` into a `Stream`.
    ///
    /// The main purpose of this function is to support websockets.
    /// If you detect that the request wants to use some kind of protocol upgrade, you can
    ///  call this function to obtain full control of the socket stream.
    ///
    /// If you call this on a non-websocket request, tiny-http will wait until this `Stream` object
    ///  is destroyed before continuing to read or write on the socket. Therefore you should always
    ///  destroy it as soon as possible.
    pub fn upgrade<R: Read>(
        mut self,
        protocol: &str,
        response: Response<R>,
    ) -> Box<dyn ReadWrite + Send> {
        use crate::util::CustomStream;

        response
            .raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                false,
                Some(protocol),
            )
            .ok(); // TODO: unused result

        self.response_writer.as_mut().unwrap().flush().ok(); // TODO: unused result

        let stream = CustomStream::new(self.extract_reader_impl(), self.extract_writer_impl());
        if let Some(sender) = self.notify_when_responded.take() {
            let stream = NotifyOnDrop {
                sender,
                inner: stream,
            };
            Box::new(stream) as Box<dyn ReadWrite + Send>
        } else {
            Box::new(stream) as Box<dyn ReadWrite + Send>
        }
    }

    /// Allows to read the body of the request.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # extern crate rustc_serialize;
    /// # extern crate tiny_http;
    /// # use rustc_serialize::json::Json;
    /// # use std::io::Read;
    /// # fn get_content_type(_: &tiny_http::Request) -> &'static str { "" }
    /// # fn main() {
    /// # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
    /// let mut request = server.recv().unwrap();
    ///
    /// if get_content_type(&request) == "application/json" {
    ///     let mut content = String::new();
    ///     request.as_reader().read_to_string(&mut content).unwrap();
    ///     let json: Json = content.parse().unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// If the client sent a `Expect: 100-continue` header with the request, calling this
    ///  function will send back a `100 Continue` response.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        if self.must_send_continue {
            let msg = Response::new_empty(StatusCode(100));
            msg.raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                true,
                None,
            )
            .ok();
            self.response_writer.as_mut().unwrap().flush().ok();
            self.must_send_continue = false;
        }

        self.data_reader.as_mut().unwrap()
    }

    /// Turns the `Request` into a writer.
    ///
    /// The writer has a raw access to the stream to the user.
    /// This function is useful for things like CGI.
    ///
    /// Note that the destruction of the `Writer` object may trigger
    /// some events. For exemple if a client has sent multiple requests and the requests
    /// have been processed in parallel, the destruction of a writer will trigger
    /// the writing of the next response.
    /// Therefore you should always destroy the `Writer` as soon as possible.
    #[inline]
    pub fn into_writer(mut self) -> Box<dyn Write + Send + 'static> {
        let writer = self.extract_writer_impl();
        if let Some(sender) = self.notify_when_responded.take() {
            let writer = NotifyOnDrop {
                sender,
                inner: writer,
            };
            Box::new(writer) as Box<dyn Write + Send + 'static>
        } else {
            writer
        }
    }

    /// Extract the response `Writer` object from the Request, dropping this `Writer` has the same side effects
    /// as the object returned by `into_writer` above.
    ///
    /// This may only be called once on a single request.
    fn extract_writer_impl(&mut self) -> Box<dyn Write + Send + 'static> {
        use std::mem;

        assert!(self.response_writer.is_some());

        let mut writer = None;
        mem::swap(&mut self.response_writer, &mut writer);
        writer.unwrap()
    }

    /// Extract the body `Reader` object from the Request.
    ///
    /// This may only be called once on a single request.
    fn extract_reader_impl(&mut self) -> Box<dyn Read + Send + 'static> {
        use std::mem;

        assert!(self.data_reader.is_some());

        let mut reader = None;
        mem::swap(&mut self.data_reader, &mut reader);
        reader.unwrap()
    }

    /// Sends a response to this request.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        if let Some(sender) = self.notify_when_responded.take() {
            sender.send(()).unwrap();
        }
        res
    }

    fn respond_impl<R>(&mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let mut writer = self.extract_writer_impl();

        let do_not_send_body = self.method == Method::Head;

        // Unread body bytes cannot be told from a next request: the
        // connection ends after this response, and the response says so.
        let close = self.last || !self.body_done.load(Ordering::Acquire);
        if close {
            self.close_sent.store(true, Ordering::Release);
        }

        Self::ignore_client_closing_errors(response.print(
            writer.by_ref(),
            self.http_version.clone(),
            &self.headers,
            do_not_send_body,
            None,
            close,
        ))?;

        Self::ignore_client_closing_errors(writer.flush())
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            ErrorKind::BrokenPipe => Ok(()),
            ErrorKind::ConnectionAborted => Ok(()),
            ErrorKind::ConnectionRefused => Ok(()),
            ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }

    pub(crate) fn with_detach(mut self, detach: Option<Sender<crate::client::Done>>) -> Self {
        self.detach = detach;
        self
    }

    /// Marks the client's last request: its response says `Connection: close`.
    pub(crate) fn with_last(mut self, last: bool) -> Self {
        self.last = last;
        self
    }

    /// What the connection needs to know once the response is done: whether
    /// the body was read in full, and whether the response said
    /// `Connection: close`.
    pub(crate) fn body_state(&self) -> (Arc<AtomicBool>, Arc<AtomicBool>) {
        (self.body_done.clone(), self.close_sent.clone())
    }

    /// Takes the connection over: returns its socket, after the request
    /// head (anything the client sent after the head is dropped), and the
    /// connection's thread ends at once, releasing its slot under
    /// `ConnectionLimits::max_connections`. The socket is this server's no
    /// more: the caller writes the whole response (status line included)
    /// and closes it. Its options (timeouts, keepalive) are as accepted.
    ///
    /// Only for a plain TCP connection whose response was not started.
    pub fn into_raw_stream(mut self) -> Result<std::net::TcpStream, RawStreamError> {
        if self.response_writer.is_none() || self.notify_when_responded.is_some() {
            return Err(RawStreamError::Unsupported(self));
        }
        let detach = match self.detach.take() {
            Some(d) => d,
            None => return Err(RawStreamError::Unsupported(self)),
        };
        let (reply, socket) = std::sync::mpsc::sync_channel(1);
        if detach.send(crate::client::Done::Detach(reply)).is_err() {
            // The connection thread is gone; the request is as it was.
            return Err(RawStreamError::Unsupported(self));
        }
        drop(detach);
        // The connection thread takes the socket once both are gone; the
        // reader first, as it waits for the writer's drop message.
        self.data_reader = None;
        self.response_writer = None;
        socket.recv().ok().flatten().ok_or(RawStreamError::Lost)
    }

    /// Whether the connection can be taken over ([`into_raw_stream`](Self::into_raw_stream),
    /// [`into_raw_stream_then`](Self::into_raw_stream_then)): a plain TCP
    /// connection whose response was not started.
    pub fn can_take_over(&self) -> bool {
        self.response_writer.is_some()
            && self.notify_when_responded.is_none()
            && self.detach.is_some()
    }

    /// Like [`into_raw_stream`](Self::into_raw_stream), for a handler that
    /// runs on the connection's own thread (`Server::from_listener_with_handler`)
    /// and so cannot wait for the socket: returns at once, and `take_over`
    /// runs on the connection thread with the socket once the handler has
    /// returned (not at all if the client went away meanwhile).
    pub fn into_raw_stream_then<F>(mut self, take_over: F) -> Result<(), RawStreamError>
    where
        F: FnOnce(std::net::TcpStream) + Send + 'static,
    {
        if !self.can_take_over() {
            return Err(RawStreamError::Unsupported(self));
        }
        let detach = match self.detach.take() {
            Some(d) => d,
            None => return Err(RawStreamError::Unsupported(self)),
        };
        if detach
            .send(crate::client::Done::DetachThen(Box::new(take_over)))
            .is_err()
        {
            return Err(RawStreamError::Unsupported(self));
        }
        self.data_reader = None;
        self.response_writer = None;
        Ok(())
    }

    pub(crate) fn with_notify_sender(mut self, sender: Sender<()>) -> Self {
        self.notify_when_responded = Some(sender);
        self
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.response_writer.is_some() {
            let response = Response::empty(500);
            let _ = self.respond_impl(response); // ignoring any potential error
            if let Some(sender) = self.notify_when_responded.take() {
                sender.send(()).unwrap();
            }
        }
    }
}

/// Dummy trait that regroups the `Read` and `Write` traits.
///
/// Automatically implemented on all types that implement both `Read` and `Write`.
pub trait ReadWrite: Read + Write {}
impl<T> ReadWrite for T where T: Read + Write {}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
