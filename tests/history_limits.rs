//! Limits on retained history and replay, measured on the real binary:
//! `--history-bytes` bounds memory whatever is published (finding 9), and
//! a replay shares the retained frames instead of copying them per
//! subscriber (finding 6).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

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
            let body = String::from_utf8_lossy(&body);
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
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tinysse"));
        cmd.args(["--addr", "127.0.0.1:0", "--no-demo"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run tinysse");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
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
