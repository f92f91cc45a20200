//! A client that connects and stops reading: its stream is ended within the
//! write timeout, its descriptors are released, and nobody else waits on it.

mod support_rel;

use std::io::Read;
use std::time::{Duration, Instant};

use support_rel::{open_stream, proc_fds, wait_until};
use tinysse::{Event, Server};

#[test]
fn stuck_client_is_dropped_in_time_and_others_are_not_delayed() {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .public_dir(None)
        .heartbeat(None)
        .queue(100_000)
        .write_timeout(Some(Duration::from_secs(1)))
        .start()
        .expect("start");
    let addr = server.addr();
    let me = std::process::id();
    let fds_before = proc_fds(me);

    // Never read from: its socket buffers fill and the writer blocks.
    let stuck = open_stream(addr, "/events?topic=t").expect("stuck stream");
    let mut healthy = open_stream(addr, "/events?topic=t").expect("healthy stream");
    healthy
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(server.metrics().streams_active(), 2);

    let payload = "x".repeat(32 * 1024);
    let started = Instant::now();
    let mut stuck_gone_at = None;
    let mut buf = vec![0u8; 256 * 1024];
    // Keep publishing: the healthy reader must get every event promptly
    // while the stuck one's writer is blocked, then cut off.
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(15) {
        i += 1;
        let sent = Instant::now();
        server
            .hub()
            .publish("t", &Event::data(format!("{i} {payload}")))
            .expect("publish");
        let marker = format!("data: {i} ");
        let mut got = Vec::new();
        while !got.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            let n = healthy.read(&mut buf).expect("healthy reader delayed");
            assert!(n > 0, "healthy stream ended");
            got.extend_from_slice(&buf[..n]);
            if got.len() > 1024 * 1024 {
                got.drain(..got.len() - 64 * 1024);
            }
        }
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "event {i} took {:?} to reach the healthy client",
            sent.elapsed()
        );
        if stuck_gone_at.is_none() && server.metrics().streams_active() == 1 {
            stuck_gone_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone = stuck_gone_at.expect("the stuck stream was never ended");
    // Buffers fill within a fraction of a second on loopback, then 1 s of
    // write timeout.
    assert!(
        gone < Duration::from_secs(6),
        "stuck stream ended after {gone:?}"
    );

    // Its two server-side descriptors are closed: what is left is our two
    // client sockets and the healthy stream's two on the server side.
    assert!(
        wait_until(Duration::from_secs(5), || proc_fds(me) <= fds_before + 4),
        "server kept the stuck connection's descriptors: {} open, {} before",
        proc_fds(me),
        fds_before
    );
    drop(stuck);
    drop(healthy);
    server.shutdown();
    assert!(server.join());
}
