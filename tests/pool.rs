//! The writer pool: many `/events` subscribers served by one writer thread,
//! with no loss and no reordering, a lone event written at once, a stuck
//! subscriber evicted without holding up the others, and heartbeats on time.

use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use tinysse::{Event, EventStream, Server, ServerHandle};

fn server(queue: usize, heartbeat: Option<Duration>) -> ServerHandle {
    Server::builder()
        .addr("127.0.0.1:0")
        .writer_threads(1)
        .queue(queue)
        .heartbeat(heartbeat)
        .max_streams(4096)
        .start()
        .expect("server starts")
}

fn subscribe(srv: &ServerHandle, topic: &str) -> EventStream {
    let s = EventStream::connect(srv.addr(), &format!("/events?topic={topic}"), &[])
        .expect("subscribe");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

#[test]
fn concurrent_publishers_reach_every_subscriber_in_order() {
    const SUBS: usize = 40;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 500;
    let srv = server(8192, None);
    let subs: Vec<EventStream> = (0..SUBS).map(|_| subscribe(&srv, "order")).collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = srv.hub().clone();
            thread::spawn(move || {
                for i in 0..EACH {
                    hub.publish("order", &Event::data(format!("{p} {i}")))
                        .expect("publish");
                }
            })
        })
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                let mut next = [0usize; PUBLISHERS];
                let mut last_id = 0u64;
                for _ in 0..PUBLISHERS * EACH {
                    let m = s.next_message().expect("read").expect("an event");
                    let id: u64 = m.id.as_deref().unwrap_or("").parse().expect("numeric id");
                    assert!(id > last_id, "id {id} after {last_id}");
                    last_id = id;
                    let (p, i) = m.data.split_once(' ').expect("p i");
                    let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
                    assert_eq!(i, next[p], "publisher {p}: out of order or lost");
                    next[p] += 1;
                }
                next
            })
        })
        .collect();
    for p in publishers {
        p.join().expect("publisher");
    }
    for r in readers {
        assert_eq!(r.join().expect("reader"), [EACH; PUBLISHERS]);
    }
    assert_eq!(srv.metrics().subscribers_evicted(), 0);
    assert!(srv.join());
}

#[test]
fn a_lone_event_is_written_at_once() {
    let srv = server(256, None);
    let mut subs: Vec<EventStream> = (0..20).map(|_| subscribe(&srv, "lone")).collect();
    for round in 0..5 {
        let t0 = Instant::now();
        srv.hub()
            .publish("lone", &Event::data(format!("r{round}")))
            .expect("publish");
        for s in &mut subs {
            let m = s.next_message().expect("read").expect("event");
            assert_eq!(m.data, format!("r{round}"));
        }
        // No heartbeat and nothing else published: only the publish itself
        // can have sent it (a loaded machine may take its time).
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(srv.join());
}

#[test]
fn a_stuck_subscriber_is_evicted_without_delaying_others() {
    let srv = server(16, None);
    // Subscribes and then never reads: its socket buffers fill, then its
    // queue does.
    let mut stuck = TcpStream::connect(srv.addr()).expect("connect");
    std::io::Write::write_all(
        &mut stuck,
        b"GET /events?topic=slow HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .expect("request");
    let mut fast = subscribe(&srv, "slow");
    // Both are subscribed once the fast one has its head (same writer
    // thread, registered in order).
    thread::sleep(Duration::from_millis(100));
    let big = "x".repeat(32 * 1024);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t0 = Instant::now();
        srv.hub()
            .publish("slow", &Event::data(format!("{i} {big}")))
            .expect("publish");
        let m = fast.next_message().expect("read").expect("event");
        slowest = slowest.max(t0.elapsed());
        assert!(m.data.starts_with(&format!("{i} ")), "event {i}");
    }
    assert_eq!(srv.metrics().subscribers_evicted(), 1, "the stuck one");
    // Waiting on the stuck one would take its write timeout (5 s).
    assert!(
        slowest < Duration::from_secs(3),
        "the fast subscriber waited {slowest:?} for an event"
    );
    // The evicted stream ends: after what was buffered, the terminator or
    // the end of the connection.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
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
    assert!(srv.join());
}

#[test]
fn heartbeats_are_on_time_for_many_streams() {
    const STREAMS: usize = 300;
    let srv = server(256, Some(Duration::from_millis(300)));
    let mut streams: Vec<TcpStream> = (0..STREAMS)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr()).expect("connect");
            std::io::Write::write_all(
                &mut s,
                b"GET /events?topic=beat HTTP/1.1\r\nHost: t\r\n\r\n",
            )
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
    assert!(srv.join());
}

#[test]
fn http_1_0_streams_are_unchunked_and_closed_at_the_end() {
    let srv = server(256, None);
    let mut s = TcpStream::connect(srv.addr()).expect("connect");
    std::io::Write::write_all(&mut s, b"GET /events?topic=old HTTP/1.0\r\n\r\n").expect("request");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
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
    srv.hub()
        .publish("old", &Event::data("hi"))
        .expect("publish");
    srv.shutdown();
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
    assert!(srv.join());
}
