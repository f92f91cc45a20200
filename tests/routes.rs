//! Streams other than `/events`: custom stream routes (the seed's shape: a
//! handler gets the request and a `Sender`, produces on its own thread, and
//! the stream ends when it drops the sender), the binary's `/async` demo
//! built on them (42, about a second later 100, then the end), and
//! `/firehose` (only with the flag, exact sizes, ids 1..N, every event, in
//! order, and `400` for parameters out of range).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::bounded;
use tinysse::{Event, Item, SseReader};

// ---------------------------------------------------------------------------
// Custom stream routes
// ---------------------------------------------------------------------------

#[test]
fn handler_gets_the_request_and_its_sender_ends_the_stream() {
    let srv = start(builder().retry(None).stream_route("/count", |rq, tx| {
        let n: u32 = rq.query("n").and_then(|v| v.parse().ok()).unwrap_or(0);
        let who = rq.header("X-Who").unwrap_or("?").to_string();
        for i in 0..n {
            let ev = Event::data(format!("{who}-{i}"))
                .with_event("tick")
                .unwrap();
            if tx.send(ev).is_err() {
                return;
            }
        }
    }));
    let s = sse(srv.addr(), "/count?n=5", &[("X-Who", "ann")]);
    assert_eq!(s.status(), 200);
    let got: Vec<_> = s.map(|m| m.unwrap()).collect();
    assert_eq!(
        got.iter().map(|m| m.data.as_str()).collect::<Vec<_>>(),
        ["ann-0", "ann-1", "ann-2", "ann-3", "ann-4"]
    );
    assert!(got.iter().all(|m| m.event == "tick"));
    srv.stop();
}

#[test]
fn each_event_is_flushed_before_the_next_exists() {
    // The producer waits for the client to confirm each event before sending
    // the next one: if frames were buffered, this would deadlock and time out.
    let (ack_tx, ack_rx) = bounded::<()>(0);
    let srv = start(builder().stream_route("/lockstep", move |_rq, tx| {
        for i in 0..5 {
            if tx.send(Event::data(i.to_string())).is_err() {
                return;
            }
            if ack_rx.recv_timeout(Duration::from_secs(5)).is_err() {
                return;
            }
        }
    }));
    let mut s = sse(srv.addr(), "/lockstep", &[]);
    for i in 0..5 {
        let t = Instant::now();
        assert_eq!(s.next_message().unwrap().unwrap().data, i.to_string());
        assert!(t.elapsed() < Duration::from_secs(2));
        ack_tx.send(()).unwrap();
    }
    assert_eq!(s.next_message().unwrap(), None);
    srv.stop();
}

#[test]
fn a_client_that_leaves_stops_the_producer() {
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let srv = start(builder().queue(4).stream_route("/forever", move |_rq, tx| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tx.send(Event::data("x")).is_err() {
                flag.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }));
    let mut s = sse(srv.addr(), "/forever", &[]);
    assert!(s.next_message().unwrap().is_some());
    s.close();
    assert!(
        wait_until(Duration::from_secs(5), || stopped.load(Ordering::SeqCst)),
        "producer kept running after the client left"
    );
    assert!(wait_until(Duration::from_secs(5), || srv
        .handle()
        .metrics()
        .streams_active()
        == 0));
    srv.stop();
}

#[test]
fn custom_routes_count_towards_max_streams() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let srv = start(
        builder()
            .max_streams(2)
            .stream_route("/hold", move |_rq, tx| {
                let _ = tx.send(Event::data("held"));
                let _ = release_rx.recv_timeout(Duration::from_secs(10));
            }),
    );
    let mut a = sse(srv.addr(), "/hold", &[]);
    let mut b = sse(srv.addr(), "/hold", &[]);
    assert_eq!(a.next_message().unwrap().unwrap().data, "held");
    assert_eq!(b.next_message().unwrap().unwrap().data, "held");
    let r = get(srv.addr(), "/hold");
    assert_eq!(r.status, 503);
    assert!(r.header("Retry-After").is_some());
    drop(release_tx);
    assert_eq!(a.next_message().unwrap(), None);
    assert_eq!(b.next_message().unwrap(), None);
    srv.stop();
}

/// More streams than one relay watches (64): every stream still gets each
/// event as it is sent, and its end.
#[test]
fn many_streams_across_relays_each_get_every_event() {
    use std::sync::{Condvar, Mutex};
    const STREAMS: usize = 150;
    // The round every producer may send: most of the time each stream is
    // idle, so its relay watches its channel.
    let round = Arc::new((Mutex::new(0usize), Condvar::new()));
    let r = round.clone();
    let srv = start(
        builder()
            .max_streams(1000)
            .stream_route("/wait", move |_rq, tx| {
                let (lock, cv) = &*r;
                for i in 0..3 {
                    let guard = lock.lock().unwrap();
                    let (guard, timeout) = cv
                        .wait_timeout_while(guard, Duration::from_secs(10), |n| *n <= i)
                        .unwrap();
                    drop(guard);
                    if timeout.timed_out() || tx.send(Event::data(i.to_string())).is_err() {
                        return;
                    }
                }
            }),
    );
    let mut streams: Vec<_> = (0..STREAMS)
        .map(|_| sse(srv.addr(), "/wait", &[]))
        .collect();
    for i in 0..3 {
        *round.0.lock().unwrap() = i + 1;
        round.1.notify_all();
        for s in &mut streams {
            assert_eq!(s.next_message().unwrap().unwrap().data, i.to_string());
        }
    }
    for mut s in streams {
        assert_eq!(s.next_message().unwrap(), None);
    }
    srv.stop();
}

#[test]
fn a_route_handler_resumes_from_last_event_id() {
    let server = start(builder().retry(None).stream_route("/count", |rq, tx| {
        let after: u64 = rq.last_event_id().and_then(|v| v.parse().ok()).unwrap_or(0);
        for n in after + 1..=after + 2 {
            let ev = Event::data(n.to_string()).with_id(n.to_string()).unwrap();
            if tx.send(ev).is_err() {
                return;
            }
        }
    }));
    let read = |headers: &[(&str, &str)], target: &str| -> Vec<String> {
        let s = sse(server.addr(), target, headers);
        s.map(|m| m.unwrap().data).collect()
    };
    assert_eq!(read(&[], "/count"), ["1", "2"]);
    assert_eq!(read(&[("Last-Event-ID", "7")], "/count"), ["8", "9"]);
    assert_eq!(read(&[], "/count?lastEventId=3"), ["4", "5"]);
    // The header wins over the query parameter, as on /events.
    assert_eq!(
        read(&[("Last-Event-ID", "10")], "/count?lastEventId=3"),
        ["11", "12"]
    );
    assert!(server.stop());
}

#[test]
fn a_panicking_handler_ends_its_stream_cleanly() {
    let server = start(builder().retry(None).stream_route("/boom", |_rq, tx| {
        let _ = tx.send(Event::data("before"));
        panic!("handler bug");
    }));
    let s = sse(server.addr(), "/boom", &[]);
    let got: Vec<String> = s.map(|m| m.unwrap().data).collect();
    assert_eq!(got, ["before"]);
    // The server goes on serving.
    assert_eq!(get(server.addr(), "/healthz").status, 200);
    assert!(server.stop());
}

// ---------------------------------------------------------------------------
// /async, the binary's demo: a stream route built on the public API, so
// these tests run the real binary
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// /firehose
// ---------------------------------------------------------------------------

/// A server with the firehose on and a queue deep enough for bursts.
fn firehose_server() -> Running {
    start(builder().firehose(true).queue(256).history(16))
}

#[test]
fn firehose_sends_exactly_what_was_asked() {
    let srv = start(builder().firehose(true).retry(None));
    let s = sse(srv.addr(), "/firehose?count=300&size=777", &[]);
    assert_eq!(s.status(), 200);
    assert_eq!(s.header("Content-Type"), Some("text/event-stream"));
    let got: Vec<_> = s.map(|m| m.unwrap()).collect();
    assert_eq!(got.len(), 300);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.id, Some((i + 1).to_string()));
        assert_eq!(m.data.len(), 777);
    }
    srv.stop();
}

#[test]
fn firehose_parameters_are_checked() {
    let srv = start(builder().firehose(true));
    let a = srv.addr();
    for q in [
        "",
        "?count=10",
        "?size=10",
        "?count=0&size=10",
        "?count=10000001&size=10",
        "?count=10&size=0",
        "?count=10&size=65537",
        "?count=ten&size=10",
        "?count=-1&size=10",
    ] {
        let r = get(a, &format!("/firehose{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.body.lines().count(), 1, "{q}: {}", r.body);
    }
    assert_eq!(srv.handle().metrics().streams_active(), 0);
    // Both ends of the ranges are fine.
    let s = sse(a, "/firehose?count=1&size=65536", &[]);
    let all: Vec<_> = s.map(|m| m.unwrap()).collect();
    assert_eq!((all.len(), all[0].data.len()), (1, 65536));
    srv.stop();
}

#[test]
fn firehose_is_off_without_the_flag() {
    let srv = start(builder());
    assert_eq!(get(srv.addr(), "/firehose?count=1&size=1").status, 404);
    srv.stop();
}

#[test]
fn a_firehose_of_100000_events_arrives_complete_and_in_order() {
    let srv = firehose_server();
    let mut s = sse(srv.addr(), "/firehose?count=100000&size=16", &[]);
    assert_eq!(s.status(), 200);
    for i in 1..=100_000u64 {
        let m = s.next_message().unwrap().expect("an event");
        assert_eq!(m.id.as_deref(), Some(i.to_string().as_str()));
        assert_eq!(m.data, "x".repeat(16));
    }
    assert_eq!(s.next_message().unwrap(), None, "the response ends");
    srv.stop();
}

#[test]
fn several_firehose_clients_each_get_their_own_complete_stream() {
    let srv = firehose_server();
    let addr = srv.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = sse(addr, "/firehose?count=20000&size=100", &[]);
                assert_eq!(s.status(), 200);
                let mut n = 0u64;
                while let Some(m) = s.next_message().unwrap() {
                    n += 1;
                    assert_eq!(m.id.as_deref(), Some(n.to_string().as_str()));
                    assert_eq!(m.data.len(), 100);
                }
                n
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 20_000);
    }
    srv.stop();
}

#[test]
fn a_lone_firehose_event_is_flushed_and_the_stream_ends() {
    let srv = firehose_server();
    let mut s = sse(srv.addr(), "/firehose?count=1&size=5", &[]);
    assert_eq!(s.status(), 200);
    let m = s.next_message().unwrap().expect("the event");
    assert_eq!((m.id.as_deref(), m.data.as_str()), (Some("1"), "xxxxx"));
    assert_eq!(s.next_message().unwrap(), None);
    srv.stop();
}
