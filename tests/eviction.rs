//! A subscriber that stops reading is evicted; everyone else keeps getting
//! every event, and publishing never waits on the slow one.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tinysse::Event;

#[test]
fn a_stuck_subscriber_is_evicted_while_a_fast_one_gets_everything() {
    const EVENTS: usize = 400;
    let srv = start(
        builder()
            .queue(8)
            .write_timeout(Some(Duration::from_secs(30))),
    );
    let a = srv.addr();
    // The slow one connects and then never reads.
    let slow = sse(a, "/events?topic=big", &[]);
    let fast = sse(a, "/events?topic=big", &[]);
    let reader = std::thread::spawn(move || {
        let mut fast = fast;
        let mut n = 0;
        while n < EVENTS {
            let m = fast.next_message().expect("fast reader").expect("event");
            assert_eq!(m.data.len(), 32 * 1024);
            n += 1;
        }
        n
    });
    let payload = "p".repeat(32 * 1024);
    let hub = srv.handle().hub().clone();
    let mut worst = Duration::ZERO;
    for _ in 0..EVENTS {
        let t = Instant::now();
        hub.publish("big", &Event::data(payload.as_str())).unwrap();
        worst = worst.max(t.elapsed());
        // Pace a little so the fast reader never falls 8 behind.
        std::thread::sleep(Duration::from_micros(300));
    }
    assert_eq!(reader.join().unwrap(), EVENTS);
    // 400 x 32 KiB is far more than the socket buffers hold: the slow one's
    // queue filled up and it was dropped.
    assert!(wait_until(Duration::from_secs(5), || srv
        .handle()
        .metrics()
        .subscribers_evicted()
        == 1));
    assert!(
        worst < Duration::from_millis(100),
        "a publish took {worst:?}"
    );
    drop(slow);
    srv.stop();
}

#[test]
fn an_evicted_subscriber_sees_the_end_and_catches_up_from_history() {
    let srv = start(builder().queue(2).history(10_000));
    let a = srv.addr();
    let mut slow = sse(a, "/events?topic=c", &[]);
    let hub = srv.handle().hub().clone();
    let payload = "q".repeat(64 * 1024);
    // It reads one event (so it has an id to come back with), then stops.
    let mut ids = vec![hub.publish("c", &Event::data("first")).unwrap()];
    assert_eq!(
        slow.next_message().unwrap().unwrap().id,
        Some(ids[0].to_string())
    );
    // Publish until the hub evicts the subscriber that is not reading.
    let t = Instant::now();
    while srv.handle().metrics().subscribers_evicted() == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "never evicted");
        ids.push(hub.publish("c", &Event::data(payload.as_str())).unwrap());
    }
    // Now it reads: what was queued, then the end of the response.
    let mut seen = vec![ids[0]];
    while let Some(m) = slow.next_message().expect("clean end") {
        seen.push(m.id.unwrap().parse::<u64>().unwrap());
    }
    assert!(seen.len() < ids.len(), "nothing was missed");
    assert_eq!(seen[..], ids[..seen.len()]);
    // Reconnecting with the last id it saw fills in the rest, no gap.
    let last = seen.last().unwrap().to_string();
    let mut again = sse(a, "/events?topic=c", &[("Last-Event-ID", &last)]);
    for id in &ids[seen.len()..] {
        let m = again.next_message().unwrap().unwrap();
        assert_ne!(m.event, "gap");
        assert_eq!(m.id, Some(id.to_string()));
    }
    srv.stop();
}
