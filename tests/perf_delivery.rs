//! What the throughput work must never trade away: every event arrives,
//! in order, and a lone event is flushed without waiting for company.

mod common;

use common::{builder, publish_ok, sse};
use tinysse::{EventStream, ServerHandle};

/// A server with the firehose on and a queue deep enough for bursts.
fn server(queue: usize) -> ServerHandle {
    builder()
        .firehose(true)
        .queue(queue)
        .history(16)
        .start()
        .expect("server starts")
}

/// An open stream (with the common read timeout) that answered 200.
fn connect(addr: std::net::SocketAddr, target: &str) -> EventStream {
    let s = sse(addr, target, &[]);
    assert_eq!(s.status(), 200, "{target}");
    s
}

/// Publishes `data` as text over HTTP; the event's id.
fn publish(addr: std::net::SocketAddr, topic: &str, data: &str) -> u64 {
    publish_ok(addr, topic, &serde_json::json!(data))
}
use tinysse::Event;

#[test]
fn a_firehose_of_100000_events_arrives_complete_and_in_order() {
    let srv = server(256);
    let mut s = connect(srv.addr(), "/firehose?count=100000&size=16");
    for i in 1..=100_000u64 {
        let m = s.next_message().unwrap().expect("an event");
        assert_eq!(m.id.as_deref(), Some(i.to_string().as_str()));
        assert_eq!(m.data, "x".repeat(16));
    }
    assert_eq!(s.next_message().unwrap(), None, "the response ends");
    srv.shutdown();
    srv.join();
}

#[test]
fn several_firehose_clients_each_get_their_own_complete_stream() {
    let srv = server(256);
    let addr = srv.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr, "/firehose?count=20000&size=100");
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
    srv.shutdown();
    srv.join();
}

#[test]
fn a_burst_published_while_subscribed_arrives_complete_and_in_order() {
    let srv = server(8192);
    let mut subs: Vec<_> = (0..3)
        .map(|_| connect(srv.addr(), "/events?topic=burst"))
        .collect();
    let ids: Vec<u64> = (0..5000)
        .map(|i| {
            srv.hub()
                .publish("burst", &Event::data(i.to_string()))
                .unwrap()
        })
        .collect();
    for s in &mut subs {
        for (i, id) in ids.iter().enumerate() {
            let m = s.next_message().unwrap().expect("an event");
            assert_eq!(m.id, Some(id.to_string()));
            assert_eq!(m.data, i.to_string());
        }
    }
    assert_eq!(srv.metrics().subscribers_evicted(), 0);
    srv.shutdown();
    srv.join();
}

#[test]
fn concurrent_publishers_reach_every_subscriber_in_id_order() {
    let srv = server(8192);
    let mut subs: Vec<_> = (0..2)
        .map(|_| connect(srv.addr(), "/events?topic=many"))
        .collect();
    let hub = srv.hub().clone();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for k in 0..1000 {
                    hub.publish("many", &Event::data(format!("{p}:{k}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for s in &mut subs {
        let mut last_id = 0u64;
        let mut next = [0u32; 4];
        for _ in 0..4000 {
            let m = s.next_message().unwrap().expect("an event");
            let id: u64 = m.id.unwrap().parse().unwrap();
            assert!(id > last_id, "ids grow: {id} after {last_id}");
            last_id = id;
            let (p, k) = m.data.split_once(':').unwrap();
            let p: usize = p.parse().unwrap();
            assert_eq!(k.parse::<u32>().unwrap(), next[p], "publisher {p} in order");
            next[p] += 1;
        }
        assert_eq!(next, [1000; 4]);
    }
    srv.shutdown();
    srv.join();
}

#[test]
fn a_lone_event_arrives_before_a_second_is_published() {
    let srv = server(256);
    let mut s = connect(srv.addr(), "/events?topic=lone");
    // Over HTTP, like a real publisher, and the read below blocks until the
    // event is on the wire: nothing else is ever published to push it out.
    let id = publish(srv.addr(), "lone", "only");
    let m = s.next_message().unwrap().expect("the lone event");
    assert_eq!(m.data, "only");
    assert_eq!(m.id, Some(id.to_string()));
    let second = publish(srv.addr(), "lone", "second");
    let m = s.next_message().unwrap().expect("the second event");
    assert_eq!(m.id, Some(second.to_string()));
    srv.shutdown();
    srv.join();
}

#[test]
fn a_lone_firehose_event_is_flushed_and_the_stream_ends() {
    let srv = server(256);
    let mut s = connect(srv.addr(), "/firehose?count=1&size=5");
    let m = s.next_message().unwrap().expect("the event");
    assert_eq!((m.id.as_deref(), m.data.as_str()), (Some("1"), "xxxxx"));
    assert_eq!(s.next_message().unwrap(), None);
    srv.shutdown();
    srv.join();
}

#[test]
fn shutdown_ends_every_open_stream() {
    let srv = server(256);
    let mut subs: Vec<_> = (0..20)
        .map(|_| connect(srv.addr(), "/events?topic=stop"))
        .collect();
    srv.hub().publish("stop", &Event::data("before")).unwrap();
    srv.shutdown();
    for s in &mut subs {
        assert_eq!(s.next_message().unwrap().unwrap().data, "before");
        assert_eq!(s.next_message().unwrap(), None, "the response ends");
    }
    assert!(srv.join(), "every stream ended in time");
}
