//! Limits, and what the server does at each: `--max-streams` (503 with
//! `Retry-After`, the open streams untouched), `--max-topics` (429, and
//! topics nobody watches or needs are forgotten, so waves of subscribers
//! never use it up: finding 5), at most 64 topics per subscription,
//! `--history-bytes` bounding memory whatever is published (finding 9), a
//! replay sharing the retained frames instead of copying them per
//! subscriber (finding 6), and running out of descriptors survived.
//! Memory is measured on the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::tcp::{self, read_head, read_until, status_of};
use common::*;
use serde_json::json;

/// Reads one answer off a keep-alive connection: its status line and body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `tinysse_topics` gauge.
fn topics(addr: SocketAddr) -> u64 {
    metric(addr, "tinysse_topics").expect("tinysse_topics in /metrics")
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------

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
        let (status, _) = read_answer(&mut reader);
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
    assert_eq!(topics(a), 0);
    assert_eq!(srv.handle().hub().topic_count(), 0);
    let query: String = (0..64).map(|i| format!("topic=ok{i}&")).collect();
    let (status, stream) = open(a, &format!("/events?{query}"));
    assert_eq!(status, 200);
    assert_eq!(topics(a), 64);
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
        assert_eq!(topics(a), MAX as u64, "wave {wave}");
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
    assert_eq!(topics(a), 1);
    let before = (kept - 1).to_string();
    let mut s = sse(a, "/events?topic=kept", &[("Last-Event-ID", &before)]);
    let m = s.next_message().unwrap().unwrap();
    assert_eq!(m.id, Some(kept.to_string()));
    assert_eq!(m.data, "history");
    srv.stop();
}

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------

/// Publishes every `(topic, JSON body)` over one keep-alive connection, a
/// batch of requests per write, calling `after_batch` between batches;
/// returns the ids in order.
fn publish_many(
    addr: SocketAddr,
    items: &[(String, String)],
    mut after_batch: impl FnMut(),
) -> Vec<u64> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut ids = Vec::with_capacity(items.len());
    for batch in items.chunks(64) {
        let mut reqs = Vec::new();
        for (topic, data) in batch {
            let body = format!(r#"{{"topic":"{topic}","data":{data}}}"#);
            write!(
                reqs,
                "POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
        w.write_all(&reqs).unwrap();
        for _ in batch {
            let (status, body) = read_answer(&mut reader);
            assert!(status.contains(" 200 "), "{status} {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            ids.push(v["id"].as_str().unwrap().parse().unwrap());
        }
        after_batch();
    }
    ids
}

/// Finding 9: 7 topics x 1,024 events x 64 KB once held 466 MB. With
/// `--history-bytes 16M` the retained events of all topics stay within
/// 16 MiB, counted by encoded size (a body of CRs counts three times its
/// length), the oldest across topics leave first, and a subscriber asking
/// from the first id gets a `gap` naming the oldest id still held.
#[test]
fn history_bytes_bounds_memory_and_the_oldest_leave_first() {
    const LIMIT: usize = 16 << 20;
    const TOPICS: usize = 7;
    const PER_TOPIC: usize = 1024;
    let bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--heartbeat",
        "0",
        "--history-bytes",
        "16M",
    ]);
    let base = bin.rss_kib();
    // Topic t6's bodies are CRs: each becomes a `data:` line of its own.
    let x = format!("\"{}\"", "x".repeat(65_000));
    let crs = format!("\"{}\"", "\\r".repeat(32_000));
    let body_size = |t: usize| if t == 6 { 32_001 * 6 + 1 } else { 65_008 };
    let items: Vec<(String, String)> = (0..PER_TOPIC)
        .flat_map(|_| {
            (0..TOPICS).map(|t| (format!("t{t}"), if t == 6 { &crs } else { &x }.clone()))
        })
        .collect();
    let mut peak = 0;
    let mut n = 0;
    let ids = publish_many(bin.addr, &items, || {
        n += 1;
        if n % 8 == 0 {
            peak = peak.max(bin.rss_kib());
        }
    });
    peak = peak.max(bin.rss_kib());
    eprintln!("RSS: {base} KiB at start, peak {peak} KiB while publishing");
    // Unbounded, this was 466 MB (and more with the CR bodies).
    assert!(
        peak < base + 64 * 1024,
        "RSS {peak} KiB (at start {base} KiB)"
    );

    // What must be left: the newest events whose frames fit in the limit.
    let size = |i: usize| format!("id: {}\n", ids[i]).len() + body_size(i % TOPICS);
    let mut total = 0;
    let mut oldest = ids.len();
    while oldest > 0 && total + size(oldest - 1) <= LIMIT {
        total += size(oldest - 1);
        oldest -= 1;
    }
    assert!(oldest > 0 && ids.len() - oldest > 64, "{oldest}");
    let query: String = (0..TOPICS).map(|t| format!("topic=t{t}&")).collect();
    let first = ids[0].to_string();
    let mut s = sse(
        bin.addr,
        &format!("/events?{query}"),
        &[("Last-Event-ID", &first)],
    );
    let gap = s.next_message().unwrap().unwrap();
    assert_eq!(gap.event, "gap");
    let v: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"lastEventId": first, "oldestId": ids[oldest].to_string()})
    );
    for (i, want) in ids.iter().enumerate().skip(oldest) {
        let m = s.next_message().unwrap().unwrap();
        assert_eq!(m.id, Some(want.to_string()), "replay #{i}");
        assert_eq!(m.data.len(), if i % TOPICS == 6 { 32_000 } else { 65_000 });
    }
    let m = get(bin.addr, "/metrics");
    assert!(
        m.body.contains(&format!("\ntinysse_topics {TOPICS}\n")),
        "{}",
        m.body
    );
    drop(s);
    bin.stop();
}

/// Finding 6: 50 subscriptions to 1,000 topics with `lastEventId=0` took
/// 661 MiB: each held its replay twice (the hub's vector and a copy for the
/// writer) for as long as it was open. Now a subscription names at most 64
/// topics, its replay is one vector of handles to the history's own bytes,
/// and the writer frees it once written.
///
/// Here 64 topics x 512 events: a replay of 32,768 frames, whose vector
/// alone is 1 MiB (32 bytes a frame), about the size of the history's bytes
/// themselves. 40 subscribers each read the whole replay and stay open:
/// one such vector kept per subscriber would be 40 MiB, the two kept
/// before were 80 MiB.
#[test]
fn replays_share_the_history_and_memory_comes_back() {
    const TOPICS: usize = 64;
    const PER_TOPIC: usize = 512;
    const SUBSCRIBERS: usize = 40;
    let bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--heartbeat",
        "0",
        "--history",
        "512",
    ]);
    let items: Vec<(String, String)> = (0..PER_TOPIC)
        .flat_map(|i| (0..TOPICS).map(move |t| (format!("t{t}"), format!("\"{i:08}\""))))
        .collect();
    let ids = publish_many(bin.addr, &items, || {});
    let base = bin.rss_kib();
    let query: String = (0..TOPICS).map(|t| format!("topic=t{t}&")).collect();
    let target = format!("/events?{query}lastEventId=0");
    let mut streams = Vec::new();
    let mut peak = base;
    for n in 0..SUBSCRIBERS {
        let mut s = sse(bin.addr, &target, &[]);
        assert_eq!(s.status(), 200);
        // 0 is before this server's first id: a gap, with nothing lost
        // since, so naming the first id published.
        let gap = s.next_message().unwrap().unwrap();
        assert_eq!(gap.event, "gap");
        assert!(
            gap.data.contains(&format!("\"oldestId\":\"{}\"", ids[0])),
            "{}",
            gap.data
        );
        for (i, want) in ids.iter().enumerate() {
            let m = s.next_message().unwrap().unwrap();
            assert_eq!(m.id, Some(want.to_string()), "subscriber {n}, replay #{i}");
        }
        streams.push(s);
        peak = peak.max(bin.rss_kib());
    }
    eprintln!(
        "RSS: {base} KiB with the history, peak {peak} KiB with {SUBSCRIBERS} replayed streams open"
    );
    assert!(
        peak < base + 16 * 1024,
        "RSS grew from {base} to {peak} KiB with {SUBSCRIBERS} streams"
    );
    // Live events still reach every one of them.
    let id = publish_many(bin.addr, &[("t63".into(), "\"live\"".into())], || {})[0];
    for s in &mut streams {
        assert_eq!(s.next_message().unwrap().unwrap().id, Some(id.to_string()));
    }
    for s in streams {
        s.close();
    }
    let settled = wait_until(Duration::from_secs(5), || {
        get(bin.addr, "/metrics")
            .body
            .contains("\ntinysse_streams_active 0\n")
    });
    assert!(settled, "streams still open");
    let after = bin.rss_kib();
    eprintln!("RSS: {after} KiB after they closed");
    // Requests run on their connections' threads, and the allocator keeps
    // an arena per thread that subscribed: some MiB stay mapped, far below
    // the 40 MiB that one replay kept per subscriber would cost.
    assert!(
        after < base + 16 * 1024,
        "RSS {after} KiB after close, {base} KiB before"
    );
    bin.stop();
}

/// `--history-bytes 0`, or a value that is not a size, exits 2 with one
/// line naming the flag (or its variable); a good one starts the server.
#[test]
fn bad_history_bytes_exit_2_naming_the_flag() {
    for (args, env, name) in [
        (&["--history-bytes", "0"][..], &[][..], "--history-bytes"),
        (&["--history-bytes", "lots"], &[], "--history-bytes"),
        (&["--history-bytes", "1.5M"], &[], "--history-bytes"),
        (&["--history-bytes"], &[], "--history-bytes"),
        (
            &[],
            &[("TINYSSE_HISTORY_BYTES", "0K")],
            "TINYSSE_HISTORY_BYTES",
        ),
    ] {
        let mut all = vec!["--addr", "127.0.0.1:0", "--no-demo"];
        all.extend_from_slice(args);
        let (code, _, err) = run_bin(&all, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(name), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let bin = Bin::start_env(
        &["--addr", "127.0.0.1:0", "--no-demo"],
        &[("TINYSSE_HISTORY_BYTES", "1K")],
    );
    // Only about 1 KiB is kept: of three 600-byte events, the newest.
    let data = format!("\"{}\"", "z".repeat(600));
    let items = vec![("t".to_string(), data); 3];
    let ids = publish_many(bin.addr, &items, || {});
    let first = ids[0].to_string();
    let mut s = sse(bin.addr, "/events?topic=t", &[("Last-Event-ID", &first)]);
    let gap = s.next_message().unwrap().unwrap();
    assert_eq!(gap.event, "gap");
    assert!(
        gap.data.contains(&format!("\"oldestId\":\"{}\"", ids[2])),
        "{}",
        gap.data
    );
    assert_eq!(
        s.next_message().unwrap().unwrap().id,
        Some(ids[2].to_string())
    );
    drop(s);
    bin.stop();
}

// ---------------------------------------------------------------------------
// Descriptors: with `prlimit --nofile=64` and more clients than fit, the
// server stays up, keeps its open streams, and serves the waiting clients
// once descriptors free up
// ---------------------------------------------------------------------------

#[test]
fn descriptor_exhaustion_is_survived() {
    if !require(
        "limits::descriptor_exhaustion_is_survived",
        &["prlimit"],
        "apt-get install -y util-linux",
    ) {
        return;
    }
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", env!("CARGO_BIN_EXE_tinysse")]);
    let mut bin = Bin::start_cmd(
        cmd,
        &["--addr", "127.0.0.1:0", "--no-demo", "--heartbeat", "1"],
        &[],
    );
    let addr = bin.addr;

    // Ask for more streams than 64 descriptors allow: an `/events` stream
    // holds one once its socket is handed to the writer pool (two while
    // tiny_http reads its head).
    let mut pending: Vec<TcpStream> = Vec::new();
    for _ in 0..70 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /events?topic=fd HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        pending.push(s);
    }
    let mut open = Vec::new();
    let mut waiting = Vec::new();
    for mut s in pending {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        match read_head(&mut s) {
            Ok(h) if status_of(&h) == 200 => open.push(s),
            Ok(h) => panic!("unexpected answer {}", String::from_utf8_lossy(&h)),
            Err(_) => waiting.push(s),
        }
    }
    assert!(bin.alive(), "the server died");
    assert!(open.len() >= 10, "only {} streams opened", open.len());
    assert!(!waiting.is_empty(), "descriptors were never exhausted");
    println!("{} open, {} waiting", open.len(), waiting.len());

    // Free enough descriptors for the waiting ones and a publish.
    let to_close = waiting.len() + 3;
    assert!(
        open.len() > to_close + 5,
        "too few streams opened: {}",
        open.len()
    );
    open.truncate(open.len() - to_close);
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let h = read_head(s).expect("a waiting client was never served");
        assert_eq!(status_of(&h), 200);
    }
    open.append(&mut waiting);

    let status = tcp::publish(addr, "fd", "after the storm");
    assert_eq!(status, 200);
    for s in &mut open {
        let (got, _) = read_until(s, b"data: after the storm", Duration::from_secs(5));
        assert!(got, "an open stream missed the event");
    }
    drop(open);
    bin.stop();
}
