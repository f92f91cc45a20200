//! Graceful shutdown: every open stream sees the end of its response, and
//! an event published before the shutdown is written before that end,
//! through the library handle and through SIGTERM/SIGINT to the binary,
//! within the contract's 2 s, with a thousand streams open and a publisher
//! running; and the port is released.
//!
//! The thousand-stream test holds a thousand sockets of this process and
//! a deadline: it takes `common::alone()`, every other test here
//! `common::shared()`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::tcp;
use common::*;
use tinysse::Event;

#[test]
fn handle_shutdown_ends_open_streams() {
    let _shared = shared();
    let srv = start(builder().stream_route("/silent", |_rq, tx| {
        // Keeps the stream open until the client or the server goes.
        while tx.send(Event::comment("")).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
    let mut streams = Vec::new();
    for i in 0..10 {
        let target = if i % 2 == 0 {
            "/events?topic=t"
        } else {
            "/silent"
        };
        streams.push(sse(srv.addr(), target, &[]));
    }
    assert!(wait_until(Duration::from_secs(5), || srv
        .handle()
        .metrics()
        .streams_active()
        == 10));
    let t = Instant::now();
    srv.handle().shutdown();
    for mut s in streams {
        while s.next_message().expect("clean end of response").is_some() {}
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(srv.stop(), "streams did not all end");
}

#[test]
fn after_shutdown_the_port_is_released() {
    let _shared = shared();
    let srv = start(builder());
    let addr = srv.addr();
    assert!(srv.stop());
    assert!(
        wait_until(Duration::from_secs(2), || std::net::TcpStream::connect(
            addr
        )
        .is_err()),
        "still accepting after shutdown"
    );
}

fn signal_ends_streams_and_exits_zero(sig: &str) {
    let mut bin = Bin::start(&["--addr", "127.0.0.1:0", "--heartbeat", "0"]);
    let mut a = sse(bin.addr, "/events?topic=x", &[]);
    let mut b = sse(bin.addr, "/async", &[]);
    assert_eq!(b.next_message().unwrap().unwrap().data, r#"{"val":42}"#);
    let t = Instant::now();
    bin.signal(sig);
    while a.next_message().expect("clean end").is_some() {}
    while b.next_message().expect("clean end").is_some() {}
    let code = bin.wait_exit(Duration::from_secs(3)).and_then(|s| s.code());
    assert_eq!(code, Some(0));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn sigterm_ends_streams_and_exits_zero() {
    let _shared = shared();
    signal_ends_streams_and_exits_zero("TERM");
}

#[test]
fn sigint_ends_streams_and_exits_zero() {
    let _shared = shared();
    signal_ends_streams_and_exits_zero("INT");
}

#[test]
fn shutdown_ends_every_open_stream() {
    let _shared = shared();
    let srv = start(builder().firehose(true).queue(256).history(16));
    let mut subs: Vec<_> = (0..20)
        .map(|_| sse(srv.addr(), "/events?topic=stop", &[]))
        .collect();
    srv.handle()
        .hub()
        .publish("stop", &Event::data("before"))
        .unwrap();
    srv.handle().shutdown();
    for s in &mut subs {
        assert_eq!(s.next_message().unwrap().unwrap().data, "before");
        assert_eq!(s.next_message().unwrap(), None, "the response ends");
    }
    assert!(srv.stop(), "every stream ended in time");
}

#[test]
fn an_event_published_before_shutdown_is_written_before_the_end() {
    let _shared = shared();
    // The writer used to pick the shutdown arm over queued frames at random
    // (about one run in twenty): repeat enough to catch that.
    for round in 0..100 {
        let server = start(builder());
        let mut s = sse(server.addr(), "/events?topic=t", &[]);
        server
            .handle()
            .hub()
            .publish("t", &Event::data("last"))
            .unwrap();
        assert!(server.stop());
        let got = s.next_message().unwrap().map(|m| m.data);
        assert_eq!(got.as_deref(), Some("last"), "round {round}");
        assert_eq!(s.next_message().unwrap(), None);
    }
}

#[test]
fn sigterm_ends_a_thousand_streams_and_exits_zero_in_time() {
    // A thousand sockets of this process's own, and a 2 s deadline.
    let _alone = alone();
    let mut bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--max-streams",
        "2000",
    ]);
    let addr = bin.addr;
    let mut streams = Vec::new();
    for i in 0..1000 {
        streams
            .push(tcp::open_stream(addr, &format!("/events?topic=t{}", i % 10)).expect("stream"));
    }
    assert!(wait_until(Duration::from_secs(5), || {
        metric(addr, "tinysse_streams_active") == Some(1000)
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Shutting down: a 503, no answer, or (once the process
                // has exited, which takes well under 2 s with the writer
                // pool) a refused connection.
                if tcp::publish(addr, &format!("t{}", n % 10), "tick") != 200 {
                    break;
                }
                n += 1;
                // The publisher's pace, not a wait for something.
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    // The publisher is running.
    assert!(wait_until(Duration::from_secs(5), || {
        metric(addr, "tinysse_events_published_total").is_some_and(|n| n >= 20)
    }));
    let t0 = Instant::now();
    bin.sigterm();
    let deadline = t0 + Duration::from_secs(2);
    let mut unterminated = 0;
    for s in &mut streams {
        let left = deadline.saturating_duration_since(Instant::now());
        let (ended, _) = tcp::read_until(s, b"0\r\n\r\n", left.max(Duration::from_millis(10)));
        if !ended {
            unterminated += 1;
        }
    }
    let status = bin.wait_exit(deadline.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().expect("publisher");
    assert!(
        published > 10,
        "the publisher only managed {published} events"
    );
    assert_eq!(unterminated, 0, "streams without the chunked terminator");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {:?}",
        t0.elapsed()
    );
}
