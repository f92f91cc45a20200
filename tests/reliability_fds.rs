//! Out of descriptors: with `prlimit --nofile=64` and more clients than fit,
//! the server stays up, keeps its open streams, and serves the waiting
//! clients once descriptors free up.

mod support_rel;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support_rel::{Bin, read_head, read_until, require, status_of};

#[test]
fn descriptor_exhaustion_is_survived() {
    if !require(
        "reliability_fds::descriptor_exhaustion_is_survived",
        &["prlimit"],
        "apt-get install -y util-linux",
    ) {
        return;
    }
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", env!("CARGO_BIN_EXE_tinysse")]);
    let mut bin = Bin::start_cmd(
        cmd,
        &["--addr", "127.0.0.1:0", "--no-demo", "--heartbeat", "1"],
        &[],
    );
    let addr = bin.addr;

    // Ask for more streams than 64 descriptors allow: an `/events` stream
    // holds one once its socket is handed to the writer pool (two while
    // tiny_http reads its head).
    let mut pending: Vec<TcpStream> = Vec::new();
    for _ in 0..70 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /events?topic=fd HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        pending.push(s);
    }
    let mut open = Vec::new();
    let mut waiting = Vec::new();
    for mut s in pending {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        match read_head(&mut s) {
            Ok(h) if status_of(&h) == 200 => open.push(s),
            Ok(h) => panic!("unexpected answer {}", String::from_utf8_lossy(&h)),
            Err(_) => waiting.push(s),
        }
    }
    assert!(bin.alive(), "the server died");
    assert!(open.len() >= 10, "only {} streams opened", open.len());
    assert!(!waiting.is_empty(), "descriptors were never exhausted");
    println!("{} open, {} waiting", open.len(), waiting.len());

    // Free enough descriptors for the waiting ones and a publish.
    let to_close = waiting.len() + 3;
    assert!(
        open.len() > to_close + 5,
        "too few streams opened: {}",
        open.len()
    );
    open.truncate(open.len() - to_close);
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let h = read_head(s).expect("a waiting client was never served");
        assert_eq!(status_of(&h), 200);
    }
    open.append(&mut waiting);

    let status = support_rel::publish(addr, "fd", "after the storm");
    assert_eq!(status, 200);
    for s in &mut open {
        let (got, _) = read_until(s, b"data: after the storm", Duration::from_secs(5));
        assert!(got, "an open stream missed the event");
    }
    drop(open);
    bin.stop();
}
