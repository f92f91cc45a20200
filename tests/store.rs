//! Durable history (`--store FILE`): a real SQLite file in a temporary
//! directory, the real binary. A restart, a SIGKILL while publishers run, a
//! bad file, a full disk and `--history-age`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Bin, TempDir, get, metric, publish_json, publish_ok, run_bin, sse, tcp};

fn server(store: &Path, extra: &[&str]) -> Bin {
    let store = store.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--heartbeat",
        "0",
        "--store",
        store,
    ];
    args.extend_from_slice(extra);
    Bin::start(&args)
}

/// Reads events from `stream` until every id in `want` was seen (or the
/// stream ends or stalls); returns the ids seen, in order.
fn read_ids(stream: &mut tinysse::EventStream, want: &BTreeSet<u64>) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut missing = want.clone();
    while !missing.is_empty() {
        match stream.next_message() {
            Ok(Some(m)) => {
                if let Some(id) = m.id.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                    missing.remove(&id);
                    seen.push(id);
                } else {
                    assert_ne!(m.event, "gap", "a gap where nothing was lost: {}", m.data);
                }
            }
            _ => break,
        }
    }
    seen
}

#[test]
fn a_restart_replays_exactly_what_was_missed_without_a_gap() {
    let dir = TempDir::new();
    let db = dir.path().join("history.db");
    let bin = server(&db, &[]);
    let mut ids = Vec::new();
    for i in 0..6 {
        let topic = if i % 2 == 0 { "a" } else { "b" };
        ids.push(publish_ok(bin.addr, topic, &serde_json::json!(i)));
    }
    bin.stop();

    let bin = server(&db, &[]);
    // The client last saw the second event of topic a (ids[2]).
    let mut s = sse(
        bin.addr,
        "/events?topic=a",
        &[("Last-Event-ID", &ids[2].to_string())],
    );
    let first = s.next_message().unwrap().unwrap();
    assert_ne!(first.event, "gap", "{}", first.data);
    assert_eq!(first.id, Some(ids[4].to_string()));
    assert_eq!(first.data, "4");
    // Ids keep growing past every stored one.
    let next = publish_ok(bin.addr, "a", &serde_json::json!("after"));
    assert!(next > ids[5], "{next} after {}", ids[5]);
    let live = s.next_message().unwrap().unwrap();
    assert_eq!(live.id, Some(next.to_string()));
    bin.stop();
}

/// SIGKILL while 4 publishers run: every acknowledged event is replayed
/// after the restart, once, in order.
fn survives_sigkill(sync: &str) {
    let dir = TempDir::new();
    let db = dir.path().join("history.db");
    let mut bin = server(&db, &["--store-sync", sync, "--history", "100000"]);
    let addr = bin.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                let body = format!(r#"{{"topic":"k{}","data":"x"}}"#, p % 2);
                let end = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let r = publish_json_or_gone(addr, &body);
                    match r {
                        Some(id) => acked.push(id),
                        None => break,
                    }
                }
                acked
            })
        })
        .collect();
    // Let them publish for a while, then kill the server mid-flight.
    let started = Instant::now();
    assert!(common::wait_until(Duration::from_secs(10), || {
        metric(addr, "tinysse_events_published_total").is_some_and(|n| n >= 200)
            || started.elapsed() > Duration::from_secs(3)
    }));
    bin.signal("KILL");
    bin.wait_exit(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let acked: BTreeSet<u64> = publishers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    assert!(
        acked.len() >= 50,
        "only {} publishes acknowledged",
        acked.len()
    );

    let bin = server(&db, &["--store-sync", sync, "--history", "100000"]);
    let from = acked.first().unwrap() - 1;
    let mut s = sse(
        bin.addr,
        "/events?topic=k0&topic=k1",
        &[("Last-Event-ID", &from.to_string())],
    );
    let seen = read_ids(&mut s, &acked);
    let missing: Vec<_> = acked.iter().filter(|id| !seen.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost",
        missing.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "replayed out of order or twice"
    );
    bin.stop();
}

/// A publish's id, or `None` once the server is gone (refused, reset, or a
/// connection closed without an answer).
fn publish_json_or_gone(addr: SocketAddr, body: &str) -> Option<u64> {
    let (status, out) = tcp::exchange(
        addr,
        format!(
            "POST /publish HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        common::TIMEOUT,
    );
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&out);
    let json = &text[text.find('{')?..];
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    v["id"].as_str()?.parse().ok()
}

#[test]
fn acknowledged_events_survive_sigkill_with_normal_sync() {
    survives_sigkill("normal");
}

#[test]
fn acknowledged_events_survive_sigkill_with_full_sync() {
    survives_sigkill("full");
}

/// Each bad file: exit 2, a one-line reason naming the file, and the file
/// byte for byte as it was.
#[test]
fn bad_files_are_refused_and_left_untouched() {
    let dir = TempDir::new();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database at all\n").unwrap();
    // Another program's SQLite database, made by the test's own store-less
    // tool: a copy of a tinysse store whose application id is changed.
    let other = dir.path().join("other.db");
    let ours = dir.path().join("ours.db");
    server(&ours, &[]).stop();
    let mut bytes = std::fs::read(&ours).unwrap();
    // The SQLite header keeps the application id at offset 68.
    bytes[68..72].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&other, &bytes).unwrap();
    // A corrupt tinysse store: its second page overwritten.
    let corrupt = dir.path().join("corrupt.db");
    let mut bytes = std::fs::read(&ours).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    for b in &mut bytes[page..page * 2] {
        *b = 0xA5;
    }
    std::fs::write(&corrupt, &bytes).unwrap();

    for (file, why) in [
        (&text, "not a SQLite database"),
        (&other, "another program"),
        (&corrupt, "corrupt"),
    ] {
        let before = std::fs::read(file).unwrap();
        let path = file.to_str().expect("a UTF-8 path");
        let (code, _, err) = run_bin(
            &["--addr", "127.0.0.1:0", "--no-demo", "--store", path],
            &[],
        );
        assert_eq!(code, Some(2), "{}", file.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&*file.to_string_lossy()), "{err}");
        assert!(
            err.to_lowercase().contains(&why.to_lowercase()),
            "{why}: {err}"
        );
        assert_eq!(
            std::fs::read(file).unwrap(),
            before,
            "{} changed",
            file.display()
        );
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for side in ["-wal", "-shm"] {
            assert!(
                !dir.path().join(format!("{name}{side}")).exists(),
                "{name}{side} left behind"
            );
        }
    }
}

/// Events older than `--history-age` leave the history: a client asking
/// for them gets a `gap`, and the topic, empty and unwatched, is forgotten.
#[test]
fn history_age_drops_old_events_with_a_gap() {
    let dir = TempDir::new();
    let db = dir.path().join("history.db");
    let bin = server(&db, &["--history-age", "1"]);
    let old = publish_ok(bin.addr, "aging", &serde_json::json!("old"));
    let before = old - 1;
    let aged = common::wait_until(Duration::from_secs(10), || {
        metric(bin.addr, "tinysse_topics") == Some(0)
    });
    assert!(aged, "the topic was not forgotten");
    let mut s = sse(
        bin.addr,
        "/events?topic=aging",
        &[("Last-Event-ID", &before.to_string())],
    );
    let gap = s.next_message().unwrap().unwrap();
    assert_eq!(gap.event, "gap");
    assert!(gap.data.contains("\"oldestId\":null"), "{}", gap.data);
    bin.stop();
    // Not in the store either: a restart replays nothing of it.
    let bin = server(&db, &["--history-age", "1"]);
    let mut s = sse(
        bin.addr,
        "/events?topic=aging",
        &[("Last-Event-ID", &before.to_string())],
    );
    let gap = s.next_message().unwrap().unwrap();
    assert_eq!(gap.event, "gap", "{gap:?}");
    let next = publish_ok(bin.addr, "aging", &serde_json::json!("new"));
    assert_eq!(
        s.next_message().unwrap().unwrap().id,
        Some(next.to_string())
    );
    bin.stop();
}

/// A full disk: the publish gets `503` with `Retry-After` and nothing is
/// half-written, `/healthz` says why, an open stream stays open, and once
/// there is room again publishing works without a restart.
#[test]
fn a_full_disk_answers_503_and_recovers() {
    if !common::is_root() {
        common::skip_or_fail(
            "store::a_full_disk_answers_503_and_recovers",
            "mounting a small tmpfs needs root",
            "run the tests as root",
        );
        return;
    }
    if !common::require(
        "store::a_full_disk_answers_503_and_recovers",
        &["mount", "umount"],
        "apt-get install -y mount",
    ) {
        return;
    }
    let dir = TempDir::new();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let _mount = common::Tmpfs::mount(&mnt, "2m");
    let db = mnt.join("history.db");
    let bin = server(&db, &[]);
    let first = publish_ok(bin.addr, "full", &serde_json::json!("fits"));
    let mut s = sse(bin.addr, "/events?topic=full", &[]);
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let big = format!(r#"{{"topic":"full","data":"{}"}}"#, "y".repeat(60_000));
    let mut refused = None;
    for _ in 0..20 {
        let r = publish_json(bin.addr, &big);
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = refused.expect("a full disk never refused a publish");
    assert!(r.header("Retry-After").is_some());
    assert!(!r.body.trim().is_empty() && r.body.trim().lines().count() == 1);
    let health = get(bin.addr, "/healthz");
    assert_eq!(health.status, 503, "{}", health.body);
    // Room again: publishing works, the open stream gets it.
    std::fs::remove_file(&filler).unwrap();
    let recovered = common::wait_until(Duration::from_secs(10), || {
        publish_json(bin.addr, r#"{"topic":"full","data":"again"}"#).status == 200
    });
    assert!(recovered, "publishing did not recover");
    assert_eq!(get(bin.addr, "/healthz").status, 200);
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("again") {
        let m = s.next_message().unwrap().expect("the stream stayed open");
        got.push(m.data);
    }
    bin.stop();
    // Nothing half-written: after a restart, the stored events load.
    let bin = server(&db, &[]);
    let mut s = sse(
        bin.addr,
        "/events?topic=full",
        &[("Last-Event-ID", &(first - 1).to_string())],
    );
    assert_eq!(s.next_message().unwrap().unwrap().data, "fits");
    bin.stop();
}
