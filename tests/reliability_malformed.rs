//! Malformed and hostile requests get an error status or a close, never a
//! hang or a panic, and the server keeps serving.

mod support_rel;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support_rel::{connect, exchange, get, read_head, status_of};
use tinysse::Server;

fn start() -> tinysse::ServerHandle {
    Server::builder()
        .addr("127.0.0.1:0")
        .public_dir(Some(std::env::temp_dir()))
        .header_timeout(Some(Duration::from_secs(2)))
        .start()
        .expect("start")
}

fn healthy(addr: SocketAddr) {
    let t = Instant::now();
    assert_eq!(get(addr, "/healthz").0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "/healthz took {:?}",
        t.elapsed()
    );
}

#[test]
fn garbage_gets_an_error_or_a_close() {
    let server = start();
    let addr = server.addr();
    let huge_query = format!("GET /events?topic={} HTTP/1.1\r\n\r\n", "a".repeat(1 << 20));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage line", b"GARBAGE\r\n\r\n".to_vec(), &[0, 400]),
        ("binary", b"\x00\xff\xfe\r\n\r\n".to_vec(), &[0, 400]),
        ("no version", b"GET /\r\n\r\n".to_vec(), &[0, 400]),
        ("bad escape", b"GET /%zz HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("escape not UTF-8", b"GET /%ff%fe HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("raw bytes in path", b"GET /\xc3\x28 HTTP/1.1\r\n\r\n".to_vec(), &[0, 400]),
        ("bad topic escape", b"GET /events?topic=%ff HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("NUL escape", b"GET /a%00b HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("climbing", b"GET /../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(), &[404]),
        ("huge query", huge_query.into_bytes(), &[0, 414]),
        ("bad header", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(), &[0, 400]),
        ("HTTP/2.0", b"GET /healthz HTTP/2.0\r\n\r\n".to_vec(), &[505]),
        (
            "form not UTF-8",
            b"POST /publish HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\ntopic=a&data=\xff".to_vec(),
            &[400],
        ),
        (
            "bad JSON",
            b"POST /publish HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\":".to_vec(),
            &[400],
        ),
        (
            "huge Content-Length",
            b"POST /publish HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 99999999999999\r\n\r\n{}".to_vec(),
            &[413],
        ),
        (
            "huge Content-Length on GET",
            b"GET /healthz HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\nxx".to_vec(),
            &[200],
        ),
        (
            "negative Content-Length",
            b"POST /publish HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}".to_vec(),
            &[0, 400],
        ),
        (
            "bad chunks",
            b"POST /publish HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n".to_vec(),
            &[0, 400],
        ),
        ("unknown Expect", b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n".to_vec(), &[417]),
    ];
    for (name, raw, allowed) in cases {
        let t = Instant::now();
        let (status, _) = exchange(addr, &raw, Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{name}: no answer or close for {:?}",
            t.elapsed()
        );
        assert!(
            allowed.contains(&status),
            "{name}: status {status}, expected one of {allowed:?}"
        );
        healthy(addr);
    }
    server.shutdown();
    assert!(server.join());
}

/// A body shorter than its Content-Length, the connection left open: the
/// handler waits a bounded time, and other requests are served meanwhile.
#[test]
fn short_bodies_do_not_hold_the_workers() {
    let server = start();
    let addr = server.addr();
    let mut held = Vec::new();
    let t = Instant::now();
    // More of them than there are workers (4), with bodies small enough to
    // be read on the connection thread (<= 1 KiB) and large enough to be
    // read by a worker.
    for len in [100, 500, 5000, 20000, 30000, 40000] {
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        let head = format!(
            "POST /publish HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{\"topic\":"
        );
        s.write_all(head.as_bytes()).expect("write");
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    healthy(addr);
    assert_eq!(support_rel::publish(addr, "ok", "still publishing"), 200);
    for mut s in held {
        let status = read_head(&mut s).map(|h| status_of(&h)).unwrap_or(0);
        assert!(
            matches!(status, 0 | 400 | 408),
            "short body: status {status}"
        );
    }
    // Each waited about the 2 s header timeout, all at once.
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "took {:?}",
        t.elapsed()
    );
    healthy(addr);
    server.shutdown();
    assert!(server.join());
}

/// Requests pipelined behind a stream on the same connection must not be
/// handed to the workers, where they would block until the stream ends.
#[test]
fn pipelining_behind_a_stream_does_not_block_workers() {
    let server = start();
    let addr = server.addr();
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut s = connect(addr);
        let mut raw = b"GET /events?topic=p HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        for _ in 0..4 {
            raw.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        s.write_all(&raw).expect("write");
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        healthy(addr);
    }
    drop(conns);
    server.shutdown();
    assert!(server.join());
}
