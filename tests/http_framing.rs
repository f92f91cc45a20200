//! Strict request framing on direct connections (issue #10, finding 1, 10
//! and 11; interface.md, "HTTP rules"): every ambiguous or refused framing
//! gets its status with `Connection: close`, the connection is closed, and a
//! `POST /publish` pipelined behind it never runs. A response sent before
//! its body was read says `Connection: close` too, and the bytes after it
//! are never read as a request. A body has one deadline, however slowly it
//! trickles in.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::nginx::TempDir;
use common::{Running, TIMEOUT, builder, start};
use tinysse::Event;

/// The request every test pipelines behind the one under test: if it ever
/// runs, `events_published` says so.
fn smuggled() -> Vec<u8> {
    let body = r#"{"topic":"smuggled","data":"pwned"}"#;
    format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A server with a public directory holding `index.html`, and a short
/// header (and so body) timeout.
fn server() -> (Running, TempDir) {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("index.html"), "<p>index</p>\n").expect("write index.html");
    let server = start(
        builder()
            .public_dir(Some(dir.path().to_path_buf()))
            .header_timeout(Some(Duration::from_secs(2))),
    );
    (server, dir)
}

/// One response off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// What came back on a connection: every response, and whether the server
/// closed it (EOF) within `TIMEOUT`.
#[derive(Debug)]
struct Exchange {
    responses: Vec<Resp>,
    closed: bool,
    raw: String,
}

/// Sends `bytes`, then reads until the server closes (or `TIMEOUT`).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut s = TcpStream::connect(addr).expect("connect");
    // The server may refuse the head and stop reading: that is its right.
    let _ = s.write_all(bytes);
    read_to_close(&mut s)
}

fn read_to_close(s: &mut TcpStream) -> Exchange {
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset is a close too, but one that may have cost the
            // client its response: the parse below shows.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    Exchange {
        responses: parse_responses(&out),
        closed,
        raw: String::from_utf8_lossy(&out).into_owned(),
    }
}

/// Splits a byte stream into responses (`Content-Length` or chunked bodies).
fn parse_responses(mut b: &[u8]) -> Vec<Resp> {
    let mut all = Vec::new();
    while let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&b[..end]).into_owned();
        b = &b[end + 4..];
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(n) = r
            .header("Content-Length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            let n = n.min(b.len());
            r.body = b[..n].to_vec();
            b = &b[n..];
        } else if r
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
                    b = &[];
                    break;
                };
                let size =
                    usize::from_str_radix(&String::from_utf8_lossy(&b[..eol]), 16).unwrap_or(0);
                b = &b[eol + 2..];
                if size == 0 {
                    b = b.strip_prefix(b"\r\n").unwrap_or(b);
                    break;
                }
                let n = size.min(b.len());
                r.body.extend_from_slice(&b[..n]);
                b = b.get(n + 2..).unwrap_or(&[]);
            }
        } else {
            r.body = b.to_vec();
            b = &[];
        }
        all.push(r);
    }
    all
}

/// `head` (a request, body included) is refused with `status`: one
/// response, with `Connection: close` and `Date`, the connection closed,
/// and the publish pipelined behind it never run.
fn refused(head: &[u8], status: u16) {
    let (server, _dir) = server();
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(&smuggled());
    let x = exchange(server.addr(), &bytes);
    let what = String::from_utf8_lossy(head);
    assert_eq!(
        x.responses.len(),
        1,
        "{what:?}: expected one response, got {}",
        x.raw
    );
    let r = &x.responses[0];
    assert_eq!(r.status, status, "{what:?}: {}", x.raw);
    assert!(r.closes(), "{what:?}: no Connection: close: {}", x.raw);
    assert!(r.header("Date").is_some(), "{what:?}: no Date: {}", x.raw);
    assert!(x.closed, "{what:?}: the connection stayed open");
    assert_eq!(
        server.handle().metrics().events_published(),
        0,
        "{what:?}: the pipelined publish ran"
    );
}

const PUBLISH: &str =
    "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";

#[test]
fn content_length_and_transfer_encoding_together() {
    refused(
        format!("{PUBLISH}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
        400,
    );
    refused(
        format!("{PUBLISH}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n")
            .as_bytes(),
        400,
    );
}

#[test]
fn differing_content_lengths() {
    refused(
        format!("{PUBLISH}Content-Length: 0\r\nContent-Length: 3\r\n\r\n{{}}\n").as_bytes(),
        400,
    );
}

#[test]
fn identical_content_lengths_are_accepted() {
    let (server, _dir) = server();
    let body = r#"{"topic":"same","data":"x"}"#;
    let n = body.len();
    let req = format!(
        "{PUBLISH}Content-Length: {n}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{body}"
    );
    let x = exchange(server.addr(), req.as_bytes());
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    assert_eq!(x.responses[0].status, 200, "{}", x.raw);
    assert_eq!(server.handle().metrics().events_published(), 1);
}

#[test]
fn content_length_must_be_plain_digits() {
    // `+24` was read as 24 before; the rest were ignored, so the body was
    // read as the next request.
    let filler = "x".repeat(24);
    refused(
        format!("{PUBLISH}Content-Length: +24\r\n\r\n{filler}").as_bytes(),
        400,
    );
    for value in [
        "-1",
        " 1 2",
        "0x10",
        "1,1",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        refused(
            format!("{PUBLISH}Content-Length: {value}\r\n\r\n").as_bytes(),
            400,
        );
    }
}

#[test]
fn only_chunked_transfer_coding() {
    for coding in ["gzip, chunked", "identity", "chunked;q=1", "xchunked"] {
        refused(
            format!("{PUBLISH}Transfer-Encoding: {coding}\r\n\r\n0\r\n\r\n").as_bytes(),
            501,
        );
    }
    refused(
        format!("{PUBLISH}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n").as_bytes(),
        400,
    );
}

#[test]
fn folded_header_lines() {
    // A proxy that unfolds sees only Content-Length; upstream tiny_http
    // took the folded line for a real Transfer-Encoding.
    refused(
        format!(
            "{PUBLISH}Content-Length: 5\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
        400,
    );
    refused(
        format!("{PUBLISH}X-Pad: a\r\n\tb\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        400,
    );
}

#[test]
fn chunk_sizes_are_hex_digits_only() {
    // `+18` is 24 bytes to a lenient decoder.
    let data = "x".repeat(24);
    refused(
        format!("{PUBLISH}Transfer-Encoding: chunked\r\n\r\n+18\r\n{data}\r\n0\r\n\r\n").as_bytes(),
        400,
    );
    refused(
        format!("{PUBLISH}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n").as_bytes(),
        400,
    );
}

#[test]
fn error_answers_say_close_and_carry_date() {
    refused(b"GET /healthz HTTP/2.0\r\n\r\n", 505);
    refused(b"GET /healthz HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417);
    refused(b"GARBAGE\r\n\r\n", 400);
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20 * 1024));
    refused(long.as_bytes(), 414);
    let many = format!(
        "GET /healthz HTTP/1.1\r\n{}\r\n",
        "X-Pad: 0123456789\r\n".repeat(1000)
    );
    refused(many.as_bytes(), 431);

    // A head that never ends: 408, said and closed, within the timeout.
    let (server, _dir) = server();
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let x = read_to_close(&mut s);
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    let r = &x.responses[0];
    assert_eq!(r.status, 408, "{}", x.raw);
    assert!(r.closes() && r.header("Date").is_some(), "{}", x.raw);
    assert!(x.closed);
}

#[test]
fn a_valid_chunked_body_keeps_the_connection() {
    let (server, _dir) = server();
    let body = r#"{"topic":"chunks","data":"ok"}"#;
    let (a, b) = body.split_at(10);
    let req = format!(
        "{PUBLISH}Transfer-Encoding: Chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        a.len(),
        b.len()
    );
    let x = exchange(server.addr(), req.as_bytes());
    let statuses: Vec<u16> = x.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200], "{}", x.raw);
    assert!(!x.responses[0].closes(), "{}", x.raw);
    assert_eq!(x.responses[1].body, b"ok\n");
    assert!(x.responses[1].closes(), "{}", x.raw);
    assert_eq!(server.handle().metrics().events_published(), 1);
}

#[test]
fn keep_alive_and_pipelining_still_work() {
    let (server, _dir) = server();
    let body = r#"{"topic":"k","data":"1"}"#;
    // The stray CRLF after the body (old browsers sent one) is skipped.
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         {PUBLISH}Content-Length: {}\r\n\r\n{body}\
         \r\nGET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let x = exchange(server.addr(), req.as_bytes());
    let statuses: Vec<u16> = x.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200], "{}", x.raw);
    assert_eq!(x.responses[2].body, b"<p>index</p>\n");
    assert!(x.closed);
    assert_eq!(server.handle().metrics().events_published(), 1);
}

/// The attack of finding 1, on a direct connection: a body of 65,536
/// filler bytes (all that upstream skipped) and a publish after them, all
/// inside the declared length.
#[test]
fn a_publish_hidden_past_64k_of_unread_body_never_runs() {
    let (server, _dir) = server();
    let mut body = vec![b'a'; 65_536];
    body.extend_from_slice(&smuggled());
    let mut req = format!(
        "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let x = exchange(server.addr(), &req);
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    assert_eq!(x.responses[0].status, 200);
    assert_eq!(x.responses[0].body, b"<p>index</p>\n");
    assert!(x.responses[0].closes(), "{}", x.raw);
    assert!(x.closed);
    assert_eq!(server.handle().metrics().events_published(), 0);
}

/// A response sent before its body was read says so, and what follows is
/// never run: a refused `POST /events` (405 from the dispatcher), whose
/// body is still on the socket, with a publish pipelined after it.
#[test]
fn an_answer_before_the_body_closes_the_connection() {
    let (server, _dir) = server();
    let body = vec![b'b'; 2000];
    let mut req = format!(
        "POST /events?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req.extend_from_slice(&smuggled());
    let x = exchange(server.addr(), &req);
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    assert_eq!(x.responses[0].status, 405);
    assert!(x.responses[0].closes(), "{}", x.raw);
    assert!(x.closed);
    assert_eq!(server.handle().metrics().events_published(), 0);
}

/// Sends `head` and a first part of its body, then one byte every 200 ms:
/// the answer must come within the body deadline (2 s here), not one
/// timeout per byte. Returns the answer and when it came.
fn trickle(head: &str) -> (Exchange, Duration, Running) {
    let (server, _dir) = server();
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    let started = Instant::now();
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(b"{\"topic\":\"slow\",\"data\":\"")
        .expect("send body");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut first = [0u8; 1];
    let mut answered = false;
    // 30 x 200 ms: far past the 2 s deadline, bounded all the same.
    for _ in 0..30 {
        match s.read(&mut first) {
            Ok(_) => {
                answered = true;
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                let _ = s.write_all(b"x");
            }
            Err(_) => {
                answered = true;
                break;
            }
        }
    }
    let took = started.elapsed();
    assert!(answered, "no answer after {took:?} of trickling");
    let mut x = read_to_close(&mut s);
    let mut raw = first.to_vec();
    raw.extend_from_slice(x.raw.as_bytes());
    x.responses = parse_responses(&raw);
    x.raw = String::from_utf8_lossy(&raw).into_owned();
    (x, took, server)
}

#[test]
fn a_trickled_body_has_one_deadline() {
    let (x, took, server) = trickle(&format!("{PUBLISH}Content-Length: 5000\r\n\r\n"));
    assert!(
        took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    assert_eq!(x.responses[0].status, 400, "{}", x.raw);
    assert!(x.responses[0].closes(), "{}", x.raw);
    assert!(x.closed);
    assert_eq!(server.handle().metrics().events_published(), 0);
}

#[test]
fn connection_upgrade_does_not_make_the_body_the_socket() {
    let (x, took, server) = trickle(&format!(
        "{PUBLISH}Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 5000\r\n\r\n"
    ));
    assert!(
        took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    assert_eq!(x.responses[0].status, 400, "{}", x.raw);
    assert!(x.responses[0].closes(), "{}", x.raw);
    assert!(x.closed);
    assert_eq!(server.handle().metrics().events_published(), 0);
}

/// `Connection: upgrade` with a complete body: framed by its length, so
/// the publish works and nothing after it is read as body.
#[test]
fn connection_upgrade_publish_is_framed_by_its_length() {
    let (server, _dir) = server();
    let body = r#"{"topic":"up","data":"x"}"#;
    let req = format!(
        "{PUBLISH}Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let x = exchange(server.addr(), req.as_bytes());
    assert_eq!(x.responses.len(), 1, "{}", x.raw);
    assert_eq!(x.responses[0].status, 200, "{}", x.raw);
    assert!(x.responses[0].closes(), "{}", x.raw);
    assert!(x.closed);
    assert_eq!(server.handle().metrics().events_published(), 1);
}

#[test]
fn last_event_id_still_reaches_the_handler() {
    let (server, _dir) = server();
    let hub = server.handle().hub();
    let first = hub.publish("replay", &Event::data("one")).expect("publish");
    hub.publish("replay", &Event::data("two")).expect("publish");
    let id = first.to_string();
    let mut stream = common::sse(
        server.addr(),
        "/events?topic=replay",
        &[("Last-Event-ID", id.as_str())],
    );
    let m = stream.next().expect("an event").expect("read");
    assert_eq!(m.data, "two");
}
