//! A custom route's stream costs its producer thread and nothing else: the
//! writer pool serves it; and `join()` leaves no pool thread behind. On its
//! own in this file, so no other test's threads are counted.

use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use tinysse::{Event, EventStream, Server};

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
fn n_custom_route_streams_add_only_n_producer_threads() {
    const N: usize = 40;
    let (release_tx, release_rx) = bounded::<()>(0);
    let srv = Server::builder()
        .addr("127.0.0.1:0")
        .writer_threads(1)
        .stream_route("/hold", move |_rq, tx| {
            if tx.send(Event::data("held")).is_ok() {
                // Open until released (or the test's time is up).
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
            }
        })
        .start()
        .expect("server starts");
    // A new thread takes its name once it runs: wait for the pool's.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (before, names) = loop {
        let (total, names) = threads();
        if named(&names, "tinysse-writer") == 1 || Instant::now() > deadline {
            break (total, names);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(named(&names, "tinysse-writer"), 1, "{names:?}");
    let mut streams: Vec<EventStream> = (0..N)
        .map(|_| {
            let s = EventStream::connect(srv.addr(), "/hold", &[]).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        })
        .collect();
    for s in &mut streams {
        assert_eq!(s.next_message().unwrap().unwrap().data, "held");
    }
    // tiny_http's connection threads end once the sockets are handed over
    // (its pool keeps a few idle ones for a while): settle on the count.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (total, names) = loop {
        let (total, names) = threads();
        if total < before + N + 10 || Instant::now() > deadline {
            break (total, names);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while named(&threads().1, "tinysse-produc") > 0 {
        assert!(Instant::now() < deadline, "producers still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(srv.join());
    // join() returns once the pool's threads have ended.
    let names = threads().1;
    assert_eq!(named(&names, "tinysse-writer"), 0, "{names:?}");
    assert_eq!(named(&names, "tinysse-relay"), 0, "{names:?}");
}
