//! The seed's shape, written out: a stream route whose handler gets a
//! `Sender`, produces on a thread of its own, and ends the stream by dropping
//! the sender.
//!
//!     cargo run --example seed
//!     curl -N 'http://127.0.0.1:8080/countdown?from=3'
//!     curl -N 'http://127.0.0.1:8080/job'
//!
//! Flags: `--addr` (default 127.0.0.1:8080), `--tick-ms` (pause between
//! events, default 1000). Ctrl-C (SIGINT) or SIGTERM ends every open stream
//! cleanly and exits.

use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use serde_json::json;
use tinysse::{Event, Server, StreamRequest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:8080".to_string();
    let mut tick = Duration::from_secs(1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--addr" => addr = value,
            "--tick-ms" => tick = Duration::from_millis(value.parse()?),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }

    let server = Server::builder()
        .addr(addr)
        // The handler runs on a producer thread the server starts for each
        // request: it may block, sleep and compute as it likes.
        .stream_route(
            "/countdown",
            move |req: &StreamRequest, tx: Sender<Event>| {
                let from: u64 = req.query("from").and_then(|v| v.parse().ok()).unwrap_or(3);
                for n in (1..=from.min(1000)).rev() {
                    let ev = Event::data(json!({ "n": n }).to_string())
                        .with_id(n.to_string())
                        .expect("digits hold no line break");
                    // An Err from send: the client went away or the server is
                    // stopping. Either way nobody is listening any more.
                    if tx.send(ev).is_err() {
                        return;
                    }
                    thread::sleep(tick);
                }
                let _ = tx.send(Event::data(json!({"msg": "end"}).to_string()));
                // Dropping the last Sender ends the response: the client sees
                // the end of the stream at once.
                drop(tx);
            },
        )
        // The handler may hand the Sender to a thread of its own and return
        // at once; the stream lives as long as that Sender does.
        .stream_route("/job", move |_req: &StreamRequest, tx: Sender<Event>| {
            thread::spawn(move || {
                for step in ["queued", "running", "finished"] {
                    if tx.send(Event::data(step)).is_err() {
                        return;
                    }
                    thread::sleep(tick);
                }
            });
        })
        .start()?;
    println!("listening on http://{}", server.addr());

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })?;
    let _ = stop_rx.recv();
    eprintln!("stopping");
    // Open streams end with a complete response; producers then see their
    // next send fail and return.
    if !server.join() {
        eprintln!("some streams did not end in time");
    }
    Ok(())
}
