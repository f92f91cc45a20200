//! Helpers for the perf tests: a real server on 127.0.0.1:0 and bounded
//! clients over `TcpStream`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tinysse::{EventStream, Server, ServerHandle};

/// Every blocking read in these tests gives up after this long, so a broken
/// server fails a test instead of hanging it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A server with the firehose on, the demo off, and a queue deep enough for
/// bursts.
pub fn server(queue: usize) -> ServerHandle {
    Server::builder()
        .addr("127.0.0.1:0")
        .demo(false)
        .firehose(true)
        .public_dir(None)
        .heartbeat(None)
        .queue(queue)
        .history(16)
        .start()
        .expect("server starts")
}

/// An open stream with a bounded read timeout.
pub fn connect(addr: SocketAddr, target: &str) -> EventStream {
    let s = EventStream::connect(addr, target, &[]).expect("connect");
    assert_eq!(s.status(), 200, "{target}");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

/// POSTs one JSON publish over a fresh connection; returns the event id.
pub fn publish(addr: SocketAddr, topic: &str, data: &str) -> u64 {
    let body = format!(r#"{{"topic":"{topic}","data":"{data}"}}"#);
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        &s,
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let body = rest.split("\r\n\r\n").nth(1).expect("a body");
    body.split('"').nth(3).unwrap().parse().expect("an id")
}
