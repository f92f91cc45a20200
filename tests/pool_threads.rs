//! An `/events` stream holds no thread: 200 open streams add none to the
//! process once tiny_http has handed their sockets to the writer pool. On its
//! own in this file, so no other test's threads are counted.

use std::thread;
use std::time::Duration;

use tinysse::{Event, EventStream, Server};

#[test]
fn a_stream_holds_no_thread() {
    let srv = Server::builder()
        .addr("127.0.0.1:0")
        .writer_threads(1)
        .max_streams(4096)
        .start()
        .expect("server starts");
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = threads();
    let subs: Vec<EventStream> = (0..200)
        .map(|_| {
            let s =
                EventStream::connect(srv.addr(), "/events?topic=threads", &[]).expect("subscribe");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        })
        .collect();
    // tiny_http's connection threads end once the sockets are handed over
    // (its pool keeps a few idle ones for a while).
    let settled = (0..100).any(|_| {
        thread::sleep(Duration::from_millis(50));
        threads() < before + 20
    });
    assert!(
        settled,
        "{} threads for 200 streams (from {before})",
        threads()
    );
    srv.hub().publish("threads", &Event::data("x")).unwrap();
    for mut s in subs {
        assert_eq!(s.next_message().unwrap().unwrap().data, "x");
    }
    assert!(srv.join());
}
