//! Where `retry:` and heartbeats land on the wire, and what three kinds of
//! client make of it:
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
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tinysse::{Event, Item, SseReader};

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
