//! One client cannot hold up another. A client that stops reading: its
//! stream ends within the write timeout and its descriptors are released,
//! its subscription is evicted (and it can catch up from history after),
//! and every other subscriber still gets every event without waiting on it,
//! nor does a publish. And while each single-client attack of the
//! hostile-clients review runs, `/healthz` and a publish from another client
//! answer within a second (findings 2, 3, 4 and 11; docs/hardening.md).
//!
//! Each test measures other clients' latency (one also counts the whole
//! process's descriptors), which any other test running beside it would
//! add to: this file holds only such tests, and each takes
//! `common::alone()`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::tcp::{self, open_stream};
use common::*;
use tinysse::Event;

// ---------------------------------------------------------------------------
// A client that stops reading
// ---------------------------------------------------------------------------

#[test]
fn stuck_client_is_dropped_in_time_and_others_are_not_delayed() {
    // It counts the whole process's descriptors.
    let _alone = alone();
    let server = start(
        builder()
            .queue(100_000)
            .write_timeout(Some(Duration::from_secs(1))),
    );
    let addr = server.addr();
    let me = std::process::id();
    let fds_before = proc_fds(me);

    // Never read from: its socket buffers fill and the writer blocks.
    let stuck = open_stream(addr, "/events?topic=t").expect("stuck stream");
    let mut healthy = open_stream(addr, "/events?topic=t").expect("healthy stream");
    healthy
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(server.handle().metrics().streams_active(), 2);

    let payload = "x".repeat(32 * 1024);
    let started = Instant::now();
    let mut stuck_gone_at = None;
    let mut buf = vec![0u8; 256 * 1024];
    // Keep publishing: the healthy reader must get every event promptly
    // while the stuck one's writer is blocked, then cut off.
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(15) {
        i += 1;
        let sent = Instant::now();
        server
            .handle()
            .hub()
            .publish("t", &Event::data(format!("{i} {payload}")))
            .expect("publish");
        let marker = format!("data: {i} ");
        let mut got = Vec::new();
        while !got.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            let n = healthy.read(&mut buf).expect("healthy reader delayed");
            assert!(n > 0, "healthy stream ended");
            got.extend_from_slice(&buf[..n]);
            if got.len() > 1024 * 1024 {
                got.drain(..got.len() - 64 * 1024);
            }
        }
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "event {i} took {:?} to reach the healthy client",
            sent.elapsed()
        );
        if stuck_gone_at.is_none() && server.handle().metrics().streams_active() == 1 {
            stuck_gone_at = Some(started.elapsed());
            break;
        }
        // The test's pace, not a wait for something: a steady publisher.
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone = stuck_gone_at.expect("the stuck stream was never ended");
    // Buffers fill within a fraction of a second on loopback, then 1 s of
    // write timeout.
    assert!(
        gone < Duration::from_secs(6),
        "stuck stream ended after {gone:?}"
    );

    // Its two server-side descriptors are closed: what is left is our two
    // client sockets and the healthy stream's two on the server side.
    assert!(
        wait_until(Duration::from_secs(5), || proc_fds(me) <= fds_before + 4),
        "server kept the stuck connection's descriptors: {} open, {} before",
        proc_fds(me),
        fds_before
    );
    drop(stuck);
    drop(healthy);
    assert!(server.stop());
}

#[test]
fn a_stuck_subscriber_is_evicted_without_delaying_others() {
    let _alone = alone();
    let srv = start(builder().writer_threads(1).queue(16).max_streams(4096));
    // Subscribes, reads its head (sent once it is subscribed) and then
    // nothing more: its socket buffers fill, then its queue does.
    let mut stuck = tcp::connect(srv.addr());
    stuck
        .write_all(b"GET /events?topic=slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("request");
    tcp::read_head(&mut stuck).expect("the stuck one's head");
    let mut fast = sse(srv.addr(), "/events?topic=slow", &[]);
    let big = "x".repeat(32 * 1024);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t0 = Instant::now();
        srv.handle()
            .hub()
            .publish("slow", &Event::data(format!("{i} {big}")))
            .expect("publish");
        let m = fast.next_message().expect("read").expect("event");
        slowest = slowest.max(t0.elapsed());
        assert!(m.data.starts_with(&format!("{i} ")), "event {i}");
    }
    assert_eq!(
        srv.handle().metrics().subscribers_evicted(),
        1,
        "the stuck one"
    );
    // Waiting on the stuck one would take its write timeout (5 s).
    assert!(
        slowest < Duration::from_secs(3),
        "the fast subscriber waited {slowest:?} for an event"
    );
    // The evicted stream ends: after what was buffered, the terminator or
    // the end of the connection.
    stuck.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut sink = vec![0u8; 1 << 16];
    let mut tail = Vec::new();
    let ended = loop {
        match stuck.read(&mut sink) {
            Ok(0) => break true,
            Ok(n) => {
                tail.extend_from_slice(&sink[..n]);
                if tail.ends_with(b"\r\n0\r\n\r\n") {
                    break true;
                }
                if tail.len() > 64 {
                    tail.drain(..tail.len() - 64);
                }
            }
            Err(e) => panic!("the evicted stream did not end: {e}"),
        }
    };
    assert!(ended);
    assert!(srv.stop());
}

#[test]
fn a_stuck_subscriber_is_evicted_while_a_fast_one_gets_everything() {
    const EVENTS: usize = 400;
    let _alone = alone();
    let srv = start(
        builder()
            .queue(8)
            .write_timeout(Some(Duration::from_secs(30))),
    );
    let a = srv.addr();
    // The slow one connects and then never reads.
    let slow = sse(a, "/events?topic=big", &[]);
    let fast = sse(a, "/events?topic=big", &[]);
    // The fast reader says how far it has read.
    let (read_tx, read_rx) = crossbeam_channel::unbounded::<usize>();
    let reader = std::thread::spawn(move || {
        let mut fast = fast;
        let mut n = 0;
        while n < EVENTS {
            let m = fast.next_message().expect("fast reader").expect("event");
            assert_eq!(m.data.len(), 32 * 1024);
            n += 1;
            let _ = read_tx.send(n);
        }
        n
    });
    let payload = "p".repeat(32 * 1024);
    let hub = srv.handle().hub().clone();
    let mut worst = Duration::ZERO;
    let mut read = 0;
    for published in 0..EVENTS {
        // Never more than 4 ahead of the fast reader: fewer than its queue
        // (8) can wait for it, however slowly it or its writer runs, so
        // only the slow one's queue fills.
        while published >= read + 4 {
            read = read_rx
                .recv_timeout(TIMEOUT)
                .expect("the fast reader stalled");
        }
        let t = Instant::now();
        hub.publish("big", &Event::data(payload.as_str())).unwrap();
        worst = worst.max(t.elapsed());
    }
    assert_eq!(reader.join().unwrap(), EVENTS);
    // 400 x 32 KiB is far more than the socket buffers hold: the slow one's
    // queue filled up and it was dropped.
    assert!(wait_until(Duration::from_secs(5), || srv
        .handle()
        .metrics()
        .subscribers_evicted()
        == 1));
    assert!(
        worst < Duration::from_millis(100),
        "a publish took {worst:?}"
    );
    drop(slow);
    srv.stop();
}

#[test]
fn an_evicted_subscriber_sees_the_end_and_catches_up_from_history() {
    let _alone = alone();
    let srv = start(builder().queue(2).history(10_000));
    let a = srv.addr();
    let mut slow = sse(a, "/events?topic=c", &[]);
    let hub = srv.handle().hub().clone();
    let payload = "q".repeat(64 * 1024);
    // It reads one event (so it has an id to come back with), then stops.
    let mut ids = vec![hub.publish("c", &Event::data("first")).unwrap()];
    assert_eq!(
        slow.next_message().unwrap().unwrap().id,
        Some(ids[0].to_string())
    );
    // Publish until the hub evicts the subscriber that is not reading.
    let t = Instant::now();
    while srv.handle().metrics().subscribers_evicted() == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "never evicted");
        ids.push(hub.publish("c", &Event::data(payload.as_str())).unwrap());
    }
    // Now it reads: what was queued, then the end of the response.
    let mut seen = vec![ids[0]];
    while let Some(m) = slow.next_message().expect("clean end") {
        seen.push(m.id.unwrap().parse::<u64>().unwrap());
    }
    assert!(seen.len() < ids.len(), "nothing was missed");
    assert_eq!(seen[..], ids[..seen.len()]);
    // Reconnecting with the last id it saw fills in the rest, no gap.
    let last = seen.last().unwrap().to_string();
    let mut again = sse(a, "/events?topic=c", &[("Last-Event-ID", &last)]);
    for id in &ids[seen.len()..] {
        let m = again.next_message().unwrap().unwrap();
        assert_ne!(m.event, "gap");
        assert_eq!(m.id, Some(id.to_string()));
    }
    srv.stop();
}

// ---------------------------------------------------------------------------
// Stalls: each single-client attack of the hostile-clients review, with
// another client served meanwhile
// ---------------------------------------------------------------------------

/// What "answers at once" means here: far above loopback latency on a busy
/// 2-core machine, far below the 5 s and 10 s timeouts an attacker holds a
/// shared thread for when the server gets it wrong.
const BOUND: Duration = Duration::from_secs(1);

/// A short request on a fresh connection; its status and how long it took.
fn timed(addr: SocketAddr, raw: &[u8]) -> (u16, Duration) {
    let t = Instant::now();
    let (status, _) = tcp::exchange(addr, raw, Duration::from_secs(5));
    (status, t.elapsed())
}

/// Another client's `/healthz` and publish, repeated for `during` while an
/// attack runs: every answer must be right and within [`BOUND`].
fn others_are_served(addr: SocketAddr, during: Duration) {
    let health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let body = r#"{"topic":"other","data":"still here"}"#;
    let publish = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let end = Instant::now() + during;
    let mut rounds = 0;
    while Instant::now() < end || rounds < 3 {
        for (what, raw) in [("healthz", &health[..]), ("publish", publish.as_bytes())] {
            let (status, took) = timed(addr, raw);
            assert_eq!(status, 200, "{what} during the attack (round {rounds})");
            assert!(
                took < BOUND,
                "{what} took {took:?} during the attack (round {rounds})"
            );
        }
        rounds += 1;
        // The other client's pace, not a wait for something.
        thread::sleep(Duration::from_millis(100));
    }
}

/// Opens `n` connections that each send `raw` and then hold on, neither
/// sending more nor reading.
fn hold(addr: SocketAddr, n: usize, raw: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(raw).expect("send");
            s
        })
        .collect()
}

/// Finding 2: a request head whose body never comes (`POST /events` with a
/// `Content-Length: 2000`, or a publish) held the dispatcher for the read
/// timeout, each.
#[test]
fn bodies_that_never_come_hold_no_one_else() {
    let _alone = alone();
    let server = start(builder());
    let addr = server.addr();
    let mut held = hold(
        addr,
        5,
        b"POST /events?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
    );
    held.extend(hold(
        addr,
        5,
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 2000\r\n\r\n{\"topic\":",
    ));
    held.extend(hold(
        addr,
        5,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
    ));
    others_are_served(addr, Duration::from_secs(3));
    drop(held);
}

/// Finding 3: a connection that pipelines requests whose answers it never
/// reads (bad `GET /events`, whose `400` the dispatcher wrote; static files,
/// one per short-request worker) held a shared thread in each blocked write.
#[test]
fn pipelined_answers_never_read_hold_no_one_else() {
    let _alone = alone();
    let dir = std::env::temp_dir().join(format!("tinysse-stalls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.js"), "x".repeat(256 * 1024)).unwrap();
    let server = start(builder().public_dir(Some(dir.clone())));
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (stalled_tx, stalled) = crossbeam_channel::unbounded::<()>();
    let attackers: Vec<_> = [
        &b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
    ]
    .into_iter()
    .map(|one| {
        let stop = stop.clone();
        let stalled_tx = stalled_tx.clone();
        let burst = one.repeat(2000);
        thread::spawn(move || {
            // Opens another connection whenever its writes stall, as the
            // review's attacker did, keeping the earlier ones open and
            // never reading from any.
            let mut open = Vec::new();
            while !stop.load(Ordering::Relaxed) && open.len() < 20 {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    break;
                };
                s.set_write_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                while !stop.load(Ordering::Relaxed) && s.write_all(&burst).is_ok() {}
                // Its buffers are full (or the server closed it): the
                // attack is on.
                if open.is_empty() {
                    let _ = stalled_tx.send(());
                }
                open.push(s);
            }
        })
    })
    .collect();
    // Once every attacker has filled its first connection's buffers.
    for _ in 0..attackers.len() {
        stalled
            .recv_timeout(TIMEOUT)
            .expect("an attacker's writes never stalled");
    }
    others_are_served(addr, Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 4: connections that send their bodies a byte at a time held
/// every connection slot, so new clients waited in the backlog. At the cap,
/// the connection that has kept its slot longest for one request is shut
/// down to make room.
#[test]
fn slow_bodies_cannot_take_every_connection() {
    let _alone = alone();
    let server = start(builder().max_connections(Some(32)));
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let head = b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{";
    let mut conns = hold(addr, 60, head);
    // A byte now and then on each, so no per-read timeout ends them: the
    // attack's own pace.
    let trickle = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &mut conns {
                    let _ = s.write_all(b" ");
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Time for the 60 connections to reach the server: nothing counts
    // connections, so there is no signal to wait for (and the check below
    // runs for 3 s, so a slow start only shortens what it sees).
    thread::sleep(Duration::from_millis(300));
    others_are_served(addr, Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
}

/// Finding 11: `Connection: upgrade` made the body reader the raw socket,
/// read on a worker with no deadline.
#[test]
fn an_upgrade_publish_holds_no_one_else() {
    let _alone = alone();
    let server = start(builder());
    let addr = server.addr();
    let held = hold(
        addr,
        8,
        b"POST /publish HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"topic\":",
    );
    others_are_served(addr, Duration::from_secs(3));
    drop(held);
}
