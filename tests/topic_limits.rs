//! A flood of publishes to distinct new topics: the topic count stops at
//! `--max-topics`, the rest get `429`, and the server's memory stays bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::*;

#[test]
fn a_flood_of_new_topics_is_capped() {
    let bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--max-topics",
        "500",
        "--history",
        "4",
    ]);
    let before = bin.rss_kib();
    // One keep-alive connection, 3,000 publishes to distinct topics, each
    // with 1 KiB of data.
    let s = TcpStream::connect(bin.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let data = "d".repeat(1024);
    let (mut ok, mut limited) = (0, 0);
    for i in 0..3000 {
        let body = format!(r#"{{"topic":"flood-{i}","data":"{data}"}}"#);
        // One write per request: several small ones would wait on Nagle.
        let req = format!(
            "POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        w.write_all(req.as_bytes()).unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        match &status[9..12] {
            "200" => ok += 1,
            "429" => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (500, 2500));
    let after = bin.rss_kib();
    // 500 topics x 4 events x ~1 KiB is about 2 MiB; allow generous slack,
    // but 3,000 topics' worth (or unbounded growth) would not fit.
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    let m = get(bin.addr, "/metrics");
    assert!(m.body.contains("tinysse_topics 500"), "{}", m.body);
}

/// A stream request's status and, for an error, its one-line reason.
fn open(addr: std::net::SocketAddr, target: &str) -> (u16, Option<tinysse::EventStream>) {
    let s = sse(addr, target, &[]);
    match s.status() {
        200 => (200, Some(s)),
        other => (other, None),
    }
}

fn topics_metric(addr: std::net::SocketAddr) -> u64 {
    let m = get(addr, "/metrics");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix("tinysse_topics "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tinysse_topics in /metrics")
}

/// Finding 5: ten requests naming about 1,100 topics each once created
/// 10,000 topics for good, and every new topic then got `429`. Now each
/// gets `400` with a reason and creates nothing.
#[test]
fn a_subscription_naming_over_64_topics_is_refused_and_creates_none() {
    let srv = start(builder());
    let a = srv.addr();
    for r in 0..10 {
        let query: String = (0..1_100).map(|i| format!("topic={r}x{i}&")).collect();
        let s = sse(a, &format!("/events?{query}lastEventId=0"), &[]);
        assert_eq!(s.status(), 400, "request {r}");
        let reason = s.body_text().unwrap();
        assert!(reason.contains("at most 64 topics"), "{reason}");
        assert_eq!(reason.trim_end().lines().count(), 1, "{reason}");
    }
    // 65 names, even of one topic, are over the limit too; 64 are not.
    let query = "topic=same&".repeat(65);
    assert_eq!(open(a, &format!("/events?{query}")).0, 400);
    assert_eq!(topics_metric(a), 0);
    assert_eq!(srv.handle().hub().topic_count(), 0);
    let query: String = (0..64).map(|i| format!("topic=ok{i}&")).collect();
    let (status, stream) = open(a, &format!("/events?{query}"));
    assert_eq!(status, 200);
    assert_eq!(topics_metric(a), 64);
    // And a new topic is still welcome.
    publish_ok(a, "fresh", &serde_json::json!(1));
    drop(stream);
    srv.stop();
}

/// Finding 5: topics nobody watches and that hold no history are forgotten,
/// so waves of subscribers to new topics never use up `--max-topics`; a
/// topic with history is kept.
#[test]
fn waves_of_subscribers_to_new_topics_never_exhaust_max_topics() {
    const MAX: usize = 21;
    let srv = start(builder().max_topics(MAX));
    let a = srv.addr();
    let kept = publish_ok(a, "kept", &serde_json::json!("history"));
    for wave in 0..8 {
        // Five subscribers to four new topics each: the cap, with `kept`.
        let streams: Vec<_> = (0..5)
            .map(|s| {
                let query: String = (0..4).map(|t| format!("topic=w{wave}-{s}-{t}&")).collect();
                let (status, stream) = open(a, &format!("/events?{query}"));
                assert_eq!(status, 200, "wave {wave}, subscriber {s}");
                stream.unwrap()
            })
            .collect();
        assert_eq!(topics_metric(a), MAX as u64, "wave {wave}");
        // One more new topic is over the cap while they are watched.
        assert_eq!(open(a, &format!("/events?topic=extra{wave}")).0, 429);
        for s in streams {
            s.close();
        }
        assert!(
            wait_until(TIMEOUT, || srv.handle().hub().topic_count() == 1),
            "wave {wave}: {} topics left after the streams closed",
            srv.handle().hub().topic_count()
        );
    }
    assert_eq!(topics_metric(a), 1);
    let before = (kept - 1).to_string();
    let mut s = sse(a, "/events?topic=kept", &[("Last-Event-ID", &before)]);
    let m = s.next_message().unwrap().unwrap();
    assert_eq!(m.id, Some(kept.to_string()));
    assert_eq!(m.data, "history");
    srv.stop();
}
