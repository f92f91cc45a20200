//! The Redis engine (src/store_redis.rs) against a real `redis-server` that
//! each test starts on its own port and stops: one id sequence and one
//! order for two instances, exact replay, and the faults (Redis killed,
//! restarted with its AOF, emptied, hung with SIGSTOP), on its own, through
//! the hidden `redis_engine` module; tests/redis_cluster.rs runs the
//! binaries.
#![cfg(feature = "redis")]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::redis::{INSTALL, RedisServer};
use common::{require, wait_until};
use tinysse::redis_engine::{Followed, Follower, RedisError, RedisEvent, RedisOptions, RedisStore};

const LIMIT: Duration = Duration::from_secs(20);

fn have_redis(test: &str) -> bool {
    require(
        &format!("redis_store::{test}"),
        &["redis-server", "redis-cli"],
        INSTALL,
    )
}

fn opts(r: &RedisServer) -> RedisOptions {
    let mut o = RedisOptions::new(r.url());
    o.connect_timeout = Duration::from_secs(1);
    o.command_timeout = Duration::from_secs(1);
    o
}

fn connect(o: RedisOptions) -> RedisStore {
    RedisStore::connect(o).expect("connect to the test Redis")
}

/// What a follower handed over, and its health reports, as they come.
struct Seen {
    items: Arc<Mutex<Vec<Followed>>>,
    health: Arc<Mutex<Vec<Result<(), String>>>>,
    follower: Option<Follower>,
}

impl Seen {
    fn start(store: &RedisStore, from: Option<u64>) -> Seen {
        let items = Arc::new(Mutex::new(Vec::new()));
        let health = Arc::new(Mutex::new(Vec::new()));
        let (i, h) = (Arc::clone(&items), Arc::clone(&health));
        let follower = store
            .follow(
                from,
                Box::new(move |f| i.lock().unwrap().push(f)),
                Box::new(move |s| h.lock().unwrap().push(s)),
            )
            .expect("follow");
        Seen {
            items,
            health,
            follower: Some(follower),
        }
    }

    fn items(&self) -> Vec<Followed> {
        self.items.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<RedisEvent> {
        self.items()
            .into_iter()
            .filter_map(|f| match f {
                Followed::Event(e) => Some(e),
                Followed::Gap { .. } => None,
            })
            .collect()
    }

    fn ids(&self) -> Vec<u64> {
        self.events().iter().map(|e| e.id).collect()
    }

    fn gaps(&self) -> Vec<u64> {
        self.items()
            .into_iter()
            .filter_map(|f| match f {
                Followed::Gap { after } => Some(after),
                Followed::Event(_) => None,
            })
            .collect()
    }

    fn health(&self) -> Vec<Result<(), String>> {
        self.health.lock().unwrap().clone()
    }

    /// Waits until every id in `ids` was delivered.
    fn wait_for(&self, ids: &[u64]) -> bool {
        wait_until(LIMIT, || {
            let got: HashSet<u64> = self.ids().into_iter().collect();
            ids.iter().all(|id| got.contains(id))
        })
    }

    /// Stops the follower; it must end within `limit`.
    fn stop_within(&mut self, limit: Duration) {
        let f = self.follower.take().expect("running");
        let t = Instant::now();
        f.join();
        assert!(
            t.elapsed() < limit,
            "the follower took {:?} to stop",
            t.elapsed()
        );
    }
}

fn strictly_increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

fn payload(s: &str) -> Vec<u8> {
    format!("data: {s}\n\n").into_bytes()
}

#[test]
fn two_instances_share_one_sequence_in_one_order() {
    if !have_redis("two_instances_share_one_sequence_in_one_order") {
        return;
    }
    let r = RedisServer::start(false);
    let a = connect(opts(&r));
    let b = connect(opts(&r));
    let seen_a = Seen::start(&a, None);
    let seen_b = Seen::start(&b, None);

    // Both instances publish at once, to shared and own topics.
    let publish = |store: RedisStore, name: &'static str| {
        thread::spawn(move || {
            (0..200)
                .map(|i| {
                    let topic = if i % 2 == 0 { "shared" } else { name };
                    let p = store
                        .publish(topic, &payload(&format!("{name}-{i}")))
                        .expect("publish");
                    (p.id, topic.to_string(), payload(&format!("{name}-{i}")))
                })
                .collect::<Vec<_>>()
        })
    };
    let (ta, tb) = (publish(a.clone(), "a"), publish(b.clone(), "b"));
    let mut acked = ta.join().unwrap();
    acked.extend(tb.join().unwrap());
    acked.sort();
    let ids: Vec<u64> = acked.iter().map(|x| x.0).collect();
    assert!(strictly_increasing(&ids), "an id was issued twice");

    assert!(seen_a.wait_for(&ids), "instance a missed events");
    assert!(seen_b.wait_for(&ids), "instance b missed events");
    let (ea, eb) = (seen_a.events(), seen_b.events());
    assert_eq!(ea, eb, "the two instances saw different sequences");
    let got: Vec<(u64, String, Vec<u8>)> =
        ea.into_iter().map(|e| (e.id, e.topic, e.payload)).collect();
    assert_eq!(got, acked, "delivered is not exactly what was acknowledged");
    assert!(seen_a.gaps().is_empty() && seen_b.gaps().is_empty());
    assert_eq!(seen_a.health(), vec![Ok(())]);
    assert_eq!(a.highest_id().unwrap(), *ids.last().unwrap());
}

#[test]
fn replay_after_an_id_is_exact_and_in_order() {
    if !have_redis("replay_after_an_id_is_exact_and_in_order") {
        return;
    }
    let r = RedisServer::start(false);
    let s = connect(opts(&r));
    let nothing = s.replay(&["a"], 5).unwrap();
    assert!(nothing.gap && nothing.events.is_empty(), "{nothing:?}");

    let topics = ["a", "b", "c"];
    let mut all = Vec::new();
    for i in 0..30 {
        let t = topics[i % 3];
        let id = s.publish(t, &payload(&i.to_string())).unwrap().id;
        all.push((id, t));
    }
    let after = all[9].0;
    let want: Vec<u64> = all
        .iter()
        .filter(|(id, t)| *id > after && *t != "c")
        .map(|x| x.0)
        .collect();
    let got = s.replay(&["a", "b"], after).unwrap();
    assert!(!got.gap, "nothing was trimmed: {got:?}");
    assert_eq!(got.events.iter().map(|e| e.id).collect::<Vec<_>>(), want);
    assert!(got.events.iter().all(|e| e.topic != "c"));
    assert_eq!(got.upto, all.last().unwrap().0);
    let e = &got.events[0];
    let i = all.iter().position(|x| x.0 == e.id).unwrap();
    assert_eq!(e.payload, payload(&i.to_string()));

    // The newest id: nothing to replay, no gap; an id never issued, or
    // from before the data set: a gap.
    let last = all.last().unwrap().0;
    let none = s.replay(&["a", "b", "c"], last).unwrap();
    assert!(!none.gap && none.events.is_empty(), "{none:?}");
    assert!(
        s.replay(&["a"], last + 1).unwrap().gap,
        "an id from the future"
    );
    assert!(s.replay(&["a"], 0).unwrap().gap, "an id from before");
    // The one before the first publish is no gap: everything is held.
    let first = s.replay(&["a", "b", "c"], all[0].0 - 1).unwrap();
    assert!(!first.gap);
    assert_eq!(first.events.len(), 30);
    // A topic with no events, after an id of this data set: no gap.
    let empty = s.replay(&["never"], all[3].0).unwrap();
    assert!(!empty.gap && empty.events.is_empty(), "{empty:?}");
}

#[test]
fn replay_reports_a_gap_exactly_when_history_dropped_events() {
    if !have_redis("replay_reports_a_gap_exactly_when_history_dropped_events") {
        return;
    }
    let r = RedisServer::start(false);
    let mut o = opts(&r);
    o.history = 5;
    let s = connect(o);
    let other = s.publish("other", &payload("x")).unwrap().id;
    // Enough for Redis's approximate trim (whole nodes of 100) to act.
    let ids: Vec<u64> = (0..300)
        .map(|i| s.publish("t", &payload(&i.to_string())).unwrap().id)
        .collect();
    let n = ids.len();
    let newest: Vec<u64> = ids[n - 5..].to_vec();
    let ids_of = |r: &tinysse::redis_engine::Replayed| -> Vec<u64> {
        r.events.iter().map(|e| e.id).collect()
    };

    let all = s.replay(&["t"], other).unwrap();
    assert!(all.gap, "295 events were dropped");
    assert_eq!(ids_of(&all), newest, "at most --history, the newest");
    // Asked from the one before the 5 kept: nothing missed.
    let exact = s.replay(&["t"], ids[n - 6]).unwrap();
    assert!(!exact.gap, "{exact:?}");
    assert_eq!(ids_of(&exact), newest);
    // One more back: that one is gone.
    let one_more = s.replay(&["t"], ids[n - 7]).unwrap();
    assert!(one_more.gap);
    assert_eq!(ids_of(&one_more), newest);
    // Redis itself dropped some (approximately), not all.
    let xlen: usize = r.cli(&["XLEN", "{tinysse}:t:t"]).parse().unwrap();
    assert!((5..300).contains(&xlen), "XLEN {xlen}");
}

#[test]
fn history_age_drops_old_events_with_a_gap() {
    if !have_redis("history_age_drops_old_events_with_a_gap") {
        return;
    }
    let r = RedisServer::start(false);
    let mut o = opts(&r);
    o.history_age = Some(Duration::from_millis(300));
    let s = connect(o);
    let before = s.publish("other", &payload("x")).unwrap().id;
    let e1 = s.publish("t", &payload("1")).unwrap().id;
    let fresh = s.replay(&["t"], before).unwrap();
    assert!(!fresh.gap);
    assert_eq!(fresh.events.len(), 1);
    // Once older than the age, it is no longer replayed, with a gap.
    assert!(wait_until(LIMIT, || s.replay(&["t"], before).unwrap().gap));
    assert!(s.replay(&["t"], before).unwrap().events.is_empty());
    // A later event: replayed, with a gap for the one that expired...
    let e2 = s.publish("t", &payload("2")).unwrap().id;
    let r2 = s.replay(&["t"], before).unwrap();
    assert!(r2.gap);
    assert_eq!(r2.events.iter().map(|e| e.id).collect::<Vec<_>>(), [e2]);
    // ...but none for a client that had it.
    let r3 = s.replay(&["t"], e1).unwrap();
    assert!(!r3.gap, "{r3:?}");
    assert_eq!(r3.events.len(), 1);
    // The topic's keys expire with their events: Redis memory is bounded.
    assert!(wait_until(LIMIT, || r.cli(&["EXISTS", "{tinysse}:t:t"]) == "0"));
    assert!(s.replay(&["t"], e1).unwrap().gap, "expired whole");
    // A client that saw the newest event is owed nothing.
    let newest = s.publish("other", &payload("y")).unwrap().id;
    assert!(!s.replay(&["t"], newest).unwrap().gap);
}

#[test]
fn a_follower_resumes_after_an_id_and_reports_a_trimmed_gap() {
    if !have_redis("a_follower_resumes_after_an_id_and_reports_a_trimmed_gap") {
        return;
    }
    let r = RedisServer::start(false);
    let mut o = opts(&r);
    o.notify_len = 10;
    let s = connect(o);
    let mut first = Seen::start(&s, None);
    let ids: Vec<u64> = (0..20)
        .map(|i| s.publish("t", &payload(&i.to_string())).unwrap().id)
        .collect();
    assert!(first.wait_for(&ids));
    first.stop_within(Duration::from_secs(2));
    assert_eq!(first.ids(), ids);

    // Resumes after the last one it delivered: the rest, once each.
    let more: Vec<u64> = (0..5)
        .map(|i| s.publish("t", &payload(&i.to_string())).unwrap().id)
        .collect();
    let mut again = Seen::start(&s, Some(ids[19]));
    assert!(again.wait_for(&more));
    assert_eq!(again.ids(), more);
    assert!(again.gaps().is_empty());
    again.stop_within(Duration::from_secs(2));

    // Away while far more than the notification stream keeps was
    // published: a gap first, then what is there.
    let resume_from = *more.last().unwrap();
    let lots: Vec<u64> = (0..400)
        .map(|i| s.publish("t", &payload(&i.to_string())).unwrap().id)
        .collect();
    let mut late = Seen::start(&s, Some(resume_from));
    assert!(late.wait_for(&lots[lots.len() - 10..]));
    assert!(matches!(late.items()[0], Followed::Gap { after } if after == resume_from));
    assert_eq!(late.gaps().len(), 1);
    assert!(strictly_increasing(&late.ids()));
    late.stop_within(Duration::from_secs(2));
}

/// Publishers that keep publishing (retrying each event until it is
/// acknowledged) until told to stop; what was acknowledged, and how many
/// attempts failed.
struct Publishers {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    /// Errors saying the event may exist all the same.
    maybe: Arc<AtomicUsize>,
    acked: Arc<Mutex<Vec<u64>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Publishers {
    fn start(store: &RedisStore, n: usize) -> Publishers {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicUsize::new(0));
        let maybe = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..n)
            .map(|k| {
                let (store, stop) = (store.clone(), Arc::clone(&stop));
                let (errors, acked) = (Arc::clone(&errors), Arc::clone(&acked));
                let maybe = Arc::clone(&maybe);
                thread::spawn(move || {
                    let topic = format!("p{k}");
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match store.publish(&topic, &payload(&i.to_string())) {
                            Ok(p) => {
                                acked.lock().unwrap().push(p.id);
                                i += 1;
                            }
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                if matches!(e, RedisError::MaybePublished { .. }) {
                                    maybe.fetch_add(1, Ordering::Relaxed);
                                }
                                assert!(
                                    t.elapsed() < Duration::from_secs(3),
                                    "a publish took {:?} to fail: {e}",
                                    t.elapsed()
                                );
                                assert!(!e.is_config(), "{e}");
                            }
                        }
                        // A steady rate, not a flood: the notification
                        // stream keeps 10,000.
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Publishers {
            stop,
            errors,
            maybe,
            acked,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }

    fn maybe(&self) -> usize {
        self.maybe.load(Ordering::Relaxed)
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a publisher panicked");
        }
        let mut ids = self.acked.lock().unwrap().clone();
        ids.sort();
        ids
    }
}

#[test]
fn redis_killed_and_restarted_with_its_aof_loses_and_repeats_nothing() {
    if !have_redis("redis_killed_and_restarted_with_its_aof_loses_and_repeats_nothing") {
        return;
    }
    let mut r = RedisServer::start(true);
    let s = connect(opts(&r));
    let seen = Seen::start(&s, None);
    let pubs = Publishers::start(&s, 3);
    assert!(wait_until(LIMIT, || pubs.acked() >= 50));

    // A crash: publishes fail (quickly), the follower reports it.
    r.kill();
    let errors = pubs.errors();
    assert!(wait_until(LIMIT, || pubs.errors() > errors + 3));
    assert!(wait_until(LIMIT, || seen
        .health()
        .last()
        .is_some_and(|h| h.is_err())));
    let err = seen.health().last().unwrap().clone().unwrap_err();
    assert!(err.contains("127.0.0.1"), "{err}");
    r.start_again(true, false);
    let acked = pubs.acked();
    assert!(wait_until(LIMIT, || pubs.acked() >= acked + 50));

    // A clean restart too.
    r.restart();
    let acked = pubs.acked();
    assert!(wait_until(LIMIT, || pubs.acked() >= acked + 50));
    let maybe = pubs.maybe();
    let ids = pubs.finish();

    assert!(seen.wait_for(&ids), "an acknowledged event was lost");
    let got = seen.ids();
    assert!(strictly_increasing(&got), "an event was delivered twice");
    // Redis answers nothing to what it ran just before exiting (it is in
    // its AOF): those publishes retried and got their ids. Only one told
    // "may have been published" may have an event without an ack.
    let extra = got.iter().filter(|id| !ids.contains(id)).count();
    assert!(
        extra <= maybe,
        "{extra} events delivered that no publish acknowledged ({maybe} maybe)"
    );
    assert!(seen.gaps().is_empty(), "{:?}", seen.gaps());
    assert_eq!(seen.health().last(), Some(&Ok(())));
}

#[test]
fn an_emptied_redis_never_reuses_an_id_and_replay_reports_a_gap() {
    if !have_redis("an_emptied_redis_never_reuses_an_id_and_replay_reports_a_gap") {
        return;
    }
    let mut r = RedisServer::start(false);
    let s = connect(opts(&r));
    let seen = Seen::start(&s, None);
    let old: Vec<u64> = (0..5)
        .map(|i| s.publish("t", &payload(&i.to_string())).unwrap().id)
        .collect();
    assert!(seen.wait_for(&old));

    // Restarted without persistence: empty.
    r.kill();
    r.start_again(false, true);
    assert_eq!(r.cli(&["DBSIZE"]), "0");
    let new = publish_retrying(&s, "t", "after");
    assert!(new > old[4], "id {new} after {}", old[4]);
    let replay = s.replay(&["t"], old[4]).unwrap();
    assert!(replay.gap, "Redis lost what came after {}", old[4]);
    assert_eq!(
        replay.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [new]
    );
    // A client that already has the new event is owed nothing.
    assert!(!s.replay(&["t"], new).unwrap().gap);

    // The follower says it may have missed some, then goes on.
    assert!(seen.wait_for(&[new]));
    assert_eq!(seen.gaps(), [old[4]]);
    assert_eq!(seen.ids(), [&old[..], &[new]].concat());

    // Its clock behind the old ids (here: old ids from the far future):
    // an instance that saw them still never lets an id be reused.
    let future = new + 3_600_000_000;
    r.cli(&["SET", "{tinysse}:seq", &future.to_string()]);
    let f = s.publish("t", &payload("future")).unwrap().id;
    assert_eq!(f, future + 1);
    r.kill();
    r.start_again(false, true);
    let after = publish_retrying(&s, "t", "after the second wipe");
    assert!(after > f, "id {after} reused after {f}");
    // A store that saw nothing cannot know: Redis's clock decides.
    let fresh = connect(opts(&r));
    assert!(fresh.highest_id().unwrap() >= after);
}

/// A TCP relay to Redis that, once armed, forwards one publish (`EVALSHA`
/// or `EVAL`) and then cuts the connection before Redis's answer gets
/// back: the script ran, its answer is lost. With `refuse`, every later
/// connection is closed at once too (Redis looks gone).
struct Relay {
    port: u16,
    armed: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(redis_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, r, c, st) = (
            Arc::clone(&armed),
            Arc::clone(&refuse),
            Arc::clone(&cuts),
            Arc::clone(&stop),
        );
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if r.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let redis = TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
                Relay::pipe(client, redis, Arc::clone(&a), Arc::clone(&c));
            }
        });
        Relay {
            port,
            armed,
            refuse,
            cuts,
            stop,
            accept: Some(accept),
        }
    }

    fn pipe(client: TcpStream, redis: TcpStream, armed: Arc<AtomicBool>, cuts: Arc<AtomicUsize>) {
        let cut = Arc::new(AtomicBool::new(false));
        let (mut c_in, mut r_out) = (client.try_clone().unwrap(), redis.try_clone().unwrap());
        let cut_up = Arc::clone(&cut);
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = c_in.read(&mut buf) {
                let eval = buf[..n].windows(4).any(|w| w == b"EVAL");
                // Marked before Redis can see it, so before any answer.
                if eval && armed.swap(false, Ordering::SeqCst) {
                    cut_up.store(true, Ordering::SeqCst);
                }
                if r_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = r_out.shutdown(Shutdown::Both);
        });
        let (mut r_in, mut c_out) = (redis, client);
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = r_in.read(&mut buf) {
                if cut.load(Ordering::SeqCst) {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                if c_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c_out.shutdown(Shutdown::Both);
            let _ = r_in.shutdown(Shutdown::Both);
        });
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_publish_whose_answer_was_lost_is_retried_without_a_second_event() {
    if !have_redis("a_publish_whose_answer_was_lost_is_retried_without_a_second_event") {
        return;
    }
    let r = RedisServer::start(false);
    let relay = Relay::start(r.port);
    let mut o = RedisOptions::new(relay.url());
    o.command_timeout = Duration::from_secs(1);
    let s = connect(o);
    let direct = connect(opts(&r));
    let seen = Seen::start(&direct, None);
    let first = s.publish("t", &payload("first")).unwrap().id;

    // The script runs, the answer is cut: the retry finds its token and
    // answers the same id.
    relay.armed.store(true, Ordering::SeqCst);
    let second = s.publish("t", &payload("second")).expect("retried").id;
    assert_eq!(
        relay.cuts.load(Ordering::SeqCst),
        1,
        "the answer was not cut"
    );
    assert!(second > first);
    assert!(seen.wait_for(&[second]));
    assert_eq!(direct.highest_id().unwrap(), second, "published twice");
    let replay = direct.replay(&["t"], first - 1).unwrap();
    assert_eq!(replay.events.len(), 2, "{replay:?}");

    // Cut, and Redis stays away: the publisher is told it may exist; it
    // does, once.
    relay.refuse.store(true, Ordering::SeqCst);
    relay.armed.store(true, Ordering::SeqCst);
    // A fresh connection, not one closed by `refuse`.
    let t = Instant::now();
    let e = s.publish("t", &payload("third")).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(e, RedisError::MaybePublished { .. }), "{e:?}");
    assert!(e.to_string().contains("may have been published"), "{e}");
    let third = direct.highest_id().unwrap();
    assert!(third > second);
    assert!(seen.wait_for(&[third]));
    assert_eq!(seen.ids(), [first, second, third]);
}

fn publish_retrying(s: &RedisStore, topic: &str, data: &str) -> u64 {
    let end = Instant::now() + LIMIT;
    loop {
        match s.publish(topic, &payload(data)) {
            Ok(p) => return p.id,
            Err(e) if Instant::now() < end => {
                assert!(!e.is_config(), "{e}");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("Redis did not come back: {e}"),
        }
    }
}

#[test]
fn a_hung_redis_fails_publishes_in_time_and_recovers() {
    if !have_redis("a_hung_redis_fails_publishes_in_time_and_recovers") {
        return;
    }
    let mut r = RedisServer::start(false);
    let s = connect(opts(&r));
    let mut seen = Seen::start(&s, None);
    let before: Vec<u64> = (0..5)
        .map(|i| s.publish("t", &payload(&i.to_string())).unwrap().id)
        .collect();
    assert!(seen.wait_for(&before));

    r.pause();
    // Several publishers at once: each fails within the command timeout
    // (1 s here), none hangs.
    let (tx, rx) = mpsc::channel();
    for k in 0..4 {
        let (s, tx) = (s.clone(), tx.clone());
        thread::spawn(move || {
            let t = Instant::now();
            let r = s.publish("t", &payload(&format!("hung {k}")));
            let _ = tx.send((r.map(|p| p.id), t.elapsed()));
        });
    }
    for _ in 0..4 {
        let (res, took) = rx.recv_timeout(LIMIT).expect("a publish hung");
        let err: RedisError = res.expect_err("Redis is stopped");
        assert!(!err.is_config());
        assert!(took < Duration::from_millis(2500), "took {took:?}: {err}");
        assert!(err.to_string().contains("unavailable"), "{err}");
    }
    assert!(wait_until(LIMIT, || seen
        .health()
        .last()
        .is_some_and(|h| h.is_err())));
    // A replay and the counter fail in time too.
    let t = Instant::now();
    assert!(s.replay(&["t"], before[0]).is_err());
    assert!(s.highest_id().is_err());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    r.cont();
    let after = publish_retrying(&s, "t", "after");
    assert!(seen.wait_for(&[after]));
    assert!(wait_until(LIMIT, || seen.health().last() == Some(&Ok(()))));
    let ids = seen.ids();
    assert!(strictly_increasing(&ids), "delivered twice: {ids:?}");
    assert!(before.iter().all(|id| ids.contains(id)));
    assert!(seen.gaps().is_empty(), "{:?}", seen.gaps());
    // The publishes that failed were queued in Redis's sockets and ran
    // after SIGCONT: past their deadline, they wrote nothing.
    let hung: Vec<_> = seen
        .events()
        .into_iter()
        .filter(|e| e.payload.starts_with(b"data: hung"))
        .collect();
    assert!(hung.is_empty(), "a failed publish appeared: {hung:?}");
    assert_eq!(ids, [&before[..], &[after]].concat());

    // Stopping a follower while Redis hangs takes at most its timeouts.
    r.pause();
    assert!(wait_until(LIMIT, || seen
        .health()
        .last()
        .is_some_and(|h| h.is_err())));
    seen.stop_within(Duration::from_secs(4));
    r.cont();
}

#[test]
fn bad_and_unreachable_urls_are_errors() {
    // A bad URL: a configuration error naming it, without its password.
    let e =
        RedisStore::connect(RedisOptions::new("redis://:s3cret@127.0.0.1:notaport")).unwrap_err();
    assert!(e.is_config(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("127.0.0.1") && !text.contains("s3cret"),
        "{text}"
    );

    // Nothing listens there: Redis unavailable, in time, not a config error.
    let port = common::free_port();
    let mut o = RedisOptions::new(format!("redis://:s3cret@127.0.0.1:{port}/"));
    o.connect_timeout = Duration::from_millis(500);
    let t = Instant::now();
    let e = RedisStore::connect(o).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!e.is_config(), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        !text.contains("s3cret") && !format!("{e:?}").contains("s3cret"),
        "{e:?}"
    );
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn a_wrong_password_is_an_error_without_the_password() {
    if !have_redis("a_wrong_password_is_an_error_without_the_password") {
        return;
    }
    let r = RedisServer::start(false);
    r.cli(&["CONFIG", "SET", "requirepass", "right"]);
    let url = format!("redis://:wrong-s3cret@127.0.0.1:{}/", r.port);
    let e = RedisStore::connect(RedisOptions::new(url)).unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("wrong-s3cret"), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!e.is_config(), "Redis decides, it may change: {e:?}");
    let ok = format!("redis://:right@127.0.0.1:{}/", r.port);
    let s = RedisStore::connect(RedisOptions::new(ok)).unwrap();
    assert!(s.publish("t", &payload("x")).is_ok());
}
