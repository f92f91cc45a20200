//! A header bomb and hundreds of connections sending their request head a
//! byte a second: bounded memory and threads, cut off by the 10 s header
//! timeout, and /healthz answers promptly for everyone else meanwhile.

mod support_rel;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support_rel::{Bin, connect, exchange, get, wait_until};

#[test]
fn header_bomb_gets_431_and_memory_stays_bounded() {
    let bin = Bin::start(&["--addr", "127.0.0.1:0", "--no-demo"]);
    let rss_before = bin.rss_kib();
    for _ in 0..3 {
        let mut raw = b"GET /healthz HTTP/1.1\r\n".to_vec();
        while raw.len() < 4 << 20 {
            raw.extend_from_slice(b"X-Bomb: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        let t = Instant::now();
        // The server answers and closes long before the 4 MiB are sent, so
        // our write may fail with a reset: either way it must not hang.
        let (status, _) = exchange(bin.addr, &raw, Duration::from_secs(5));
        assert!(matches!(status, 0 | 431), "status {status}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(get(bin.addr, "/healthz").0, 200);
    let grown = bin.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
    bin.stop();
}

#[test]
fn slow_heads_are_cut_off_and_do_not_starve_others() {
    let bin = Bin::start(&["--addr", "127.0.0.1:0", "--no-demo"]);
    let threads_before = bin.threads();
    const N: usize = 300;
    let mut slow: Vec<_> = (0..N).map(|_| connect(bin.addr)).collect();
    for s in &mut slow {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut closed = vec![false; N];
    let mut last_cut = Duration::ZERO;
    let mut max_threads = 0;
    let mut tick = 0usize;
    // One byte a second on each, for longer than the 10 s header timeout.
    while started.elapsed() < Duration::from_secs(20) && closed.iter().any(|c| !c) {
        for (i, s) in slow.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            let _ = s.write(&head[tick % head.len()..][..1]);
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                // 408, or the close itself
                Ok(_) | Err(_) => closed[i] = true,
            }
            last_cut = started.elapsed();
        }
        tick += 1;
        let t = Instant::now();
        assert_eq!(get(bin.addr, "/healthz").0, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "/healthz took {:?} with {N} slow heads",
            t.elapsed()
        );
        max_threads = max_threads.max(bin.threads());
        std::thread::sleep(Duration::from_secs(1));
    }
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open, 0,
        "slow heads never cut off (last cut at {last_cut:?})"
    );
    // 10 s, plus a pass of this loop to notice.
    assert!(
        last_cut < Duration::from_secs(13),
        "last cut off after {last_cut:?}"
    );
    // One connection thread each, bounded by the connection cap.
    assert!(
        max_threads <= threads_before + N + 8,
        "{max_threads} threads"
    );
    drop(slow);
    assert!(
        wait_until(Duration::from_secs(10), || bin.threads()
            <= threads_before + 4),
        "threads stayed at {} (from {threads_before})",
        bin.threads()
    );
    bin.stop();
}
