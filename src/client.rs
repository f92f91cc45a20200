//! A blocking SSE client over `std::net::TcpStream`: one HTTP/1.1 GET, the
//! response head, then the body (chunked, sized or until close) fed to an
//! [`SseReader`].

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::reader::{Item, Message, SseReader};

/// A blocking SSE client: one HTTP/1.1 `GET` over a `std::net::TcpStream`,
/// the response head, then its events, parsed by an [`SseReader`]. Plain
/// HTTP only (put TLS in front with a proxy, or read a TLS stream of your
/// own with [`SseReader`]); it does not reconnect by itself, so a caller
/// resumes with [`last_event_id`](Self::last_event_id), as below.
///
/// ```
/// use tinysse::{Event, EventStream, Server};
///
/// let server = Server::builder().addr("127.0.0.1:0").start()?;
/// let hub = server.hub();
///
/// let mut stream = EventStream::connect(server.addr(), "/events?topic=log", &[])?;
/// assert_eq!(stream.status(), 200); // check it: a 400 or 503 is not an Err
/// stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
/// hub.publish("log", &Event::data("one"))?;
/// assert_eq!(stream.next_message()?.unwrap().data, "one");
/// let resume_from = stream.last_event_id().to_string();
/// stream.close(); // the connection drops...
///
/// hub.publish("log", &Event::data("two"))?; // ...and this one is missed
///
/// // Reconnect where we left off: the missed event is replayed first.
/// let mut stream = EventStream::connect(
///     server.addr(),
///     "/events?topic=log",
///     &[("Last-Event-ID", &resume_from)],
/// )?;
/// assert_eq!(stream.next_message()?.unwrap().data, "two");
/// stream.close();
/// server.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EventStream {
    status: u16,
    headers: Vec<(String, String)>,
    reader: SseReader<BufReader<Body>>,
    socket: TcpStream,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("peer", &self.socket.peer_addr().ok())
            .field("status", &self.status)
            .field("last_event_id", &self.reader.last_event_id())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Connects to `addr`, sends `GET target` with `extra_headers` (for example
    /// `("Last-Event-ID", "42")`) and reads the response head. Any status is
    /// `Ok`: check [`status`](Self::status), and read an error's reason with
    /// [`body_text`](Self::body_text). A target or header holding a line
    /// break is refused with `InvalidInput` before anything is sent.
    ///
    /// ```
    /// use tinysse::{EventStream, Server};
    ///
    /// let server = Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = EventStream::connect(
    ///     server.addr(),
    ///     "/events?topic=news",
    ///     &[("Last-Event-ID", "42")],
    /// )?;
    /// assert_eq!(stream.status(), 200);
    /// let refused = EventStream::connect(server.addr(), "/events?topic=a\r\nX: y", &[]);
    /// assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(
        addr: SocketAddr,
        target: &str,
        extra_headers: &[(&str, &str)],
    ) -> io::Result<EventStream> {
        let unsafe_text = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if unsafe_text(target) || target.contains(' ') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "target holds a space or a line break",
            ));
        }
        if extra_headers
            .iter()
            .any(|(k, v)| unsafe_text(k) || unsafe_text(v) || k.contains(':'))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a header name or value holds a line break",
            ));
        }
        let socket = TcpStream::connect(addr)?;
        let _ = socket.set_nodelay(true);
        let mut req =
            format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        (&socket).write_all(req.as_bytes())?;
        EventStream::from_socket(socket)
    }

    /// Reads a response head from a socket the caller already sent a request
    /// on (a request of its own making: another method, more headers).
    ///
    /// ```
    /// use std::io::Write;
    /// use tinysse::{EventStream, Server};
    ///
    /// let server = Server::builder().addr("127.0.0.1:0").start()?;
    /// let mut socket = std::net::TcpStream::connect(server.addr())?;
    /// socket.write_all(b"GET /events?topic=t HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    /// let stream = EventStream::from_socket(socket)?;
    /// assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_socket(socket: TcpStream) -> io::Result<EventStream> {
        let mut input = BufReader::new(socket.try_clone()?);
        let (status, headers) = read_head(&mut input)?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked {
                left: 0,
                done: false,
            }
        } else if let Some(len) = header("content-length") {
            let len = len
                .trim()
                .parse()
                .map_err(|_| invalid("bad Content-Length"))?;
            Framing::Sized(len)
        } else {
            Framing::UntilClose
        };
        Ok(EventStream {
            status,
            headers,
            reader: SseReader::new(BufReader::new(Body { input, framing })),
            socket,
        })
    }

    /// The response status code: a `400` or `503` is not an `Err`, so check it.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events", &[])?;
    /// assert_eq!(stream.status(), 400); // no topic
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a response header, by case-insensitive name.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert_eq!(stream.header("Content-Type"), Some("text/event-stream"));
    /// assert_eq!(stream.header("content-length"), None);
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All response headers in order.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert!(stream.headers().iter().any(|(k, v)| k == "Cache-Control" && v.starts_with("no-cache")));
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Bounds each blocking read, so a test or a watchdog never waits forever.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").retry(None).start()?;
    /// let mut stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    /// let err = stream.next_message().unwrap_err(); // nothing was published
    /// assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    /// The next event; `None` when the response ended. Comments (heartbeats)
    /// and `retry:` fields are skipped.
    ///
    /// ```
    /// use tinysse::{Event, EventStream, Server};
    ///
    /// let server = Server::builder()
    ///     .addr("127.0.0.1:0")
    ///     .stream_route("/two", |_req, tx| {
    ///         let _ = tx.send(Event::data("a"));
    ///         let _ = tx.send(Event::data("b"));
    ///     })
    ///     .start()?;
    /// let mut stream = EventStream::connect(server.addr(), "/two", &[])?;
    /// assert_eq!(stream.next_message()?.map(|m| m.data).as_deref(), Some("a"));
    /// assert_eq!(stream.next_message()?.map(|m| m.data).as_deref(), Some("b"));
    /// assert_eq!(stream.next_message()?, None);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_message(&mut self) -> io::Result<Option<Message>> {
        self.reader.next_message()
    }

    /// The next event, comment or retry; `None` when the response ended.
    ///
    /// ```
    /// use tinysse::{EventStream, Item, Server};
    ///
    /// let server = Server::builder().addr("127.0.0.1:0").retry(Some(1500)).start()?;
    /// let mut stream = EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert_eq!(stream.next_item()?, Some(Item::Retry(1500)));
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        self.reader.next_item()
    }

    /// The last event id seen, to send as `Last-Event-ID` when reconnecting
    /// (the example at [`EventStream`] resumes with it).
    ///
    /// ```
    /// use tinysse::{Event, EventStream, Server};
    ///
    /// let server = Server::builder().addr("127.0.0.1:0").start()?;
    /// let mut stream = EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert_eq!(stream.last_event_id(), "");
    /// let id = server.hub().publish("t", &Event::data("x"))?;
    /// stream.next_message()?;
    /// assert_eq!(stream.last_event_id(), id.to_string());
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_event_id(&self) -> &str {
        self.reader.last_event_id()
    }

    /// The rest of the body as text (for error responses).
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events?topic=a%20b", &[])?;
    /// assert_eq!(stream.status(), 400);
    /// assert!(stream.body_text()?.starts_with("invalid topic"));
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn body_text(mut self) -> io::Result<String> {
        let mut s = String::new();
        self.reader_mut().read_to_string(&mut s)?;
        Ok(s)
    }

    fn reader_mut(&mut self) -> &mut BufReader<Body> {
        self.reader.get_mut()
    }

    /// Closes the connection at once (both directions); the server ends the
    /// stream when its next write fails.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Iterator for EventStream {
    type Item = io::Result<Message>;

    fn next(&mut self) -> Option<io::Result<Message>> {
        self.next_message().transpose()
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

const MAX_HEAD: usize = 64 * 1024;

/// Reads a status line and headers; the caps keep a hostile server from
/// making the client buffer without bound.
fn read_head(input: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut total = 0;
    let mut next_line = |input: &mut dyn BufRead| -> io::Result<String> {
        let mut line = Vec::new();
        input
            .take((MAX_HEAD - total) as u64 + 1)
            .read_until(b'\n', &mut line)?;
        total += line.len();
        if total > MAX_HEAD {
            return Err(invalid("response head too large"));
        }
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| invalid("response head is not UTF-8"))
    };
    let status_line = next_line(input)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1.x response"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut headers = Vec::new();
    loop {
        let line = next_line(input)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid("bad header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, headers))
}

enum Framing {
    Chunked { left: u64, done: bool },
    Sized(u64),
    UntilClose,
}

/// The response body with its transfer framing removed.
struct Body {
    input: BufReader<TcpStream>,
    framing: Framing,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.framing {
            Framing::UntilClose => self.input.read(buf),
            Framing::Sized(left) => {
                if *left == 0 {
                    return Ok(0);
                }
                let max = buf.len().min(*left as usize);
                let n = self.input.read(&mut buf[..max])?;
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut line = String::new();
                    (&mut self.input).take(1024).read_line(&mut line)?;
                    if line.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside a chunked body",
                        ));
                    }
                    let size = line.trim().split(';').next().unwrap_or("");
                    let size =
                        u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
                    if size == 0 {
                        // Trailers, up to the blank line that ends the response.
                        loop {
                            let mut t = String::new();
                            (&mut self.input).take(1024).read_line(&mut t)?;
                            if t.trim().is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let max = buf.len().min(*left as usize);
                let n = self.input.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunk",
                    ));
                }
                *left -= n as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.input.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                }
                Ok(n)
            }
        }
    }
}
