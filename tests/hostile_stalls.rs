//! One client cannot delay another's answers: while each single-client
//! attack of the review runs, `/healthz` and a publish from another client
//! answer within a second (findings 2, 3, 4 and 11 of the hostile-clients
//! review; docs/hardening.md).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{builder, start};

/// What "answers at once" means here: far above loopback latency on a busy
/// 2-core machine, far below the 5 s and 10 s timeouts an attacker holds a
/// shared thread for when the server gets it wrong.
const BOUND: Duration = Duration::from_secs(1);

/// A short request on a fresh connection; its status and how long it took.
fn timed(addr: SocketAddr, raw: &[u8]) -> (u16, Duration) {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, t.elapsed());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(raw).is_err() {
        return (0, t.elapsed());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = std::str::from_utf8(got.get(9..12).unwrap_or(b"000"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, t.elapsed())
}

/// Another client's `/healthz` and publish, repeated for `during` while an
/// attack runs: every answer must be right and within [`BOUND`].
fn others_are_served(addr: SocketAddr, during: Duration) {
    let health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let body = r#"{"topic":"other","data":"still here"}"#;
    let publish = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let end = Instant::now() + during;
    let mut rounds = 0;
    while Instant::now() < end || rounds < 3 {
        for (what, raw) in [("healthz", &health[..]), ("publish", publish.as_bytes())] {
            let (status, took) = timed(addr, raw);
            assert_eq!(status, 200, "{what} during the attack (round {rounds})");
            assert!(
                took < BOUND,
                "{what} took {took:?} during the attack (round {rounds})"
            );
        }
        rounds += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

/// Opens `n` connections that each send `raw` and then hold on, neither
/// sending more nor reading.
fn hold(addr: SocketAddr, n: usize, raw: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(raw).expect("send");
            s
        })
        .collect()
}

/// Finding 2: a request head whose body never comes (`POST /events` with a
/// `Content-Length: 2000`, or a publish) held the dispatcher for the read
/// timeout, each.
#[test]
fn bodies_that_never_come_hold_no_one_else() {
    let server = start(builder());
    let addr = server.addr();
    let mut held = hold(
        addr,
        5,
        b"POST /events?topic=a HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
    );
    held.extend(hold(
        addr,
        5,
        b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 2000\r\n\r\n{\"topic\":",
    ));
    held.extend(hold(
        addr,
        5,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
    ));
    others_are_served(addr, Duration::from_secs(3));
    drop(held);
}

/// Finding 3: a connection that pipelines requests whose answers it never
/// reads (bad `GET /events`, whose `400` the dispatcher wrote; static files,
/// one per short-request worker) held a shared thread in each blocked write.
#[test]
fn pipelined_answers_never_read_hold_no_one_else() {
    let dir = std::env::temp_dir().join(format!("tinysse-stalls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.js"), "x".repeat(256 * 1024)).unwrap();
    let server = start(builder().public_dir(Some(dir.clone())));
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = [
        &b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
    ]
    .into_iter()
    .map(|one| {
        let stop = stop.clone();
        let burst = one.repeat(2000);
        thread::spawn(move || {
            // Opens another connection whenever its writes stall, as the
            // review's attacker did, keeping the earlier ones open and
            // never reading from any.
            let mut open = Vec::new();
            while !stop.load(Ordering::Relaxed) && open.len() < 20 {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    break;
                };
                s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
                while !stop.load(Ordering::Relaxed) && s.write_all(&burst).is_ok() {}
                open.push(s);
            }
        })
    })
    .collect();
    // Let the attackers fill their sockets' buffers first.
    thread::sleep(Duration::from_millis(500));
    others_are_served(addr, Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 4: connections that send their bodies a byte at a time held
/// every connection slot, so new clients waited in the backlog. At the cap,
/// the connection that has kept its slot longest for one request is shut
/// down to make room.
#[test]
fn slow_bodies_cannot_take_every_connection() {
    let server = start(builder().max_connections(Some(32)));
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let head = b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{";
    let mut held = hold(addr, 60, head);
    // A byte now and then on each, so no per-read timeout ends them.
    let trickle = {
        let stop = stop.clone();
        let mut conns: Vec<TcpStream> = held.drain(..).collect();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &mut conns {
                    let _ = s.write_all(b" ");
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    others_are_served(addr, Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
}

/// Finding 11: `Connection: upgrade` made the body reader the raw socket,
/// read on a worker with no deadline.
#[test]
fn an_upgrade_publish_holds_no_one_else() {
    let server = start(builder());
    let addr = server.addr();
    let held = hold(
        addr,
        8,
        b"POST /publish HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"topic\":",
    );
    others_are_served(addr, Duration::from_secs(3));
    drop(held);
}
