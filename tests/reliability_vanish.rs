//! A client that vanishes without a FIN (its packets are dropped inside a
//! network namespace this test creates) is detected by the heartbeat write
//! going unacknowledged for TCP_USER_TIMEOUT (the 5 s write timeout), and
//! its stream, threads and descriptors are released.
//! Needs root, `ip` (iproute2) and `nft` (nftables); skips saying so, or
//! fails when CI is set.

mod support_rel;

use std::time::{Duration, Instant};

use support_rel::{Netns, metric, open_stream, skip_or_fail, wait_until};

#[test]
fn vanished_client_is_released() {
    if let Some(why) = Netns::unusable() {
        skip_or_fail(
            "reliability_vanish::vanished_client_is_released",
            &why,
            "run as root; apt-get install -y iproute2 nftables",
        );
        return;
    }
    let ns = Netns::up("tsse", "10.213.77");
    let bin = ns.start(&["--addr", "10.213.77.1:0", "--no-demo", "--heartbeat", "1"]);
    let addr = bin.addr;

    let keeper = open_stream(addr, "/events?topic=v").expect("stream");
    let threads0 = bin.threads();
    let fds0 = bin.fds();
    let vanishing = open_stream(addr, "/events?topic=v").expect("stream");
    assert_eq!(metric(addr, "tinysse_streams_active"), Some(2));
    let port = vanishing.local_addr().expect("addr").port().to_string();
    assert!(ns.script(&["drop", &port]), "cannot drop packets");
    let t0 = Instant::now();

    // A heartbeat (1 s) goes unacknowledged; after TCP_USER_TIMEOUT (5 s)
    // the kernel aborts the connection and the next write fails.
    let released = wait_until(Duration::from_secs(15), || {
        metric(addr, "tinysse_streams_active") == Some(1)
    });
    let took = t0.elapsed();
    assert!(released, "the vanished stream is still open after {took:?}");
    println!("vanished client released after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        wait_until(Duration::from_secs(5), || bin.fds() <= fds0
            && bin.threads() <= threads0),
        "descriptors {} (had {fds0}), threads {} (had {threads0})",
        bin.fds(),
        bin.threads()
    );
    drop(vanishing);
    drop(keeper);
    bin.stop();
    drop(ns);
}
