//! Thousands of connect/subscribe/disconnect cycles: threads and descriptors
//! return to their baseline and memory stays within a small bound.

mod support_rel;

use std::time::Duration;

use support_rel::{Bin, get, open_stream, wait_until};

#[test]
fn no_threads_descriptors_or_memory_leak() {
    let bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--heartbeat",
        "1",
        "--max-streams",
        "4096",
    ]);
    let addr = bin.addr;
    // Warm up, then let tiny_http's spare threads retire (5 s idle).
    for _ in 0..50 {
        drop(open_stream(addr, "/events?topic=warm").expect("stream"));
        assert_eq!(get(addr, "/healthz").0, 200);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (threads0, fds0, rss0) = (bin.threads(), bin.fds(), bin.rss_kib());

    // Two rounds: the first sets the high-water mark of the allocator and
    // of glibc's cached thread stacks; a leak shows as growth in the second.
    let mut rss_after = Vec::new();
    for round in 0..2 {
        cycles(addr);
        // Dropped streams are noticed at the next heartbeat (1 s); idle
        // spare connection threads retire after 5 s.
        let back = wait_until(Duration::from_secs(20), || {
            bin.threads() <= threads0 + 1 && bin.fds() <= fds0
        });
        assert!(
            back,
            "round {round}: threads {} (baseline {threads0}), descriptors {} (baseline {fds0})",
            bin.threads(),
            bin.fds()
        );
        rss_after.push(bin.rss_kib());
    }
    let grown = rss_after[1].saturating_sub(rss_after[0]);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB in the second 3000 cycles (start {rss0} KiB, after each round {rss_after:?})"
    );
    bin.stop();
}

/// 3000 subscribe/disconnect cycles from 4 client threads, with a `/healthz`
/// every 10.
fn cycles(addr: std::net::SocketAddr) {
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                for i in 0..750 {
                    let s = open_stream(addr, &format!("/events?topic=l{}", (w * 7 + i) % 50))
                        .expect("stream");
                    drop(s);
                    if i % 10 == 0 {
                        assert_eq!(get(addr, "/healthz").0, 200);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
}
