//! Several `tinysse` binaries and one real `redis-server` (each test starts
//! its own on a free loopback port and stops it) behaving as one server:
//! one id sequence and one order on every instance, exact replay on
//! failover, and the faults: Redis restarted with its AOF, emptied, hung
//! with SIGSTOP. And the flags: a bad URL, or `--redis` with `--store`,
//! exit 2.
#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::redis::{INSTALL, RedisServer};
use common::{Bin, TempDir, get, publish_json, require, sse, wait_until};
use tinysse::{EventStream, Item, Message};

const LIMIT: Duration = Duration::from_secs(20);

fn have_redis(test: &str) -> bool {
    require(
        &format!("redis_cluster::{test}"),
        &["redis-server", "redis-cli"],
        INSTALL,
    )
}

/// One instance of the binary on Redis `r`.
fn instance(r: &RedisServer, extra: &[&str]) -> Bin {
    let url = r.url();
    let mut args = vec!["--addr", "127.0.0.1:0", "--no-demo", "--redis", &url];
    args.extend_from_slice(extra);
    Bin::start(&args)
}

/// A publish's outcome: the id, or the status, `Retry-After` and body.
fn publish(
    addr: SocketAddr,
    topic: &str,
    data: &str,
) -> Result<u64, (u16, Option<String>, String)> {
    let body = serde_json::json!({"topic": topic, "data": data}).to_string();
    let r = publish_json(addr, &body);
    if r.status != 200 {
        let retry = r.header("Retry-After").map(str::to_string);
        return Err((r.status, retry, r.body));
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON answer");
    Ok(v["id"].as_str().expect("id").parse().expect("decimal id"))
}

/// Publishes, retrying while the answer is `503` (Redis away), for up to
/// `LIMIT`.
fn publish_retrying(addr: SocketAddr, topic: &str, data: &str) -> u64 {
    let end = Instant::now() + LIMIT;
    loop {
        match publish(addr, topic, data) {
            Ok(id) => return id,
            Err((503, ..)) if Instant::now() < end => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("publish failed: {e:?}"),
        }
    }
}

/// A publish to `addr` while Redis is away: `503` with `Retry-After`, in
/// time (the command timeout is 2 s).
fn refused_in_time(addr: SocketAddr, data: &str) {
    let t = Instant::now();
    let refused = publish(addr, "t", data).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(refused.1.is_some(), "no Retry-After: {refused:?}");
}

/// Reads `s` (events skipped) until a heartbeat comment, failing if the
/// stream ends or none comes within `LIMIT`.
fn heartbeat(s: &mut EventStream, when: &str) {
    let end = Instant::now() + LIMIT;
    loop {
        assert!(Instant::now() < end, "no heartbeat {when}");
        if let Item::Comment(_) = s.next_item().expect("read").expect("stream open") {
            return;
        }
    }
}

fn id_of(m: &Message) -> u64 {
    m.id.as_deref().expect("an id").parse().expect("decimal id")
}

/// The next `n` events (not comments), failing on an early end.
fn next_events(s: &mut EventStream, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            s.next_message()
                .expect("read")
                .unwrap_or_else(|| panic!("the stream ended after {i} of {n} events"))
        })
        .collect()
}

fn ids(ms: &[Message]) -> Vec<u64> {
    ms.iter().map(id_of).collect()
}

fn increasing(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Publishers on each of `addrs`, until stopped: what each got acknowledged
/// and whether every refusal was a `503` with `Retry-After`.
struct Publishers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Publishers {
    fn start(addrs: &[SocketAddr], topic: &'static str) -> Publishers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = addrs
            .iter()
            .enumerate()
            .map(|(n, &addr)| {
                let (stop, acked) = (stop.clone(), acked.clone());
                thread::spawn(move || {
                    let mut wrong = Vec::new();
                    // Bounded: stopped by the test, or 5,000 publishes.
                    for i in 0..5_000 {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        match publish(addr, topic, &format!("{n}-{i}")) {
                            Ok(id) => acked.lock().unwrap().push(id),
                            Err((503, Some(_), _)) => thread::sleep(Duration::from_millis(20)),
                            Err(e) => wrong.push(format!("{e:?}")),
                        }
                    }
                    wrong
                })
            })
            .collect();
        Publishers {
            stop,
            acked,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops them; the acknowledged ids.
    fn finish(self) -> BTreeSet<u64> {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let wrong = t.join().expect("publisher");
            assert!(
                wrong.is_empty(),
                "refusals other than 503 + Retry-After: {wrong:?}"
            );
        }
        self.acked.lock().unwrap().iter().copied().collect()
    }
}

/// Reads `s` until every id of `want` was seen (or `LIMIT`): the ids seen,
/// which must grow strictly (no repeat, one order).
fn read_until_all(s: &mut EventStream, want: &BTreeSet<u64>, who: &str) -> Vec<u64> {
    let end = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    let last = *want.iter().next_back().expect("something acknowledged");
    while seen.last().is_none_or(|&l| l < last) {
        assert!(
            Instant::now() < end,
            "{who}: only {} events in time",
            seen.len()
        );
        let m = s
            .next_message()
            .expect("read")
            .unwrap_or_else(|| panic!("{who}: the stream ended after {} events", seen.len()));
        assert_eq!(m.event, "message", "{who}: {m:?}");
        seen.push(id_of(&m));
    }
    assert!(increasing(&seen), "{who}: ids out of order or repeated");
    let missing: Vec<u64> = want
        .iter()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{who}: acknowledged, never delivered: {missing:?}"
    );
    seen
}

#[test]
fn two_instances_deliver_one_sequence() {
    if !have_redis("two_instances_deliver_one_sequence") {
        return;
    }
    let r = RedisServer::start(false);
    let (a, b) = (instance(&r, &[]), instance(&r, &[]));
    let mut sa = sse(a.addr, "/events?topic=t", &[]);
    let mut sb = sse(b.addr, "/events?topic=t", &[]);
    let pubs = Publishers::start(&[a.addr, b.addr], "t");
    assert!(
        wait_until(LIMIT, || pubs.acked() >= 100),
        "publishing stalled"
    );
    let acked = pubs.finish();
    let got_a = read_until_all(&mut sa, &acked, "A");
    let got_b = read_until_all(&mut sb, &acked, "B");
    assert_eq!(got_a, got_b, "the instances delivered different sequences");
    assert_eq!(got_a.iter().copied().collect::<BTreeSet<_>>(), acked);
    // The same events behind the same ids: a replay from one instance
    // matches what the other delivered live.
    let first = *acked.iter().next().unwrap();
    let mut replay = sse(
        a.addr,
        "/events?topic=t",
        &[("Last-Event-ID", &first.to_string())],
    );
    let replayed = next_events(&mut replay, acked.len() - 1);
    assert_eq!(ids(&replayed), got_b[1..]);
    a.stop();
    b.stop();
}

#[test]
fn failover_replays_exactly_once_in_order() {
    if !have_redis("failover_replays_exactly_once_in_order") {
        return;
    }
    let r = RedisServer::start(false);
    let mut a = instance(&r, &[]);
    let b = instance(&r, &[]);
    let mut s = sse(a.addr, "/events?topic=news&topic=other", &[]);
    for i in 0..5 {
        publish(
            a.addr,
            if i % 2 == 0 { "news" } else { "other" },
            &format!("a{i}"),
        )
        .unwrap();
    }
    let before = next_events(&mut s, 5);
    let last = id_of(&before[4]);
    // Killed while the client is connected: it reconnects elsewhere.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(s.next_message().map_or(true, |m| m.is_none()));

    // B followed everything since it started: it replays from its own
    // history; C starts after the events: it replays from Redis. Both
    // while a publisher keeps going, so the hand-over to live is tested.
    let missed: Vec<u64> = (0..5)
        .map(|i| {
            publish(
                b.addr,
                if i % 2 == 0 { "other" } else { "news" },
                &format!("b{i}"),
            )
            .unwrap()
        })
        .collect();
    let c = instance(&r, &[]);
    let pubs = Publishers::start(&[b.addr, c.addr], "news");
    let header = [("Last-Event-ID", last.to_string())];
    let header: Vec<(&str, &str)> = header.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut on_b = sse(b.addr, "/events?topic=news&topic=other", &header);
    let mut on_c = sse(c.addr, "/events?topic=news&topic=other", &header);
    assert!(
        wait_until(LIMIT, || pubs.acked() >= 40),
        "publishing stalled"
    );
    let mut want: BTreeSet<u64> = pubs.finish();
    want.extend(&missed);
    let got_b = read_until_all(&mut on_b, &want, "B");
    let got_c = read_until_all(&mut on_c, &want, "C");
    assert_eq!(got_b[..5], missed[..], "B's replay");
    assert_eq!(got_c[..5], missed[..], "C's replay");
    // Only acknowledged events exist here: exactly those, each once.
    assert_eq!(got_b.iter().copied().collect::<BTreeSet<_>>(), want);
    assert_eq!(got_b, got_c);
    b.stop();
    c.stop();
}

#[test]
fn redis_restarted_with_its_aof_while_publishers_run() {
    if !have_redis("redis_restarted_with_its_aof_while_publishers_run") {
        return;
    }
    let mut r = RedisServer::start(true);
    let (a, b) = (
        instance(&r, &["--heartbeat", "1"]),
        instance(&r, &["--heartbeat", "1"]),
    );
    let mut sa = sse(a.addr, "/events?topic=t", &[]);
    let mut sb = sse(b.addr, "/events?topic=t", &[]);
    let mut hb = sse(a.addr, "/events?topic=t", &[]);
    let pubs = Publishers::start(&[a.addr, b.addr], "t");
    assert!(
        wait_until(LIMIT, || pubs.acked() >= 20),
        "publishing stalled"
    );

    r.stop();
    // Away: a publish is refused in time, with Retry-After, and /healthz
    // says why.
    refused_in_time(a.addr, "while down");
    assert!(
        wait_until(LIMIT, || {
            let h = get(b.addr, "/healthz");
            h.status == 503 && h.body.contains("Redis")
        }),
        "healthz did not report Redis away"
    );
    // Streams stay open: heartbeats go on (watched on a stream of its own,
    // so that `sa` keeps its events for the check below).
    heartbeat(&mut hb, "while Redis was away");

    let acked_before = pubs.acked();
    r.start_again(true, false);
    assert!(
        wait_until(LIMIT, || pubs.acked() >= acked_before + 20),
        "publishing did not resume"
    );
    assert!(wait_until(LIMIT, || get(a.addr, "/healthz").status == 200));
    let acked = pubs.finish();
    // Nothing acknowledged lost, nothing twice, one order, on both.
    let got_a = read_until_all(&mut sa, &acked, "A");
    let got_b = read_until_all(&mut sb, &acked, "B");
    assert_eq!(got_a, got_b);
    a.stop();
    b.stop();
}

#[test]
fn emptied_redis_ids_still_grow_and_clients_get_a_gap() {
    if !have_redis("emptied_redis_ids_still_grow_and_clients_get_a_gap") {
        return;
    }
    let mut r = RedisServer::start(false);
    let a = instance(&r, &[]);
    let mut s = sse(a.addr, "/events?topic=t", &[]);
    let old: Vec<u64> = (0..3)
        .map(|i| publish(a.addr, "t", &i.to_string()).unwrap())
        .collect();
    let got = next_events(&mut s, 3);
    assert_eq!(ids(&got), old);

    // Restarted without persistence: empty.
    r.kill();
    r.start_again(false, true);
    assert_eq!(r.cli(&["DBSIZE"]), "0");
    // The instance may have missed events: its open stream ends, so the
    // client reconnects with its Last-Event-ID.
    let m = s.next_message().expect("the stream ended in time");
    assert!(m.is_none(), "unexpected event {m:?}");
    let new = publish_retrying(a.addr, "t", "after");
    assert!(new > old[2], "an id went back: {new} after {}", old[2]);
    let last = old[2].to_string();
    let mut again = sse(a.addr, "/events?topic=t", &[("Last-Event-ID", &last)]);
    let got = next_events(&mut again, 2);
    assert_eq!(got[0].event, "gap", "{got:?}");
    let gap: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(gap["lastEventId"], last);
    assert_eq!(id_of(&got[1]), new);
    assert_eq!(got[1].data, "after");
    a.stop();
}

#[test]
fn hung_redis_never_hangs_a_publisher() {
    if !have_redis("hung_redis_never_hangs_a_publisher") {
        return;
    }
    let mut r = RedisServer::start(false);
    let (a, b) = (instance(&r, &["--heartbeat", "1"]), instance(&r, &[]));
    let c = instance(&r, &[]);
    let mut s = sse(b.addr, "/events?topic=t", &[]);
    let first = publish(a.addr, "t", "before").unwrap();
    assert_eq!(id_of(&next_events(&mut s, 1)[0]), first);

    r.pause();
    // An instance stops in time (SIGTERM: exit 0 within 2 s) though its
    // follower is stuck in a read from the hung Redis.
    c.stop();
    refused_in_time(a.addr, "while hung");
    assert!(
        wait_until(LIMIT, || get(a.addr, "/healthz").status == 503),
        "healthz did not report Redis hung"
    );
    // The subscriber on A's stream gets heartbeats meanwhile.
    let mut on_a = sse(a.addr, "/events?topic=t", &[]);
    heartbeat(&mut on_a, "while Redis hung");

    r.cont();
    let after = publish_retrying(a.addr, "t", "after");
    // The refused publish never appears: the next event is the new one.
    let m = next_events(&mut s, 1).remove(0);
    assert_eq!((id_of(&m), m.data.as_str()), (after, "after"));
    let m = next_events(&mut on_a, 1).remove(0);
    assert_eq!((id_of(&m), m.data.as_str()), (after, "after"));
    assert!(wait_until(LIMIT, || get(a.addr, "/healthz").status == 200));
    a.stop();
    b.stop();
}

#[test]
fn bad_redis_settings_exit_2() {
    if !have_redis("bad_redis_settings_exit_2") {
        return;
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tinysse"))
            .args(["--addr", "127.0.0.1:0", "--no-demo"])
            .args(args)
            .env("TINYSSE_LOG", "off")
            .output()
            .expect("run tinysse");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--redis", "http://user:hunter2@127.0.0.1:1/"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Redis URL") && !err.contains("hunter2"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let dir = TempDir::new();
    let db = dir.path().join("h.db");
    let (code, err) = run(&[
        "--redis",
        "redis://127.0.0.1:1/",
        "--store",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--redis and --store"), "{err}");
    assert!(!db.exists(), "the store file was created");

    // Well formed, nobody there: not a bad setting, exit 1, in time.
    let r = RedisServer::start(false);
    let port = r.port;
    drop(r);
    let t = Instant::now();
    let (code, err) = run(&["--redis", &format!("redis://127.0.0.1:{port}/")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unavailable"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
}
