//! Graceful shutdown: every open stream sees the end of its response, through
//! the library handle and through SIGTERM/SIGINT to the binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tinysse::Event;

#[test]
fn handle_shutdown_ends_open_streams() {
    let srv = start(builder().stream_route("/silent", |_rq, tx| {
        // Keeps the stream open until the client or the server goes.
        while tx.send(Event::comment("")).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
    let mut streams = Vec::new();
    for i in 0..10 {
        let target = if i % 2 == 0 {
            "/events?topic=t"
        } else {
            "/silent"
        };
        streams.push(sse(srv.addr(), target, &[]));
    }
    assert!(wait_until(Duration::from_secs(5), || srv
        .handle()
        .metrics()
        .streams_active()
        == 10));
    let t = Instant::now();
    srv.handle().shutdown();
    for mut s in streams {
        while s.next_message().expect("clean end of response").is_some() {}
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(srv.stop(), "streams did not all end");
}

#[test]
fn after_shutdown_the_port_is_released() {
    let srv = start(builder());
    let addr = srv.addr();
    assert!(srv.stop());
    assert!(
        wait_until(Duration::from_secs(2), || std::net::TcpStream::connect(
            addr
        )
        .is_err()),
        "still accepting after shutdown"
    );
}

fn signal_ends_streams_and_exits_zero(sig: &str) {
    let mut bin = Bin::start(&["--addr", "127.0.0.1:0", "--heartbeat", "0"]);
    let mut a = sse(bin.addr, "/events?topic=x", &[]);
    let mut b = sse(bin.addr, "/async", &[]);
    assert_eq!(b.next_message().unwrap().unwrap().data, r#"{"val":42}"#);
    let t = Instant::now();
    bin.signal(sig);
    while a.next_message().expect("clean end").is_some() {}
    while b.next_message().expect("clean end").is_some() {}
    let code = bin.wait_exit(Duration::from_secs(3)).and_then(|s| s.code());
    assert_eq!(code, Some(0));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn sigterm_ends_streams_and_exits_zero() {
    signal_ends_streams_and_exits_zero("TERM");
}

#[test]
fn sigint_ends_streams_and_exits_zero() {
    signal_ends_streams_and_exits_zero("INT");
}
