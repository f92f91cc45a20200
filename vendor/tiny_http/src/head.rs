//! Request heads: where a head ends, parsing it with `httparse`, and how
//! its body is framed (PATCHES.md, 11 and 12).
//!
//! Everything here decides what the bytes on a connection mean, so it
//! refuses anything two HTTP implementations could read differently (a
//! proxy in front and this server): both `Content-Length` and
//! `Transfer-Encoding`, differing lengths, a length that is not plain
//! digits, a transfer coding other than `chunked`, folded header lines.

use std::str::FromStr;

use ascii::AsciiString;

use crate::common::{HTTPVersion, Header, HeaderField, Method};

/// How a request's body is delimited.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head that cannot be served: the status to answer with (the
/// connection is then closed) and a one-line reason.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadError {
    /// `400`, `417`, `431`, `501` or `505`.
    pub status: u16,
    /// Why, in a few words.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: 400,
        reason,
    }
}

/// A parsed request head.
#[doc(hidden)]
#[derive(Debug)]
pub struct ParsedHead {
    /// The method.
    pub method: Method,
    /// The request target, as sent (ASCII).
    pub target: String,
    /// `1.0` or `1.1`.
    pub version: HTTPVersion,
    /// The header fields, in order, values trimmed.
    pub headers: Vec<Header>,
    /// How the body is delimited.
    pub framing: Framing,
    /// `Expect: 100-continue` was sent.
    pub expects_continue: bool,
    /// The client said this is its last request (`Connection: close`,
    /// HTTP/1.0 without keep-alive) or asked for an upgrade, which is never
    /// granted: the connection is closed after the response.
    pub last: bool,
}

/// Finds where a request head ends, fed the bytes as they come. Empty lines
/// before the request line are skipped (RFC 9112, 2.2); the head then ends
/// at its first empty line (`CRLF CRLF`, or bare `LF`s, which `httparse`
/// then judges).
#[derive(Debug, Default)]
pub(crate) struct HeadScanner {
    /// A byte other than CR or LF has come: the request line began.
    pub(crate) started: bool,
    /// The request line is complete.
    pub(crate) past_request_line: bool,
    /// Nothing but CRs since the last LF.
    line_empty: bool,
}

impl HeadScanner {
    /// Looks at `bytes`, which follow those already seen; returns how many
    /// of them complete the head, or `None` if all of them belong to it and
    /// it goes on.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if !self.started {
                if b != b'\r' && b != b'\n' {
                    self.started = true;
                }
                continue;
            }
            match b {
                b'\n' if self.line_empty => return Some(i + 1),
                b'\n' => {
                    self.past_request_line = true;
                    self.line_empty = true;
                }
                b'\r' => {}
                _ => self.line_empty = false,
            }
        }
        None
    }
}

/// Where the request head at the start of `bytes` ends, as the connection
/// finds it (see `HeadScanner`). For the fuzz target.
#[doc(hidden)]
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    HeadScanner::default().feed(bytes)
}

/// Parses a complete request head (as delimited by `HeadScanner`) and
/// decides how its body is framed. Never panics, whatever `head` holds.
#[doc(hidden)]
pub fn parse_head(head: &[u8]) -> Result<ParsedHead, HeadError> {
    // One header per line at most, so this many never runs short.
    let lines = head.iter().filter(|&&b| b == b'\n').count();
    let mut slots = vec![httparse::EMPTY_HEADER; lines.max(1)];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(bad("malformed request head")),
        Err(httparse::Error::Version) if asks_http2_or_later(head) => {
            return Err(HeadError {
                status: 505,
                reason: "only HTTP/1.0 and HTTP/1.1 are supported",
            })
        }
        Err(httparse::Error::Version) => return Err(bad("malformed HTTP version")),
        Err(httparse::Error::HeaderName) => {
            return Err(bad("malformed header line (folded lines are refused)"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError {
                status: 431,
                reason: "too many header fields",
            })
        }
        Err(_) => return Err(bad("malformed request head")),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request line"));
    };
    let method = Method::from_str(method).map_err(|_| bad("malformed method"))?;
    if !target.is_ascii() {
        return Err(bad("the request target is not ASCII"));
    }
    let version = HTTPVersion(1, minor);
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = h.value.trim_ascii();
        let field = HeaderField::from_bytes(h.name).map_err(|_| bad("malformed header name"))?;
        let value = AsciiString::from_ascii(value).map_err(|_| bad("header value is not ASCII"))?;
        headers.push(Header { field, value });
    }
    let framing = framing(&headers, &version)?;
    let expects_continue = expects_continue(&headers)?;
    let last = is_last(&headers, &version);
    Ok(ParsedHead {
        method,
        target: target.to_owned(),
        version,
        headers,
        framing,
        expects_continue,
        last,
    })
}

/// The request line names `HTTP/2` or later (an HTTP/2 preface, say):
/// that is `505`, not a malformed request.
fn asks_http2_or_later(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let line = head[start..].split(|&b| b == b'\n').next().unwrap_or(&[]);
    let version = line.split(|&b| b == b' ').nth(2).unwrap_or(&[]);
    matches!(version.strip_prefix(b"HTTP/"), Some([b'2'..=b'9', ..]))
}

fn values<'a>(headers: &'a [Header], name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// The body framing the contract allows (RFC 9112, 6.3, strictly).
pub(crate) fn framing(headers: &[Header], version: &HTTPVersion) -> Result<Framing, HeadError> {
    let has_te = values(headers, "Transfer-Encoding").next().is_some();
    let mut length: Option<u64> = None;
    for v in values(headers, "Content-Length") {
        if has_te {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        // Plain digits only: no sign, no space, no list, no hex.
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("Content-Length is not a number"));
        }
        let n: u64 = v.parse().map_err(|_| bad("Content-Length is too large"))?;
        // Identical duplicates (some clients repeat the field) are taken,
        // as RFC 9112, 6.3 allows; differing ones are refused.
        if length.is_some_and(|l| l != n) {
            return Err(bad("differing Content-Length values"));
        }
        length = Some(n);
    }
    if let Some(n) = length {
        return Ok(Framing::Length(n));
    }
    if !has_te {
        return Ok(Framing::None);
    }
    if *version < HTTPVersion(1, 1) {
        // RFC 9112, 6.1: an HTTP/1.0 message with Transfer-Encoding has
        // faulty framing.
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let mut chunked = 0;
    for coding in values(headers, "Transfer-Encoding").flat_map(|v| v.split(',')) {
        let coding = coding.trim_matches(|c| c == ' ' || c == '\t');
        if coding.is_empty() {
            return Err(bad("malformed Transfer-Encoding"));
        }
        if !coding.eq_ignore_ascii_case("chunked") {
            return Err(HeadError {
                status: 501,
                reason: "only the chunked transfer coding is supported",
            });
        }
        chunked += 1;
    }
    if chunked != 1 {
        return Err(bad("chunked more than once"));
    }
    Ok(Framing::Chunked)
}

/// Whether the client waits for `100 Continue`; any other expectation is `417`.
pub(crate) fn expects_continue(headers: &[Header]) -> Result<bool, HeadError> {
    let mut expects = false;
    for v in values(headers, "Expect") {
        if !v.eq_ignore_ascii_case("100-continue") {
            return Err(HeadError {
                status: 417,
                reason: "unsupported expectation",
            });
        }
        expects = true;
    }
    Ok(expects)
}

/// Upstream's keep-alive rules, unchanged: `close` or `upgrade` in
/// `Connection`, or HTTP/1.0 without `keep-alive`, ends the connection.
fn is_last(headers: &[Header], version: &HTTPVersion) -> bool {
    let connection = values(headers, "Connection")
        .next()
        .map(|v| v.to_ascii_lowercase());
    match connection {
        Some(ref v) if v.contains("close") || v.contains("upgrade") => true,
        Some(ref v) => !v.contains("keep-alive") && *version == HTTPVersion(1, 0),
        None => *version == HTTPVersion(1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<ParsedHead, HeadError> {
        parse_head(s.as_bytes())
    }

    fn status(s: &str) -> u16 {
        match head(s) {
            Ok(_) => 200,
            Err(e) => e.status,
        }
    }

    #[test]
    fn scanner_finds_the_end() {
        let mut s = HeadScanner::default();
        assert_eq!(s.feed(b"\r\n\r\nGET / HTTP/1.1\r\nA: b\r"), None);
        assert!(s.started && s.past_request_line);
        assert_eq!(s.feed(b"\n\r\nBODY"), Some(3));
        let mut s = HeadScanner::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\n\nX"), Some(16));
        let mut s = HeadScanner::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1"), None);
        assert!(!s.past_request_line);
    }

    #[test]
    fn parses_a_plain_head() {
        let h = head("POST /p?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-A:  v \r\n\r\n")
            .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.target, "/p?q=1");
        assert_eq!(h.version, HTTPVersion(1, 1));
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.headers[2].value.as_str(), "v");
        assert!(!h.last);
        let h = head("\r\nGET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::None);
        assert!(h.last);
    }

    #[test]
    fn framing_rules() {
        let with = |hs: &str| status(&format!("POST / HTTP/1.1\r\n{hs}\r\n"));
        assert_eq!(
            with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            400
        );
        assert_eq!(
            with("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            400
        );
        assert_eq!(with("Content-Length: 5\r\nContent-Length: 6\r\n"), 400);
        assert_eq!(with("Content-Length: 5\r\nContent-Length: 5\r\n"), 200);
        for cl in [
            "+24",
            "-1",
            "1 2",
            "0x10",
            "1,1",
            "",
            "18446744073709551616",
            "1_0",
        ] {
            assert_eq!(with(&format!("Content-Length: {cl}\r\n")), 400, "{cl:?}");
        }
        assert_eq!(with("Content-Length: 18446744073709551615\r\n"), 200);
        assert_eq!(with("Transfer-Encoding: gzip, chunked\r\n"), 501);
        assert_eq!(with("Transfer-Encoding: identity\r\n"), 501);
        assert_eq!(with("Transfer-Encoding: xchunked\r\n"), 501);
        assert_eq!(with("Transfer-Encoding: chunked, chunked\r\n"), 400);
        assert_eq!(
            with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            400
        );
        assert_eq!(with("Transfer-Encoding: chunked,\r\n"), 400);
        assert_eq!(with("Transfer-Encoding: CHUNKED\r\n"), 200);
        assert_eq!(with("X-A: 1\r\n Transfer-Encoding: chunked\r\n"), 400);
        assert_eq!(with("X-A: 1\r\n\tTransfer-Encoding: chunked\r\n"), 400);
        assert_eq!(with("Transfer-Encoding : chunked\r\n"), 400);
        assert_eq!(with("Expect: 100-continue\r\n"), 200);
        assert_eq!(with("Expect: something\r\n"), 417);
        assert_eq!(with("X-A: caf\u{e9}\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn request_lines() {
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/0.9\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1 \r\n\r\n"), 400);
        assert_eq!(status("GET  / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /caf\u{e9} HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\nextra"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n"), 400);
        assert_eq!(status("\r\n\r\n"), 400);
        assert_eq!(status(""), 400);
    }
}
