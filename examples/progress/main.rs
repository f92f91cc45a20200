//! A blocking program that streams its progress to a browser.
//!
//! It counts primes (a stand-in for any long computation) on the main
//! thread, publishing a `progress` event after each block of work, serves a
//! page that shows a progress bar, and exits cleanly when the work is done.
//!
//!     cargo run --example progress            # then open the printed URL
//!     cargo run --example progress -- --addr 127.0.0.1:0 --limit 200000 --blocks 10 --linger-ms 0
//!
//! Flags: `--addr` (default 127.0.0.1:8080), `--limit` (count primes below
//! it, default 30,000,000), `--blocks` (progress steps, default 100),
//! `--wait-ms` (before the work, how long to wait for a first page to
//! connect, default 0), `--linger-ms` (after the work, how long to keep
//! serving while a page is still connected, default 5000).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tinysse::{Event, Server};

struct Args {
    addr: String,
    limit: u64,
    blocks: u64,
    wait: Duration,
    linger: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".into(),
        limit: 30_000_000,
        blocks: 100,
        wait: Duration::ZERO,
        linger: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag}: missing value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--addr" => a.addr = value.clone(),
            "--limit" => a.limit = number()?.max(2),
            "--blocks" => a.blocks = number()?.clamp(1, 10_000),
            "--wait-ms" => a.wait = Duration::from_millis(number()?),
            "--linger-ms" => a.linger = Duration::from_millis(number()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let server = Server::builder()
        .addr(args.addr.as_str())
        // The page lives beside this file.
        .public_dir(Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/progress"),
        ))
        // Enough history for a page opened late to replay every step.
        .history(args.blocks as usize + 1)
        // A page that closed is noticed at the next write: keep that soon.
        .heartbeat(Some(Duration::from_secs(1)))
        .start()?;
    println!("listening on http://{}", server.addr());

    let wait_until = Instant::now() + args.wait;
    while server.metrics().streams_active() == 0 && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(20));
    }

    // The work runs right here, on the main thread: publishing never blocks
    // it, whether no browser or a hundred are watching.
    let hub = server.hub();
    let started = Instant::now();
    let per_block = args.limit.div_ceil(args.blocks);
    let mut primes = 0u64;
    for block in 0..args.blocks {
        let lo = block * per_block;
        let hi = ((block + 1) * per_block).min(args.limit);
        primes += (lo..hi).filter(|&n| is_prime(n)).count() as u64;
        let progress = json!({"done": block + 1, "total": args.blocks, "primes": primes});
        hub.publish("progress", &Event::json(&progress)?.with_event("progress")?)?;
    }
    let secs = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    let done = json!({"primes": primes, "limit": args.limit, "secs": secs});
    hub.publish("progress", &Event::json(&done)?.with_event("done")?)?;
    println!("done: {primes} primes below {}", args.limit);

    // Give watching pages the time to read the last event: the page closes
    // its EventSource on `done`, and the server notices at its next write.
    let linger_until = Instant::now() + args.linger;
    while server.metrics().streams_active() > 0 && Instant::now() < linger_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every open stream ends with a complete response, then we exit.
    if !server.join() {
        eprintln!("some streams did not end in time");
    }
    Ok(())
}
