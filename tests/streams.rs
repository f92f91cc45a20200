//! What every SSE response gives a client, whatever feeds it: the head
//! (`HEAD` answers the `GET` head and opens nothing, a `Date`, no waiting
//! for a first event), each event flushed as it is published, heartbeats on
//! idle streams, HTTP/1.0 streams unchunked and closed at the end, and the
//! exact bytes on the wire: where `retry:` and heartbeats land and what
//! three kinds of real client make of them, and a round trip of random
//! events through the encoder, the server and the reader.
//!
//! The clients modelled by the wire-format tests:
//!
//! - a WHATWG parser (the crate's own `SseReader`, as browsers do): applies
//!   `retry:` when it reads the line, ignores comments, dispatches blocks
//!   with data;
//! - a data-block-only client (eventsource-client, reqwest-eventsource):
//!   dispatches only blocks with data and reads `retry:` only from those;
//! - an every-block client (httpx-sse): hands the application a message for
//!   every block that ends with a blank line, unless nothing at all was set
//!   (no event, data, retry, and no id seen yet).
//!
//! `retry:` must reach the second kind, and the third must get no empty
//! message: `retry:` is a line of the first event's block and a heartbeat
//! is a comment line that does not end a block.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::tcp::{self, header, split_head};
use common::*;
use serde_json::json;
use tinysse::{Event, EventStream, Item, SseReader};

// ---------------------------------------------------------------------------
// Heads
// ---------------------------------------------------------------------------

/// Asserts a `Date` within a few seconds of now, in the IMF-fixdate form.
fn assert_date(headers: &[(String, String)]) {
    let d = header(headers, "Date").unwrap_or_else(|| panic!("no Date in {headers:?}"));
    assert!(
        d.ends_with(" GMT") && d.len() == 29,
        "not an IMF-fixdate: {d}"
    );
    let t = httpdate::parse_http_date(d).expect("a valid HTTP date");
    let now = SystemTime::now();
    let off = now.duration_since(t).or_else(|e| Ok::<_, ()>(e.duration()));
    assert!(off.unwrap() < Duration::from_secs(5), "Date {d} is not now");
}

/// `HEAD` then a pipelined `GET /healthz` on one connection: the `HEAD`
/// answer must have no body at all, or the second answer would not start
/// right after its head.
fn head_then_healthz(addr: SocketAddr, target: &str) -> (u16, Vec<(String, String)>) {
    let req = format!(
        "HEAD {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let (out, closed) = tcp::send_to_close(addr, req.as_bytes(), TIMEOUT);
    let out = String::from_utf8_lossy(&out);
    assert!(closed, "the server did not close the connection: {out:?}");
    let (status, headers, rest) = split_head(&out);
    let (second, _, body) = split_head(rest);
    assert_eq!(
        (second, body),
        (200, "ok\n"),
        "after HEAD {target}: {out:?}"
    );
    (status, headers)
}

#[test]
fn head_on_events_answers_the_get_head_and_opens_nothing() {
    let srv = start(builder().cors_origin(Some("http://app.example".into())));
    let a = srv.addr();
    let m = srv.handle().metrics();
    let (status, headers) = head_then_healthz(a, "/events?topic=h");
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(header(&headers, "Content-Type"), Some("text/event-stream"));
    assert!(
        header(&headers, "Cache-Control")
            .unwrap()
            .starts_with("no-cache")
    );
    assert_eq!(header(&headers, "X-Accel-Buffering"), Some("no"));
    assert_eq!(
        header(&headers, "Access-Control-Allow-Origin"),
        Some("http://app.example")
    );
    assert_eq!(header(&headers, "Content-Length"), None, "{headers:?}");
    assert_date(&headers);
    // Nothing was opened: no stream counted, no topic made, no subscriber.
    assert_eq!((m.streams_active(), m.streams_total()), (0, 0));
    assert_eq!(srv.handle().hub().topic_count(), 0);
    // The GET's own errors, as the GET would get them.
    assert_eq!(head_then_healthz(a, "/events").0, 400);
    assert_eq!(head_then_healthz(a, "/events?topic=a%20b").0, 400);
    assert_eq!(head_then_healthz(a, "/events?topic=%zz").0, 400);
    let too_many: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
    assert_eq!(head_then_healthz(a, &format!("/events?{too_many}")).0, 400);
    assert_eq!((m.streams_active(), m.streams_total()), (0, 0));
    srv.stop();
}

#[test]
fn head_over_max_streams_gets_the_get_503() {
    let srv = start(builder().max_streams(1));
    let a = srv.addr();
    let mut open = sse(a, "/events?topic=busy", &[]);
    assert_eq!(srv.handle().metrics().streams_active(), 1);
    let (status, headers) = head_then_healthz(a, "/events?topic=busy");
    assert_eq!(status, 503);
    assert!(header(&headers, "Retry-After").is_some(), "{headers:?}");
    // The open stream is untouched.
    srv.handle()
        .hub()
        .publish("busy", &Event::data("still here"))
        .unwrap();
    assert_eq!(open.next_message().unwrap().unwrap().data, "still here");
    srv.stop();
}

#[test]
fn head_on_a_custom_route_starts_no_producer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let srv = start(builder().stream_route("/custom", move |_rq, tx| {
        seen.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(Event::data("from the producer"));
    }));
    let a = srv.addr();
    let (status, headers) = head_then_healthz(a, "/custom?x=1");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "Content-Type"), Some("text/event-stream"));
    assert_date(&headers);
    assert_eq!(srv.handle().metrics().streams_total(), 0);
    // A GET does start it: the count above could have seen a producer.
    let got: Vec<String> = sse(a, "/custom", &[]).map(|m| m.unwrap().data).collect();
    assert_eq!(got, ["from the producer"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "HEAD ran the handler");
    assert_eq!(srv.handle().metrics().streams_total(), 1);
    srv.stop();
}

#[test]
fn head_on_the_firehose_checks_its_parameters_only() {
    let srv = start(builder().firehose(true));
    let a = srv.addr();
    assert_eq!(head_then_healthz(a, "/firehose?count=0&size=1").0, 400);
    assert_eq!(head_then_healthz(a, "/firehose?count=5&size=8").0, 200);
    assert_eq!(srv.handle().metrics().streams_total(), 0);
    // Other methods still get 405, now allowing HEAD too.
    let r = request(a, "DELETE", "/firehose", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    srv.stop();
}

#[test]
fn every_stream_head_carries_a_date() {
    let srv = start(builder().stream_route("/one", |_rq, tx| {
        let _ = tx.send(Event::data("x"));
    }));
    let a = srv.addr();
    // /events over HTTP/1.1 (the writer pool) and HTTP/1.0, and a custom
    // route (a thread of its own).
    for (target, version) in [
        ("/events?topic=d", "1.1"),
        ("/events?topic=d", "1.0"),
        ("/one", "1.1"),
    ] {
        let mut s = tcp::connect(a);
        write!(s, "GET {target} HTTP/{version}\r\nHost: {a}\r\n\r\n").unwrap();
        let head = tcp::read_head(&mut s).expect("a whole head");
        let text = String::from_utf8(head).unwrap();
        let (status, headers, _) = split_head(&text);
        assert_eq!(status, 200, "{target}");
        assert_date(&headers);
    }
    srv.stop();
}

/// Not held back until the first heartbeat (the default, 15 s) when there
/// is no `retry:` to send with it.
#[test]
fn a_stream_without_retry_gets_its_head_at_once() {
    // The library's defaults, the heartbeat's included.
    let srv = start(tinysse::Server::builder().addr("127.0.0.1:0").retry(None));
    let started = Instant::now();
    let s = EventStream::connect(srv.addr(), "/events?topic=t", &[]).unwrap();
    assert_eq!(s.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    s.close();
    srv.stop();
}

// ---------------------------------------------------------------------------
// Flushing: an event is written as it is published
// ---------------------------------------------------------------------------

/// The writer pool's server for these tests: one writer thread serving
/// every stream.
fn one_writer(heartbeat: Option<Duration>) -> Running {
    start(
        builder()
            .writer_threads(1)
            .queue(256)
            .heartbeat(heartbeat)
            .max_streams(4096),
    )
}

#[test]
fn a_lone_event_is_written_at_once() {
    let srv = one_writer(None);
    let mut subs: Vec<EventStream> = (0..20)
        .map(|_| sse(srv.addr(), "/events?topic=lone", &[]))
        .collect();
    for round in 0..5 {
        let t0 = Instant::now();
        srv.handle()
            .hub()
            .publish("lone", &Event::data(format!("r{round}")))
            .expect("publish");
        for s in &mut subs {
            let m = s.next_message().expect("read").expect("event");
            assert_eq!(m.data, format!("r{round}"));
        }
        // No heartbeat and nothing else published: only the publish itself
        // can have sent it (a loaded machine may take its time).
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // The test's timing, not a wait for something: the writer goes idle
        // between rounds, so each round's event is a lone one again.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(srv.stop());
}

#[test]
fn a_lone_event_arrives_before_a_second_is_published() {
    let srv = start(builder().firehose(true).queue(256).history(16));
    let mut s = sse(srv.addr(), "/events?topic=lone", &[]);
    assert_eq!(s.status(), 200);
    // Over HTTP, like a real publisher, and the read below blocks until the
    // event is on the wire: nothing else is ever published to push it out.
    let id = publish_ok(srv.addr(), "lone", &json!("only"));
    let m = s.next_message().unwrap().expect("the lone event");
    assert_eq!(m.data, "only");
    assert_eq!(m.id, Some(id.to_string()));
    let second = publish_ok(srv.addr(), "lone", &json!("second"));
    let m = s.next_message().unwrap().expect("the second event");
    assert_eq!(m.id, Some(second.to_string()));
    srv.stop();
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

#[test]
fn idle_streams_get_heartbeats() {
    let srv = start(
        builder()
            .heartbeat(Some(Duration::from_millis(300)))
            .retry(None),
    );
    let mut s = sse(srv.addr(), "/events?topic=quiet", &[]);
    let t = Instant::now();
    assert_eq!(
        s.next_item().unwrap(),
        Some(Item::Comment("keep-alive".into()))
    );
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(250) && e < Duration::from_millis(1500),
        "{e:?}"
    );
    // An event resets the idle timer; the next heartbeat comes after it.
    publish_ok(srv.addr(), "quiet", &json!(1));
    assert!(matches!(s.next_item().unwrap(), Some(Item::Event(_))));
    assert_eq!(
        s.next_item().unwrap(),
        Some(Item::Comment("keep-alive".into()))
    );
    srv.stop();
}

#[test]
fn heartbeats_are_on_time_for_many_streams() {
    const STREAMS: usize = 300;
    let srv = one_writer(Some(Duration::from_millis(300)));
    let mut streams: Vec<TcpStream> = (0..STREAMS)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr()).expect("connect");
            s.write_all(b"GET /events?topic=beat HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("request");
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            s
        })
        .collect();
    let mut beats = vec![0usize; STREAMS];
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_millis(1900);
    while Instant::now() < until {
        for (i, s) in streams.iter_mut().enumerate() {
            if let Ok(n) = s.read(&mut buf) {
                beats[i] += buf[..n]
                    .windows(12)
                    .filter(|w| w == b": keep-alive")
                    .count();
            }
        }
    }
    // Every 300 ms for 1.9 s is 6; allow for a loaded machine.
    let fewest = *beats.iter().min().unwrap();
    assert!(
        fewest >= 3,
        "a stream had only {fewest} heartbeats: {beats:?}"
    );
    drop(streams);
    assert!(srv.stop());
}

// ---------------------------------------------------------------------------
// HTTP/1.0
// ---------------------------------------------------------------------------

#[test]
fn http_1_0_streams_are_unchunked_and_closed_at_the_end() {
    let srv = one_writer(None);
    let mut s = TcpStream::connect(srv.addr()).expect("connect");
    s.write_all(b"GET /events?topic=old HTTP/1.0\r\n\r\n")
        .expect("request");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(11).any(|w| w == b"retry: 2000") {
        let n = s.read(&mut buf).expect("head and retry");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    srv.handle()
        .hub()
        .publish("old", &Event::data("hi"))
        .expect("publish");
    srv.handle().shutdown();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the stream did not end: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let body = &text[text.find("\r\n\r\n").expect("end of head") + 4..];
    // No chunk framing: the frames as they are, then the connection closes.
    // `retry:` is a line of the first event's block.
    assert!(body.starts_with("retry: 2000\nid: "), "{body:?}");
    assert!(body.ends_with("\ndata: hi\n\n"), "{body:?}");
    assert!(!body.contains('\r'), "{body:?}");
    assert!(srv.stop());
}

// ---------------------------------------------------------------------------
// The wire format, as three kinds of client read it
// ---------------------------------------------------------------------------

/// A stream read as raw bytes: the head, then the body, de-chunked.
struct Raw {
    sock: TcpStream,
    chunked: bool,
    /// Bytes read past the head, not yet de-chunked.
    wire: Vec<u8>,
    body: Vec<u8>,
    /// The terminator (chunked) or the end of the connection was seen.
    ended: bool,
}

impl Raw {
    fn open(addr: SocketAddr, target: &str, http10: bool, headers: &[(&str, &str)]) -> Raw {
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let version = if http10 { "1.0" } else { "1.1" };
        let mut req = format!("GET {target} HTTP/{version}\r\nHost: t\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).expect("request");
        let mut raw = Raw {
            sock,
            chunked: false,
            wire: Vec::new(),
            body: Vec::new(),
            ended: false,
        };
        let deadline = Instant::now() + TIMEOUT;
        let split = loop {
            if let Some(i) = raw.wire.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no response head");
            assert!(raw.read_some(), "closed before the head");
        };
        let head = String::from_utf8(raw.wire[..split].to_vec()).expect("ASCII head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        raw.chunked = head
            .to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked\r\n");
        assert_eq!(raw.chunked, !http10, "{head}");
        raw.wire.drain(..split);
        raw
    }

    /// Reads what arrives within a moment; `false` at the end of the connection.
    fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match self.sock.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.wire.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Moves complete chunks (or, unchunked, every byte) into `body`.
    fn decode(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.wire);
            return;
        }
        loop {
            let Some(nl) = self.wire.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.wire[..nl]).expect("hex size");
            let n = usize::from_str_radix(size, 16).expect("hex size");
            if n == 0 {
                if self.wire.len() >= nl + 4 {
                    assert_eq!(&self.wire[nl..nl + 4], b"\r\n\r\n", "terminator");
                    self.ended = true;
                    self.wire.drain(..nl + 4);
                }
                return;
            }
            if self.wire.len() < nl + 2 + n + 2 {
                return;
            }
            assert_eq!(&self.wire[nl + 2 + n..nl + 4 + n], b"\r\n", "chunk end");
            self.body.extend_from_slice(&self.wire[nl + 2..nl + 2 + n]);
            self.wire.drain(..nl + 4 + n);
        }
    }

    /// Reads until the body holds `what` (or the stream ends).
    fn until(&mut self, what: &[u8]) -> &[u8] {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.decode();
            if self.ended || self.body.windows(what.len()).any(|w| w == what) {
                return &self.body;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} never came; body so far: {:?}",
                String::from_utf8_lossy(what),
                String::from_utf8_lossy(&self.body)
            );
            if !self.read_some() {
                return &self.body;
            }
        }
    }

    /// Reads until the response ends; the whole body.
    fn read_to_end(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.decode();
            if self.ended {
                return self.body.clone();
            }
            assert!(Instant::now() < deadline, "the response did not end");
            if !self.read_some() {
                self.decode();
                assert!(!self.chunked || self.ended, "closed without the terminator");
                self.ended = true;
            }
        }
    }
}

/// A client that dispatches only blocks with data, and reads `retry:` only
/// from those (eventsource-client, reqwest-eventsource).
fn data_block_client(body: &[u8]) -> (Vec<String>, Option<u64>) {
    let text = String::from_utf8(body.to_vec()).expect("UTF-8 body");
    let mut events = Vec::new();
    let mut retry = None;
    // Only complete blocks: what follows the last blank line is unfinished.
    let complete = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
    for block in complete.split("\n\n").filter(|b| !b.is_empty()) {
        let mut data: Option<String> = None;
        let mut block_retry = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                data = Some(match data {
                    Some(d) => format!("{d}\n{v}"),
                    None => v.to_string(),
                });
            } else if let Some(v) = line.strip_prefix("retry:") {
                block_retry = v.trim().parse().ok();
            }
        }
        if let Some(d) = data {
            events.push(d);
            retry = block_retry.or(retry);
        }
    }
    (events, retry)
}

/// httpx-sse's decoder: every line-block ended by a blank line is a message
/// (data possibly empty) unless no field at all was set and no id seen.
fn every_block_client(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8(body.to_vec()).expect("UTF-8 body");
    let mut out = Vec::new();
    let (mut event, mut data, mut retry) = (String::new(), Vec::<String>::new(), None::<u64>);
    let mut last_id: Option<String> = None;
    // A line without its LF is unfinished: not read yet.
    for line in text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
    {
        if line.is_empty() {
            if event.is_empty() && data.is_empty() && retry.is_none() && last_id.is_none() {
                continue;
            }
            out.push(data.join("\n"));
            event.clear();
            data.clear();
            retry = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => event = value.to_string(),
            "data" => data.push(value.to_string()),
            "id" => last_id = Some(value.to_string()),
            "retry" => retry = value.parse().ok(),
            _ => {}
        }
    }
    out
}

/// Every item a WHATWG parser yields.
fn whatwg(body: &[u8]) -> Vec<Item> {
    let mut r = SseReader::new(body);
    let mut items = Vec::new();
    while let Some(i) = r.next_item().expect("parse") {
        items.push(i);
    }
    items
}

fn event_data(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(m) => Some(m.data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn retry_is_a_line_of_the_first_events_block() {
    for http10 in [false, true] {
        let srv = start(builder().retry(Some(2000)));
        let mut s = Raw::open(srv.addr(), "/events?topic=w", http10, &[]);
        // Sent at once, with the head: no blank line after it.
        assert_eq!(s.until(b"retry: 2000\n"), b"retry: 2000\n");
        let id = publish_ok(srv.addr(), "w", &json!("one"));
        let body = s.until(b"data: one\n\n").to_vec();
        assert_eq!(
            body,
            format!("retry: 2000\nid: {id}\ndata: one\n\n").as_bytes()
        );
        srv.handle().shutdown();
        let body = s.read_to_end();
        assert_eq!(
            body,
            format!("retry: 2000\nid: {id}\ndata: one\n\n").as_bytes()
        );

        let (events, retry) = data_block_client(&body);
        assert_eq!((events, retry), (vec!["one".to_string()], Some(2000)));
        assert_eq!(every_block_client(&body), ["one"]);
        let items = whatwg(&body);
        assert_eq!(items[0], Item::Retry(2000));
        assert_eq!(event_data(&items), ["one"]);
        assert!(srv.stop());
    }
}

#[test]
fn heartbeats_are_comment_lines_that_end_no_block() {
    let srv = start(
        builder()
            .retry(Some(2000))
            .heartbeat(Some(Duration::from_millis(100))),
    );
    let mut s = Raw::open(srv.addr(), "/events?topic=hb", false, &[]);
    s.until(b": keep-alive\n: keep-alive\n");
    let id = publish_ok(srv.addr(), "hb", &json!(1));
    s.until(b"data: 1\n\n");
    // Two more after the event (ids seen: httpx-sse would now yield an
    // empty message for any block without data).
    let after = s.body.len();
    let deadline = Instant::now() + TIMEOUT;
    while s.body[after..]
        .windows(12)
        .filter(|w| w == b": keep-alive")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no heartbeats after the event");
        s.read_some();
        s.decode();
    }
    publish_ok(srv.addr(), "hb", &json!(2));
    let body = s.until(b"data: 2\n\n").to_vec();
    let text = String::from_utf8(body.clone()).unwrap();
    // retry, heartbeats, the event; heartbeats, the event: nothing else.
    let mut rest = text.strip_prefix("retry: 2000\n").expect(&text);
    let beats = |r: &mut &str| {
        let mut n = 0;
        while let Some(x) = r.strip_prefix(": keep-alive\n") {
            *r = x;
            n += 1;
        }
        n
    };
    assert!(beats(&mut rest) >= 2, "{text:?}");
    rest = rest
        .strip_prefix(&format!("id: {id}\ndata: 1\n\n"))
        .expect(&text);
    assert!(beats(&mut rest) >= 2, "{text:?}");
    assert!(
        rest.starts_with("id: ") && rest.ends_with("\ndata: 2\n\n"),
        "{text:?}"
    );

    let (events, retry) = data_block_client(&body);
    assert_eq!((events, retry), (vec!["1".into(), "2".into()], Some(2000)));
    assert_eq!(every_block_client(&body), ["1", "2"]);
    let items = whatwg(&body);
    assert_eq!(items[0], Item::Retry(2000));
    assert!(items.contains(&Item::Comment("keep-alive".into())));
    assert_eq!(event_data(&items), ["1", "2"]);
    assert!(srv.stop());
}

/// The gap event, the replay and the live events after `retry:`, over
/// HTTP/1.1 and HTTP/1.0, to the end of the stream.
#[test]
fn gap_replay_and_end_parse_exactly() {
    for http10 in [false, true] {
        let srv = start(builder().retry(Some(1500)).history(2));
        let ids: Vec<u64> = (0..4)
            .map(|i| publish_ok(srv.addr(), "r", &json!(i)))
            .collect();
        let last = ids[0].to_string();
        let mut s = Raw::open(
            srv.addr(),
            "/events?topic=r",
            http10,
            &[("Last-Event-ID", &last)],
        );
        s.until(b"data: 3\n\n");
        let live = publish_ok(srv.addr(), "r", &json!("live"));
        s.until(b"data: live\n\n");
        srv.handle().shutdown();
        let body = s.read_to_end();
        let gap = format!(
            "event: gap\ndata: {{\"lastEventId\":\"{last}\",\"oldestId\":\"{}\"}}\n\n",
            ids[2]
        );
        let expect = format!(
            "retry: 1500\n{gap}id: {}\ndata: 2\n\nid: {}\ndata: 3\n\nid: {live}\ndata: live\n\n",
            ids[2], ids[3]
        );
        assert_eq!(String::from_utf8(body.clone()).unwrap(), expect);

        let items = whatwg(&body);
        assert_eq!(items[0], Item::Retry(1500));
        let Item::Event(g) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!((g.event.as_str(), g.id.as_deref()), ("gap", None));
        assert_eq!(event_data(&items)[1..], ["2", "3", "live"]);
        let Some(Item::Event(end)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(end.last_event_id, live.to_string());

        let (events, retry) = data_block_client(&body);
        assert_eq!(events.len(), 4);
        assert_eq!(retry, Some(1500));
        assert!(every_block_client(&body).iter().all(|d| !d.is_empty()));
        assert_eq!(every_block_client(&body).len(), 4);
        assert!(srv.stop());
    }
}

/// A custom route's stream follows the same rules: `retry:` with the first
/// event, and the end of the stream where the producer stops.
#[test]
fn a_custom_route_starts_and_ends_the_same_way() {
    let srv = start(
        builder()
            .retry(Some(700))
            .stream_route("/three", |_rq, tx| {
                for i in 0..3 {
                    if tx.send(Event::data(i.to_string())).is_err() {
                        return;
                    }
                }
            }),
    );
    for http10 in [false, true] {
        let body = Raw::open(srv.addr(), "/three", http10, &[]).read_to_end();
        assert_eq!(body, b"retry: 700\ndata: 0\n\ndata: 1\n\ndata: 2\n\n");
        let (events, retry) = data_block_client(&body);
        assert_eq!((events.len(), retry), (3, Some(700)));
        assert_eq!(every_block_client(&body), ["0", "1", "2"]);
    }
    assert!(srv.stop());
}

/// The test parsers themselves tell the two formats apart: the old one
/// (`retry:` and heartbeats as blocks of their own) loses the retry for the
/// first client and gives the second empty messages.
#[test]
fn the_client_models_see_what_the_real_clients_saw() {
    let old = b"retry: 2000\n\n: keep-alive\n\nid: 1\ndata: a\n\n: keep-alive\n\n";
    assert_eq!(data_block_client(old), (vec!["a".to_string()], None));
    assert_eq!(every_block_client(old), ["", "a", ""]);
    let new = b"retry: 2000\n: keep-alive\nid: 1\ndata: a\n\n: keep-alive\n";
    assert_eq!(data_block_client(new), (vec!["a".to_string()], Some(2000)));
    assert_eq!(every_block_client(new), ["a"]);
}

// ---------------------------------------------------------------------------
// Round trip: whatever the encoder writes, the reader gives back, for many
// random events with awkward line breaks and unicode, in memory and through
// the real server
// ---------------------------------------------------------------------------

/// A small deterministic generator, so a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn text(&mut self, max: u64, breaks: bool) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", " ", "  ", ":", "data:", "id:", "é", "日本", "🦀", "\u{feff}", "\t", "\u{0}",
            "%", "\\", "\"", "{}", "x y",
        ];
        const BREAKS: &[&str] = &["\n", "\r", "\r\n", "\n\n", "\r\r", "\n\r"];
        let len = self.below(max + 1);
        let mut s = String::new();
        for _ in 0..len {
            if breaks && self.below(4) == 0 {
                s.push_str(BREAKS[self.below(BREAKS.len() as u64) as usize]);
            } else {
                s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
        }
        s
    }
}

/// What the reader must give back for `data`: every break becomes LF.
fn normalise(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn random_event(rng: &mut Rng) -> Event {
    let mut ev = Event::data(rng.text(12, true));
    if rng.below(2) == 0 {
        ev = ev.with_event(rng.text(4, false)).unwrap();
    }
    if rng.below(2) == 0 {
        let id = rng.text(4, false).replace('\0', "");
        ev = ev.with_id(id).unwrap();
    }
    ev
}

#[test]
fn reader_gives_back_what_the_encoder_wrote() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let events: Vec<Event> = (0..rng.below(20) + 1)
            .map(|_| random_event(&mut rng))
            .collect();
        let mut wire = Vec::new();
        if seed % 3 == 0 {
            wire.extend_from_slice(b"\xEF\xBB\xBF");
        }
        for ev in &events {
            ev.encode_into(&mut wire);
            if rng.below(3) == 0 {
                Event::comment(rng.text(5, true)).encode_into(&mut wire);
            }
        }
        let mut reader = SseReader::new(&wire[..]);
        let mut last_id = String::new();
        for (i, ev) in events.iter().enumerate() {
            let m = reader
                .next_message()
                .unwrap()
                .unwrap_or_else(|| panic!("seed {seed}: event {i} missing"));
            assert_eq!(
                m.data,
                normalise(ev.data_text().unwrap()),
                "seed {seed} event {i}"
            );
            let expected_type = ev.event_type().unwrap_or("message");
            assert_eq!(m.event, expected_type, "seed {seed} event {i}");
            if let Some(id) = ev.id() {
                last_id = id.to_string();
            }
            assert_eq!(m.last_event_id, last_id, "seed {seed} event {i}");
            assert_eq!(m.id.as_deref(), ev.id(), "seed {seed} event {i}");
        }
        assert_eq!(
            reader.next_message().unwrap(),
            None,
            "seed {seed}: extra event"
        );
    }
}

#[test]
fn round_trip_through_the_server() {
    let srv = start(builder());
    let mut s = sse(srv.addr(), "/events?topic=rt", &[]);
    let mut rng = Rng(0xDEAD_BEEF);
    let mut sent = Vec::new();
    for _ in 0..200 {
        let ev = Event::data(rng.text(30, true))
            .with_event(rng.text(3, false))
            .unwrap();
        let id = srv.handle().hub().publish("rt", &ev).unwrap();
        sent.push((id, ev));
    }
    for (id, ev) in sent {
        let m = s.next_message().unwrap().expect("event");
        assert_eq!(m.id, Some(id.to_string()));
        assert_eq!(m.data, normalise(ev.data_text().unwrap()));
        assert_eq!(m.event, ev.event_type().unwrap_or("message"));
    }
    srv.stop();
}
