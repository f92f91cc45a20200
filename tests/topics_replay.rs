//! Topics and replay: published events reach every subscriber of their
//! topics with growing ids, in order and complete under concurrent
//! publishers; topic names are checked; `Last-Event-ID` (header or query)
//! replays what was missed with no gap and no duplicate, even for
//! subscribers that keep reconnecting under load; and a `gap` event says
//! when history cannot cover it (rolled over, from before this server, or
//! an id from the future, up to the edge of `u64`: finding 12 of the
//! hostile-clients review, where `last + 1` overflowed and panicked).

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tinysse::{Event, EventStream, Item};

// ---------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------

#[test]
fn published_events_reach_subscribers_with_growing_ids() {
    let srv = start(builder().retry(Some(2000)));
    let a = srv.addr();
    let mut s1 = sse(a, "/events?topic=news", &[]);
    let mut s2 = sse(a, "/events?topic=news&topic=sport", &[]);
    assert_eq!(s1.status(), 200);
    assert_eq!(s1.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(s1.next_item().unwrap(), Some(Item::Retry(2000)));

    let id1 = publish_ok(a, "news", &json!("hello\nworld"));
    let id2 = publish_ok(a, "sport", &json!({"score": [1, 2]}));
    let r = publish_json(a, r#"{"topic":"news","data":"","event":"note"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let id3: u64 = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(id1 < id2 && id2 < id3);
    // Ids are seeded from the clock in microseconds: they outgrow any earlier run.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        id1 > now_us - 3_600_000_000 && id1 <= now_us,
        "{id1} vs {now_us}"
    );

    let m = s1.next_message().unwrap().unwrap();
    assert_eq!(
        (m.data.as_str(), m.id),
        ("hello\nworld", Some(id1.to_string()))
    );
    let m = s1.next_message().unwrap().unwrap();
    assert_eq!((m.event.as_str(), m.data.as_str()), ("note", ""));
    assert_eq!(m.id, Some(id3.to_string()));

    let got: Vec<_> = (0..3)
        .map(|_| s2.next_message().unwrap().unwrap())
        .collect();
    assert_eq!(got[0].data, "hello\nworld");
    assert_eq!(got[1].data, r#"{"score":[1,2]}"#);
    assert_eq!(got[1].id, Some(id2.to_string()));
    assert_eq!(got[2].event, "note");
    srv.stop();
}

#[test]
fn topic_names_are_validated() {
    let srv = start(builder());
    let a = srv.addr();
    for target in [
        "/events",
        "/events?topic=",
        "/events?topic=a%20b",
        "/events?topic=ok&topic=bad!",
        &format!("/events?topic={}", "x".repeat(129)),
    ] {
        let r = get(a, target);
        assert_eq!(r.status, 400, "{target}");
        assert!(!r.body.is_empty());
        assert_eq!(r.body.lines().count(), 1);
    }
    let fine = format!("/events?topic=A-z_0.9:/x&topic={}", "y".repeat(128));
    let s = sse(a, &fine, &[]);
    assert_eq!(s.status(), 200);
    srv.stop();
}

// ---------------------------------------------------------------------------
// Delivery: complete and in order, whoever publishes
// ---------------------------------------------------------------------------

#[test]
fn concurrent_publishers_reach_every_subscriber_in_order() {
    const SUBS: usize = 40;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 500;
    let srv = start(builder().writer_threads(1).queue(8192).max_streams(4096));
    let subs: Vec<EventStream> = (0..SUBS)
        .map(|_| sse(srv.addr(), "/events?topic=order", &[]))
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = srv.handle().hub().clone();
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
    assert_eq!(srv.handle().metrics().subscribers_evicted(), 0);
    assert!(srv.stop());
}

#[test]
fn a_burst_published_while_subscribed_arrives_complete_and_in_order() {
    let srv = start(builder().firehose(true).queue(8192).history(16));
    let mut subs: Vec<_> = (0..3)
        .map(|_| sse(srv.addr(), "/events?topic=burst", &[]))
        .collect();
    let ids: Vec<u64> = (0..5000)
        .map(|i| {
            srv.handle()
                .hub()
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
    assert_eq!(srv.handle().metrics().subscribers_evicted(), 0);
    srv.stop();
}

#[test]
fn concurrent_publishers_reach_every_subscriber_in_id_order() {
    let srv = start(builder().firehose(true).queue(8192).history(16));
    let mut subs: Vec<_> = (0..2)
        .map(|_| sse(srv.addr(), "/events?topic=many", &[]))
        .collect();
    let hub = srv.handle().hub().clone();
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
    srv.stop();
}

// ---------------------------------------------------------------------------
// Replay with Last-Event-ID, and gaps
// ---------------------------------------------------------------------------

#[test]
fn replay_from_header_or_query_then_live() {
    let srv = start(builder());
    let a = srv.addr();
    let ids: Vec<u64> = (0..5).map(|i| publish_ok(a, "r", &json!(i))).collect();

    let mut s = sse(
        a,
        "/events?topic=r",
        &[("Last-Event-ID", &ids[1].to_string())],
    );
    for (i, id) in ids.iter().enumerate().skip(2) {
        let m = s.next_message().unwrap().unwrap();
        assert_eq!(
            (m.data.clone(), m.id.clone()),
            (i.to_string(), Some(id.to_string()))
        );
    }
    let live = publish_ok(a, "r", &json!("live"));
    let m = s.next_message().unwrap().unwrap();
    assert_eq!((m.data.as_str(), m.id), ("live", Some(live.to_string())));

    // The query parameter works too, and the header wins over it.
    let mut q = sse(a, &format!("/events?topic=r&lastEventId={}", ids[3]), &[]);
    assert_eq!(q.next_message().unwrap().unwrap().data, "4");
    let mut both = sse(
        a,
        &format!("/events?topic=r&lastEventId={}", ids[0]),
        &[("Last-Event-ID", &ids[3].to_string())],
    );
    assert_eq!(both.next_message().unwrap().unwrap().data, "4");

    // Not a decimal number: live only.
    let mut junk = sse(a, "/events?topic=r", &[("Last-Event-ID", "abc")]);
    let next = publish_ok(a, "r", &json!("after"));
    let m = junk.next_message().unwrap().unwrap();
    assert_eq!(m.id, Some(next.to_string()));
    srv.stop();
}

#[test]
fn reconnecting_subscribers_see_every_id_exactly_once_in_order() {
    const TOPICS: [&str; 2] = ["alpha", "beta"];
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 400;
    let srv = start(builder().history(100_000).queue(100_000));
    let addr = srv.addr();

    // Subscribers first (live from the start), on one topic or both, each
    // dropping its connection at pseudo-random moments and reconnecting with
    // the id of the last event it saw.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<HashMap<&str, u64>>(1);
    let subscribers: Vec<_> = (0..9)
        .map(|n| {
            // "both" stands for a subscription to both topics.
            let topic = ["alpha", "beta", "both"][n % 3];
            let query = if topic == "both" {
                "topic=alpha&topic=beta".to_string()
            } else {
                format!("topic={topic}")
            };
            let first = sse(addr, &format!("/events?{query}"), &[]);
            assert_eq!(first.status(), 200);
            let done_rx = done_rx.clone();
            std::thread::spawn(move || {
                let mut seen: Vec<u64> = Vec::new();
                let mut seed = 0x2545_F491_4F6C_DD1D_u64 ^ (n as u64 + 1);
                let mut stream = Some(first);
                let mut last_wanted: Option<u64> = None;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(Instant::now() < deadline, "subscriber {n} timed out");
                    if last_wanted.is_none()
                        && let Ok(m) = done_rx.try_recv()
                    {
                        last_wanted = Some(if topic == "both" {
                            m["alpha"].max(m["beta"])
                        } else {
                            m[topic]
                        });
                    }
                    if let (Some(want), Some(&got)) = (last_wanted, seen.last())
                        && got >= want
                    {
                        return (topic, seen);
                    }
                    let s = match stream.as_mut() {
                        Some(s) => s,
                        None => {
                            let last = seen.last().map(|i| i.to_string()).unwrap_or_default();
                            stream = Some(sse(
                                addr,
                                &format!("/events?{query}"),
                                &[("Last-Event-ID", &last)],
                            ));
                            continue;
                        }
                    };
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    match s.next_message() {
                        Ok(Some(m)) => {
                            assert_ne!(m.event, "gap", "subscriber {n}: unexpected gap");
                            seen.push(m.id.expect("id").parse().unwrap());
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            if seed.is_multiple_of(97) {
                                stream.take().unwrap().close();
                            }
                        }
                        Ok(None) => panic!("subscriber {n}: stream ended"),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            // Idle: reconnect now and then anyway.
                            stream.take().unwrap().close();
                        }
                        Err(e) => panic!("subscriber {n}: {e}"),
                    }
                }
            })
        })
        .collect();

    // Publishers run truly in parallel (no lock of the test's around a
    // publish): each keeps its own record, merged by id afterwards, since a
    // topic's order is its id order.
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = srv.handle().hub().clone();
            std::thread::spawn(move || {
                (0..PER_PUBLISHER)
                    .map(|i| {
                        let topic = TOPICS[(p + i) % 2];
                        let ev = Event::data(format!("{p}-{i}"));
                        (topic, hub.publish(topic, &ev).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut published: HashMap<&str, Vec<u64>> = HashMap::new();
    for p in publishers {
        for (topic, id) in p.join().unwrap() {
            published.entry(topic).or_default().push(id);
        }
    }
    for ids in published.values_mut() {
        ids.sort_unstable();
    }
    let last: HashMap<&str, u64> = TOPICS
        .iter()
        .map(|t| (*t, *published[t].last().unwrap()))
        .collect();
    for _ in 0..subscribers.len() {
        done_tx.send(last.clone()).unwrap();
    }
    for s in subscribers {
        let (topic, seen) = s.join().unwrap();
        let expected: Vec<u64> = if topic == "both" {
            let mut all: Vec<u64> = TOPICS.iter().flat_map(|t| published[t].clone()).collect();
            all.sort_unstable();
            all
        } else {
            published[topic].clone()
        };
        assert_eq!(seen.len(), expected.len(), "{topic}: count");
        assert_eq!(seen, expected, "{topic}: ids differ");
    }
    srv.stop();
}

#[test]
fn rolled_over_history_sends_a_gap_event_first() {
    let srv = start(builder().history(3));
    let a = srv.addr();
    let ids: Vec<u64> = (0..6).map(|i| publish_ok(a, "g", &json!(i))).collect();
    let mut s = sse(
        a,
        "/events?topic=g",
        &[("Last-Event-ID", &ids[0].to_string())],
    );
    let gap = s.next_message().unwrap().unwrap();
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.id, None, "the gap event carries no id");
    let v: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(
        v,
        json!({"lastEventId": ids[0].to_string(), "oldestId": ids[3].to_string()})
    );
    for (i, id) in ids.iter().enumerate().skip(3) {
        let m = s.next_message().unwrap().unwrap();
        assert_eq!((m.data, m.id), (i.to_string(), Some(id.to_string())));
    }
    // Inside the window: no gap.
    let mut ok = sse(
        a,
        "/events?topic=g",
        &[("Last-Event-ID", &ids[3].to_string())],
    );
    let m = ok.next_message().unwrap().unwrap();
    assert_eq!(m.id, Some(ids[4].to_string()));
    srv.stop();
}

#[test]
fn an_id_from_before_this_server_started_is_a_gap() {
    let srv = start(builder());
    let a = srv.addr();
    // An id from an earlier run, with nothing published since: whatever came
    // between is unknown to this server, so it must say so.
    let mut s = sse(a, "/events?topic=old", &[("Last-Event-ID", "12345")]);
    let gap = s.next_message().unwrap().unwrap();
    assert_eq!(gap.event, "gap");
    let v: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(v, json!({"lastEventId": "12345", "oldestId": null}));
    let id = publish_ok(a, "old", &json!("new"));
    assert_eq!(s.next_message().unwrap().unwrap().id, Some(id.to_string()));
    srv.stop();
}

/// Opens a stream with `headers` and checks it starts with a gap naming
/// `asked` and nothing to replay, then gets a live event.
fn expect_gap_then_live(
    addr: std::net::SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    asked: &str,
    topic: &str,
) {
    let mut s = sse(addr, target, headers);
    assert_eq!(s.status(), 200, "{target} {headers:?}");
    let gap = s.next_message().expect("a gap event").expect("open stream");
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.id, None);
    let v: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(v, json!({"lastEventId": asked, "oldestId": null}));
    let id = publish_ok(addr, topic, &json!("live"));
    let m = s.next_message().unwrap().unwrap();
    assert_eq!((m.id, m.data.as_str()), (Some(id.to_string()), "live"));
}

#[test]
fn the_largest_last_event_id_opens_a_stream_with_a_gap() {
    let srv = start(builder());
    let a = srv.addr();
    publish_ok(a, "t", &json!("before"));
    let max = u64::MAX.to_string();
    expect_gap_then_live(a, "/events?topic=t", &[("Last-Event-ID", &max)], &max, "t");
    expect_gap_then_live(
        a,
        &format!("/events?topic=t&lastEventId={max}"),
        &[],
        &max,
        "t",
    );
    // Past u64: still a number larger than any id, so the same.
    expect_gap_then_live(
        a,
        "/events?topic=t",
        &[("Last-Event-ID", "99999999999999999999999")],
        &max,
        "t",
    );
    // One past the newest id issued is from the future too.
    let newest = publish_ok(a, "u", &json!(1));
    let next = (newest + 1).to_string();
    expect_gap_then_live(
        a,
        "/events?topic=u",
        &[("Last-Event-ID", &next)],
        &next,
        "u",
    );
    // Not a decimal number: ignored, live only.
    for bad in ["+5", "-1", "0x10", "1e3"] {
        let mut s = sse(a, "/events?topic=u", &[("Last-Event-ID", bad)]);
        assert_eq!(s.status(), 200);
        let id = publish_ok(a, "u", &json!(bad));
        let m = s.next_message().unwrap().unwrap();
        assert_eq!(m.id, Some(id.to_string()), "{bad}: {m:?}");
    }
    // Everyone else is still served.
    assert_eq!(get(a, "/healthz").status, 200);
    let mut other = sse(a, "/events?topic=t", &[]);
    let id = publish_ok(a, "t", &json!("after"));
    assert_eq!(
        other.next_message().unwrap().unwrap().id,
        Some(id.to_string())
    );
    srv.stop();
}
