//! Finding 12: a client-supplied `Last-Event-ID` at the edge of `u64`
//! overflowed `last + 1` in the hub, and a debug build (what `cargo test`
//! runs) panicked on the dispatcher thread, which then served nobody. Such
//! an id is larger than any id issued: the stream opens with a `gap`
//! (contract, "Subscribing") and goes live; everyone else is served.

mod common;

use common::*;
use serde_json::json;

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
