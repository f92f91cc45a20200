//! Publishing and subscribing over HTTP: wire format, ids, multiple topics,
//! `Last-Event-ID`, heartbeats and `--max-streams`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tinysse::Item;

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
fn form_bodies_publish_text() {
    let srv = start(builder());
    let a = srv.addr();
    let mut s = sse(a, "/events?topic=f", &[]);
    let r = request(
        a,
        "POST",
        "/publish",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"topic=f&data=caf%C3%A9+au+lait&event=drink",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = s.next_message().unwrap().unwrap();
    assert_eq!(
        (m.event.as_str(), m.data.as_str()),
        ("drink", "café au lait")
    );
    srv.stop();
}

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

#[test]
fn idle_streams_get_heartbeats() {
    let srv = start(
        builder()
            .heartbeat(Some(Duration::from_millis(300)))
            .retry(None),
    );
    let mut s = sse(srv.addr(), "/events?topic=quiet", &[]);
    let t = Instant::now();
    assert_eq!(
        s.next_item().unwrap(),
        Some(Item::Comment("keep-alive".into()))
    );
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(250) && e < Duration::from_millis(1500),
        "{e:?}"
    );
    // An event resets the idle timer; the next heartbeat comes after it.
    publish_ok(srv.addr(), "quiet", &json!(1));
    assert!(matches!(s.next_item().unwrap(), Some(Item::Event(_))));
    assert_eq!(
        s.next_item().unwrap(),
        Some(Item::Comment("keep-alive".into()))
    );
    srv.stop();
}

#[test]
fn over_max_streams_gets_503_and_others_are_untouched() {
    let srv = start(builder().max_streams(3));
    let a = srv.addr();
    let mut open: Vec<_> = (0..3).map(|_| sse(a, "/events?topic=m", &[])).collect();
    assert!(wait_until(Duration::from_secs(5), || srv
        .handle()
        .metrics()
        .streams_active()
        == 3));
    let r = get(a, "/events?topic=m");
    assert_eq!(r.status, 503);
    assert!(r.header("Retry-After").unwrap().parse::<u32>().unwrap() > 0);
    let id = publish_ok(a, "m", &json!("still here"));
    for s in &mut open {
        assert_eq!(s.next_message().unwrap().unwrap().id, Some(id.to_string()));
    }
    // A slot frees up when a stream ends; the writer learns the client left
    // from a failed write, so keep publishing until it does.
    open.pop().unwrap().close();
    assert!(wait_until(Duration::from_secs(5), || {
        publish_ok(a, "m", &json!("wake the writer"));
        srv.handle().metrics().streams_active() == 2
    }));
    assert_eq!(sse(a, "/events?topic=m", &[]).status(), 200);
    srv.stop();
}
