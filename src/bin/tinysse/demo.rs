//! The demo, built on the library's public API as any embedding program
//! would build it: the seed's `/async` stream route, and a producer thread
//! that publishes the host's numbers on topic `demo` once a second.

use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use serde_json::{Value, json};
use tinysse::{Event, Hub, StreamRequest};

use crate::host::HostSampler;

/// The seed's walking skeleton: 42, a second later 100, then the end marker;
/// returning drops the sender, which ends the response.
pub fn async_route(_rq: &StreamRequest, tx: Sender<Event>) {
    let send = |v: Value| tx.send(Event::data(v.to_string())).is_ok();
    if !send(json!({"val": 42})) {
        return;
    }
    thread::sleep(Duration::from_secs(1));
    if send(json!({"val": 100})) {
        send(json!({"msg": "end"}));
    }
}

/// The host-metrics producer, running until [`Producer::stop`].
pub struct Producer {
    /// Dropped to stop the thread: it wakes from its one-second wait at once.
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Producer {
    /// Starts publishing on `hub`'s topic `demo` once a second.
    pub fn start(hub: Hub) -> io::Result<Producer> {
        let (stop, stopped) = bounded(0);
        let thread = thread::Builder::new()
            .name("tinysse-demo".into())
            .stack_size(256 * 1024)
            .spawn(move || produce(&hub, &stopped))?;
        Ok(Producer { stop, thread })
    }

    /// Stops the thread and waits for it: nothing is published after this.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            log::warn!("the demo producer panicked");
        }
    }
}

fn produce(hub: &Hub, stopped: &Receiver<()>) {
    let metrics = hub.metrics();
    let mut sampler = HostSampler::new();
    let mut last_events = metrics.events_published();
    let mut last_at = Instant::now();
    loop {
        match stopped.recv_timeout(Duration::from_secs(1)) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let mut obj = sampler.sample();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let events = metrics.events_published();
        let rate =
            events.saturating_sub(last_events) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
        last_events = events + 1; // our own publish below is not traffic
        last_at = Instant::now();
        obj.insert("ts".into(), ts.into());
        obj.insert("streams_active".into(), metrics.streams_active().into());
        obj.insert(
            "events_per_sec".into(),
            ((rate * 10.0).round() / 10.0).into(),
        );
        if let Err(e) = hub.publish("demo", &Event::data(Value::Object(obj).to_string())) {
            log::warn!("demo producer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinysse::SseReader;

    #[test]
    fn async_route_sends_42_then_100_then_end() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let t0 = Instant::now();
        async_route(&StreamRequest::new("GET", "/async"), tx);
        let got: Vec<Event> = rx.iter().collect();
        assert_eq!(
            got,
            [
                Event::data(r#"{"val":42}"#),
                Event::data(r#"{"val":100}"#),
                Event::data(r#"{"msg":"end"}"#)
            ]
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn async_route_stops_when_the_client_is_gone() {
        let (tx, rx) = crossbeam_channel::unbounded();
        drop(rx);
        let t0 = Instant::now();
        async_route(&StreamRequest::new("GET", "/async"), tx);
        // No second wait for a client that is not there.
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn producer_publishes_host_numbers_and_stops_at_once() {
        let hub = Hub::new();
        let sub = hub.subscribe(&["demo"], None).unwrap();
        let producer = Producer::start(hub.clone()).unwrap();
        let frame = sub
            .receiver()
            .recv_timeout(Duration::from_secs(5))
            .expect("a demo event within 5 s");
        let msg = SseReader::new(frame.bytes())
            .next_message()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&msg.data).unwrap();
        assert!(v["ts"].as_u64().is_some_and(|ts| ts > 0), "{v}");
        assert_eq!(v["streams_active"], json!(0), "{v}");
        assert!(v["events_per_sec"].is_number(), "{v}");
        // stop() joins the thread: it returns once nothing more can be
        // published, and at once, not after the one-second wait.
        let (done_tx, done) = bounded(1);
        let t0 = Instant::now();
        thread::spawn(move || {
            producer.stop();
            let _ = done_tx.send(());
        });
        assert!(
            done.recv_timeout(Duration::from_secs(5)).is_ok(),
            "stop() hangs"
        );
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
}
