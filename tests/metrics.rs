//! `/metrics`: Prometheus text whose values move as streams open and close
//! and events flow.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

fn scrape(addr: std::net::SocketAddr) -> HashMap<String, u64> {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    let mut out = HashMap::new();
    let mut helped = Vec::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let name = p.next().unwrap();
            assert!(helped.iter().any(|h| h == name), "{name} has no HELP");
            let kind = p.next().unwrap();
            assert!(kind == "counter" || kind == "gauge", "{kind}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
        } else if !line.is_empty() {
            let (k, v) = line.split_once(' ').unwrap();
            out.insert(k.to_string(), v.parse().unwrap());
        }
    }
    out
}

#[test]
fn metrics_move_with_streams_and_events() {
    let srv = start(builder().max_streams(2));
    let a = srv.addr();
    let m0 = scrape(a);
    for name in [
        "tinysse_streams_active",
        "tinysse_streams_total",
        "tinysse_streams_rejected_total",
        "tinysse_events_published_total",
        "tinysse_frames_written_total",
        "tinysse_subscribers_evicted_total",
    ] {
        assert_eq!(m0[name], 0, "{name}");
    }
    let mut s1 = sse(a, "/events?topic=m", &[]);
    let s2 = sse(a, "/events?topic=m", &[]);
    assert_eq!(get(a, "/events?topic=m").status, 503);
    let m1 = scrape(a);
    assert_eq!(m1["tinysse_streams_active"], 2);
    assert_eq!(m1["tinysse_streams_total"], 2);
    assert_eq!(m1["tinysse_streams_rejected_total"], 1);

    for i in 0..3 {
        publish_ok(a, "m", &json!(i));
    }
    for _ in 0..3 {
        s1.next_message().unwrap().unwrap();
    }
    let m2 = scrape(a);
    assert_eq!(m2["tinysse_events_published_total"], 3);
    // retry: on each stream, then 3 events on s1 at least.
    assert!(m2["tinysse_frames_written_total"] >= 5, "{m2:?}");

    drop(s2);
    s1.close();
    assert!(wait_until(Duration::from_secs(5), || {
        publish_ok(a, "m", &json!("poke"));
        scrape(a)["tinysse_streams_active"] == 0
    }));
    assert_eq!(scrape(a)["tinysse_streams_total"], 2);
    srv.stop();
}
