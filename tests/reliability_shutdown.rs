//! SIGTERM with 1,000 open streams and a publisher running: every client sees
//! the end of its response and the process exits 0 within 2 s.

mod support_rel;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support_rel::{Bin, metric, open_stream, publish, read_until, wait_until};

#[test]
fn sigterm_ends_a_thousand_streams_and_exits_zero_in_time() {
    let mut bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--max-streams",
        "2000",
    ]);
    let addr = bin.addr;
    let mut streams = Vec::new();
    for i in 0..1000 {
        streams.push(open_stream(addr, &format!("/events?topic=t{}", i % 10)).expect("stream"));
    }
    assert!(wait_until(Duration::from_secs(5), || {
        metric(addr, "tinysse_streams_active") == Some(1000)
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Shutting down: a 503, no answer, or (once the process
                // has exited, which takes well under 2 s with the writer
                // pool) a refused connection.
                if publish(addr, &format!("t{}", n % 10), "tick") != 200 {
                    break;
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    bin.sigterm();
    let deadline = t0 + Duration::from_secs(2);
    let mut unterminated = 0;
    for s in &mut streams {
        let left = deadline.saturating_duration_since(Instant::now());
        let (ended, _) = read_until(s, b"0\r\n\r\n", left.max(Duration::from_millis(10)));
        if !ended {
            unterminated += 1;
        }
    }
    let status = bin.wait_exit(deadline.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().expect("publisher");
    assert!(
        published > 10,
        "the publisher only managed {published} events"
    );
    assert_eq!(unterminated, 0, "streams without the chunked terminator");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {:?}",
        t0.elapsed()
    );
}
