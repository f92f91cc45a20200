//! What a stream costs in threads: an `/events` stream holds none once
//! tiny_http has handed its socket to the writer pool, a custom route's
//! stream costs its producer thread and nothing else, and `join()` leaves
//! no pool thread behind.
//!
//! Threads are counted for the whole test process, so no other test may
//! run meanwhile: this file holds only such tests, and each takes
//! `common::alone()`.

mod common;

use std::time::Duration;

use common::{TIMEOUT, alone, builder, sse, start, wait_until};
use crossbeam_channel::bounded;
use tinysse::{Event, EventStream};

/// This process's live threads: how many, and their names (`comm`, at
/// most 15 bytes). One that has exited but is not yet reaped is not live.
fn threads() -> (usize, Vec<String>) {
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the parenthesised name.
                    let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
                    !matches!(state, None | Some(Some('Z' | 'X')))
                })
                .map(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .unwrap_or_default()
                        .trim_end()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    (names.len(), names)
}

fn named(names: &[String], prefix: &str) -> usize {
    names.iter().filter(|n| n.starts_with(prefix)).count()
}

#[test]
fn a_stream_holds_no_thread() {
    let _alone = alone();
    let srv = start(builder().writer_threads(1).max_streams(4096));
    let before = threads().0;
    let subs: Vec<EventStream> = (0..200)
        .map(|_| sse(srv.addr(), "/events?topic=threads", &[]))
        .collect();
    // tiny_http's connection threads end once the sockets are handed over
    // (its pool keeps a few idle ones for a while).
    let settled = wait_until(Duration::from_secs(5), || threads().0 < before + 20);
    assert!(
        settled,
        "{} threads for 200 streams (from {before})",
        threads().0
    );
    srv.handle()
        .hub()
        .publish("threads", &Event::data("x"))
        .unwrap();
    for mut s in subs {
        assert_eq!(s.next_message().unwrap().unwrap().data, "x");
    }
    assert!(srv.stop());
}

#[test]
fn n_custom_route_streams_add_only_n_producer_threads() {
    const N: usize = 40;
    let _alone = alone();
    let (release_tx, release_rx) = bounded::<()>(0);
    let srv = start(
        builder()
            .writer_threads(1)
            .stream_route("/hold", move |_rq, tx| {
                if tx.send(Event::data("held")).is_ok() {
                    // Open until released (or the test's time is up).
                    let _ = release_rx.recv_timeout(Duration::from_secs(20));
                }
            }),
    );
    // A new thread takes its name once it runs: wait for the pool's.
    wait_until(Duration::from_secs(5), || {
        named(&threads().1, "tinysse-writer") == 1
    });
    let (before, names) = threads();
    assert_eq!(named(&names, "tinysse-writer"), 1, "{names:?}");
    let mut streams: Vec<EventStream> = (0..N).map(|_| sse(srv.addr(), "/hold", &[])).collect();
    for s in &mut streams {
        assert_eq!(s.next_message().unwrap().unwrap().data, "held");
    }
    // tiny_http's connection threads end once the sockets are handed over
    // (its pool keeps a few idle ones for a while): settle on the count.
    wait_until(Duration::from_secs(5), || threads().0 < before + N + 10);
    let (total, names) = threads();
    assert_eq!(named(&names, "tinysse-produc"), N, "{names:?}");
    assert_eq!(named(&names, "tinysse-writer"), 1, "{names:?}");
    assert_eq!(named(&names, "tinysse-stream"), 0, "{names:?}");
    assert!(
        total < before + N + 10,
        "{total} threads for {N} streams (from {before}): {names:?}"
    );
    // Released, every producer returns and every stream ends.
    drop(release_tx);
    for mut s in streams {
        assert_eq!(s.next_message().unwrap(), None);
    }
    assert!(
        wait_until(TIMEOUT, || named(&threads().1, "tinysse-produc") == 0),
        "producers still running"
    );
    assert!(srv.stop());
    // join() returns once the pool's threads have ended.
    let names = threads().1;
    assert_eq!(named(&names, "tinysse-writer"), 0, "{names:?}");
    assert_eq!(named(&names, "tinysse-relay"), 0, "{names:?}");
}
