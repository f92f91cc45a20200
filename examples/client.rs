//! A blocking SSE client that survives dropped connections.
//!
//! It reads a stream with `tinysse::EventStream` (plain `std::net::TcpStream`,
//! no runtime) and, whenever the connection drops, reconnects after the
//! server's `retry:` delay with `Last-Event-ID` set to the id of the last
//! event it saw, so the server replays what was missed.
//!
//!     cargo run --example client
//!         (starts its own server publishing "tick N" ten times a second, and
//!         drops its connection every 5 events to show the catch-up)
//!     cargo run --example client -- --connect 127.0.0.1:8080 --target '/events?topic=demo' --drop-every 0
//!
//! Flags: `--connect HOST:PORT` (default: a server of its own), `--target`
//! (default `/events?topic=ticks`), `--count N` events to read in all
//! (default 20), `--drop-every K` events per connection before dropping it
//! (default 5, 0 = never).

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, bounded};
use tinysse::{Event, EventStream, Item, Server, ServerHandle};

struct Args {
    connect: Option<String>,
    target: String,
    count: u64,
    drop_every: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        connect: None,
        target: "/events?topic=ticks".into(),
        count: 20,
        drop_every: 5,
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
            "--connect" => a.connect = Some(value.clone()),
            "--target" => a.target = value.clone(),
            "--count" => a.count = number()?,
            "--drop-every" => a.drop_every = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// A server of our own, with a thread publishing "tick N" on topic `ticks`.
fn own_server() -> Result<(ServerHandle, impl FnOnce()), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .retry(Some(200))
        .start()?;
    let hub = server.hub().clone();
    let (stop, stopped) = bounded::<()>(0);
    let publisher = thread::spawn(move || {
        for n in 1.. {
            if let Err(e) = hub.publish("ticks", &Event::data(format!("tick {n}"))) {
                eprintln!("publish: {e}");
            }
            match stopped.recv_timeout(Duration::from_millis(100)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    });
    let finish = move || {
        drop(stop);
        let _ = publisher.join();
    };
    Ok((server, finish))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut own = None;
    let addr: SocketAddr = match &args.connect {
        Some(a) => a
            .to_socket_addrs()?
            .next()
            .ok_or("address did not resolve")?,
        None => {
            let (server, finish) = own_server()?;
            let addr = server.addr();
            own = Some((server, finish));
            addr
        }
    };

    let mut last_id = String::new();
    // Until the server says otherwise with `retry:`, as EventSource does.
    let mut delay = Duration::from_secs(1);
    let mut received = 0u64;
    let mut failures = 0u32;
    let mut ticks = Vec::new();
    while received < args.count {
        let headers: Vec<(&str, &str)> = if last_id.is_empty() {
            Vec::new()
        } else {
            vec![("Last-Event-ID", last_id.as_str())]
        };
        let mut stream = match EventStream::connect(addr, &args.target, &headers) {
            Ok(s) if s.status() == 200 => s,
            Ok(s) if s.status() == 503 => {
                println!("server busy (503), retrying");
                failures += 1;
                thread::sleep(delay);
                continue;
            }
            Ok(s) => {
                let status = s.status();
                return Err(format!("{status}: {}", s.body_text()?.trim()).into());
            }
            Err(e) => {
                failures += 1;
                if failures > 10 {
                    return Err(format!("giving up after {failures} failures: {e}").into());
                }
                println!("cannot connect ({e}), retrying in {delay:?}");
                thread::sleep(delay);
                continue;
            }
        };
        failures = 0;
        // Longer than the server's heartbeat: silence this long means the
        // connection is dead even if TCP has not noticed.
        stream.set_read_timeout(Some(Duration::from_secs(45)))?;
        println!("connected (Last-Event-ID: {last_id:?})");

        let mut on_this_connection = 0;
        loop {
            match stream.next_item() {
                Ok(Some(Item::Retry(ms))) => delay = Duration::from_millis(ms),
                Ok(Some(Item::Comment(_))) => {} // a heartbeat
                Ok(Some(Item::Event(m))) if m.event == "gap" => {
                    // Some events can no longer be replayed: refetch state.
                    println!("gap: {}", m.data);
                }
                Ok(Some(Item::Event(m))) => {
                    last_id = m.last_event_id.clone();
                    println!("{} {}", m.last_event_id, m.data);
                    if let Some(n) = m.data.strip_prefix("tick ") {
                        ticks.push(n.parse::<u64>().unwrap_or(0));
                    }
                    received += 1;
                    on_this_connection += 1;
                    if received >= args.count {
                        break;
                    }
                    if args.drop_every > 0 && on_this_connection == args.drop_every {
                        println!("dropping the connection");
                        break;
                    }
                }
                Ok(None) => {
                    println!("the server ended the stream");
                    break;
                }
                Err(e) => {
                    println!("connection lost: {e}");
                    break;
                }
            }
        }
        stream.close();
        if received < args.count {
            thread::sleep(delay);
        }
    }

    if let Some((server, finish)) = own {
        finish();
        server.join();
        // Our own server publishes 1, 2, 3...: across every reconnect there
        // must be no gap and no duplicate.
        let start = ticks.first().copied().unwrap_or(0);
        let expected: Vec<u64> = (start..start + ticks.len() as u64).collect();
        if ticks != expected {
            return Err(format!("lost or repeated events: {ticks:?}").into());
        }
        println!("ok: {received} events, none lost, none repeated");
    }
    Ok(())
}
