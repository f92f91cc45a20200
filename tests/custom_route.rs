//! Custom stream routes: the seed's shape (a handler gets the request and a
//! `Sender`, the stream ends when the sender drops).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::bounded;
use tinysse::Event;

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
