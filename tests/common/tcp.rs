//! Raw sockets, for the tests that play a client no library would be: one
//! that sends half a head, stops reading, pipelines, or must see the exact
//! bytes of an answer. Every read has a deadline, so none can hang a test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection with 5 s read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Sends `raw` on a fresh connection and reads until the server closes,
/// a whole `Content-Length` answer is in, or `limit` passes: (status, every
/// byte read). Status 0: closed without an answer, or refused (a server
/// shutting down or gone closes its listener first).
pub fn exchange(addr: SocketAddr, raw: &[u8], limit: Duration) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(limit)).expect("timeout");
    // The server may answer and close before it has read everything.
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if complete_response(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (status_of(&out), out)
}

/// Whether `b` holds a whole response with a Content-Length body.
fn complete_response(b: &[u8]) -> bool {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| b.len() >= end + 4 + n)
}

/// The status code of the answer `b` starts with; 0 when it is none.
pub fn status_of(b: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(b);
    s.strip_prefix("HTTP/1.1 ")
        .or_else(|| s.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `POST /publish` of `data` (a JSON string's contents) on a fresh
/// connection: the status, 0 when there was no answer.
pub fn publish(addr: SocketAddr, topic: &str, data: &str) -> u16 {
    let body = format!("{{\"topic\":\"{topic}\",\"data\":\"{data}\"}}");
    let req = format!(
        "POST /publish HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, req.as_bytes(), Duration::from_secs(5)).0
}

/// Opens `GET path` and reads the response head; the stream is left for
/// the caller (its read timeout is 5 s).
pub fn open_stream(addr: SocketAddr, path: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())?;
    let head = read_head(&mut s)?;
    if status_of(&head) != 200 {
        return Err(std::io::Error::other(format!(
            "status {}",
            String::from_utf8_lossy(&head)
        )));
    }
    Ok(s)
}

/// Reads byte by byte up to the end of a response head, so nothing after
/// it is consumed.
pub fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(head)
}

/// Reads until `needle` has been seen or `limit` passes; the bytes read.
pub fn read_until(s: &mut TcpStream, needle: &[u8], limit: Duration) -> (bool, Vec<u8>) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if out.windows(needle.len()).any(|w| w == needle) {
            return (true, out);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, out);
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                return (out.windows(needle.len()).any(|w| w == needle), out);
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the server closes the connection or `limit` passes: every
/// byte, and whether it closed. A reset counts as a close (one that may
/// have cost the client its answer: the bytes show).
pub fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes
/// it or `limit` passes: every byte, and whether it closed.
pub fn send_to_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    // The server may refuse the head and stop reading: that is its right.
    let _ = s.write_all(bytes);
    read_to_close(&mut s, limit)
}

/// A response head's status and headers (names lower-cased), and what
/// followed the head.
pub fn split_head(response: &str) -> (u16, Vec<(String, String)>, &str) {
    let (head, rest) = response.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, rest)
}

/// Header `name`'s value (any case) among `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
