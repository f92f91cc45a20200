//! Response heads the contract's HTTP rules ask for: `HEAD` on a stream
//! endpoint answers the `GET` head and opens nothing; every SSE head carries
//! `Date`; static files carry `X-Content-Type-Options: nosniff`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::*;
use tinysse::Event;

/// Sends `request` and reads until the server closes the connection.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// One response head's status and headers, and what followed it.
fn split(response: &str) -> (u16, Vec<(String, String)>, &str) {
    let (head, rest) = response.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, rest)
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Asserts a `Date` within a few seconds of now, in the IMF-fixdate form.
fn assert_date(headers: &[(String, String)]) {
    let d = value(headers, "Date").unwrap_or_else(|| panic!("no Date in {headers:?}"));
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
    let out = exchange(
        addr,
        &format!(
            "HEAD {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    );
    let (status, headers, rest) = split(&out);
    let (second, _, body) = split(rest);
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
    assert_eq!(value(&headers, "Content-Type"), Some("text/event-stream"));
    assert!(
        value(&headers, "Cache-Control")
            .unwrap()
            .starts_with("no-cache")
    );
    assert_eq!(value(&headers, "X-Accel-Buffering"), Some("no"));
    assert_eq!(
        value(&headers, "Access-Control-Allow-Origin"),
        Some("http://app.example")
    );
    assert_eq!(value(&headers, "Content-Length"), None, "{headers:?}");
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
    assert!(value(&headers, "Retry-After").is_some(), "{headers:?}");
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
    assert_eq!(value(&headers, "Content-Type"), Some("text/event-stream"));
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
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(s, "GET {target} HTTP/{version}\r\nHost: {a}\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            assert_eq!(s.read(&mut b).unwrap(), 1, "head cut short: {head:?}");
            head.push(b[0]);
        }
        let text = String::from_utf8(head).unwrap();
        let (status, headers, _) = split(&text);
        assert_eq!(status, 200, "{target}");
        assert_date(&headers);
    }
    srv.stop();
}

#[test]
fn static_files_carry_nosniff() {
    let dir = std::env::temp_dir().join(format!("tinysse-nosniff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
    std::fs::write(dir.join("notes.txt"), "<script>alert(1)</script>").unwrap();
    let srv = start(builder().public_dir(Some(dir.clone())));
    let a = srv.addr();
    for target in ["/", "/notes.txt"] {
        let r = get(a, target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{target}"
        );
    }
    let out = exchange(
        a,
        &format!("HEAD /notes.txt HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"),
    );
    let (status, headers, body) = split(&out);
    assert_eq!((status, body), (200, ""));
    assert_eq!(value(&headers, "X-Content-Type-Options"), Some("nosniff"));
    srv.stop();
    let _ = std::fs::remove_dir_all(dir);
}
