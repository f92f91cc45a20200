//! The seed's walking skeleton: `/async` sends 42, about a second later 100,
//! then the end marker, and the response ends. It is the binary's demo (a
//! stream route built on the library's public API), so these tests run the
//! real binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tinysse::{Item, SseReader};

#[test]
fn async_sends_42_then_100_then_end_with_seed_timing() {
    let bin = Bin::start(&["--addr", "127.0.0.1:0", "--retry", "1500"]);
    let t0 = Instant::now();
    let mut s = sse(bin.addr, "/async", &[]);
    assert_eq!(s.status(), 200);
    assert_eq!(s.header("Content-Type"), Some("text/event-stream"));
    assert!(s.header("Cache-Control").unwrap().starts_with("no-cache"));
    assert_eq!(s.header("X-Accel-Buffering"), Some("no"));
    assert_eq!(s.header("Content-Length"), None);
    assert_eq!(s.header("Content-Encoding"), None);

    assert_eq!(s.next_item().unwrap(), Some(Item::Retry(1500)));
    let first = s.next_message().unwrap().expect("first event");
    let t1 = t0.elapsed();
    assert_eq!(first.data, r#"{"val":42}"#);
    assert!(t1 < Duration::from_millis(500), "first event after {t1:?}");

    let second = s.next_message().unwrap().expect("second event");
    let gap = t0.elapsed() - t1;
    assert_eq!(second.data, r#"{"val":100}"#);
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_millis(1600),
        "second event {gap:?} after the first"
    );

    let end = s.next_message().unwrap().expect("end event");
    assert_eq!(end.data, r#"{"msg":"end"}"#);
    // Then the response itself ends, at once.
    let before = Instant::now();
    assert_eq!(s.next_message().unwrap(), None);
    assert!(before.elapsed() < Duration::from_millis(500));
    bin.stop();
}

#[test]
fn async_is_off_without_the_demo() {
    let bin = Bin::start(&["--addr", "127.0.0.1:0", "--no-demo"]);
    assert_eq!(get(bin.addr, "/async").status, 404);
    bin.stop();
}

#[test]
fn async_carries_the_cors_origin() {
    let origin = "https://app.example";
    let bin = Bin::start(&["--addr", "127.0.0.1:0", "--cors-origin", origin]);
    let s = sse(bin.addr, "/async", &[("Origin", origin)]);
    assert_eq!(s.status(), 200);
    assert_eq!(s.header("Access-Control-Allow-Origin"), Some(origin));
    s.close();
    bin.stop();
}

#[test]
fn many_async_streams_run_side_by_side() {
    let bin = Bin::start(&["--addr", "127.0.0.1:0"]);
    let addr = bin.addr;
    let t0 = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let s = sse(addr, "/async", &[]);
                s.map(|m| m.unwrap().data).collect::<Vec<_>>()
            })
        })
        .collect();
    for c in clients {
        assert_eq!(
            c.join().unwrap(),
            [r#"{"val":42}"#, r#"{"val":100}"#, r#"{"msg":"end"}"#]
        );
    }
    // Concurrent, not one after the other.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    bin.stop();
}

#[test]
fn http_1_0_client_gets_the_stream_and_a_closed_connection() {
    use std::io::{Read, Write};
    let bin = Bin::start(&["--addr", "127.0.0.1:0"]);
    let mut s = std::net::TcpStream::connect(bin.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /async HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(!head.contains("chunked"));
    // The events, unframed (no chunk sizes, no terminator), after the
    // stream's opening `retry:`; the closed connection ended the response.
    assert!(!body.contains('\r'), "{body:?}");
    assert!(
        body.ends_with("data: {\"val\":42}\n\ndata: {\"val\":100}\n\ndata: {\"msg\":\"end\"}\n\n"),
        "{body:?}"
    );
    let got: Vec<String> = SseReader::new(body.as_bytes())
        .map(|m| m.unwrap().data)
        .collect();
    assert_eq!(got, [r#"{"val":42}"#, r#"{"val":100}"#, r#"{"msg":"end"}"#]);
    bin.stop();
}
