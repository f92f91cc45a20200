//! Helpers for the reliability tests: run the real binary, talk raw HTTP,
//! read a process's threads, descriptors and memory from /proc.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

// The binary, /proc readings and polling are shared with the other tests.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test file uses its own subset
pub use common::{
    Bin, Netns, proc_fds, proc_status, proc_threads, require, skip_or_fail, wait_until,
};

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Sends `raw` on a fresh connection and reads until the server closes or
/// `limit` passes: (status, the whole answer). Status 0: closed without an
/// answer, or refused (a server shutting down closes its listener first).
pub fn exchange(addr: SocketAddr, raw: &[u8], limit: Duration) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(limit)).expect("timeout");
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

pub fn status_of(b: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(b);
    s.strip_prefix("HTTP/1.1 ")
        .or_else(|| s.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (st, body) = exchange(addr, req.as_bytes(), Duration::from_secs(5));
    (st, String::from_utf8_lossy(&body).into_owned())
}

/// A metric's value from `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn publish(addr: SocketAddr, topic: &str, data: &str) -> u16 {
    exchange(addr, &publish_request(topic, data), Duration::from_secs(5)).0
}

fn publish_request(topic: &str, data: &str) -> Vec<u8> {
    let body = format!("{{\"topic\":\"{topic}\",\"data\":\"{data}\"}}");
    format!(
        "POST /publish HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
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

/// Reads byte by byte up to the end of a response head.
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
