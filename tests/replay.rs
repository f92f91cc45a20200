//! Replay with `Last-Event-ID` under load: no gap, no duplicate, and a `gap`
//! event when history can no longer cover what was missed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tinysse::Event;

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
