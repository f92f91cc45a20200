//! The demo: the seed's `/async` stream and the host-metrics producer on
//! topic `demo`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{RecvTimeoutError, Sender};
use serde_json::{Value, json};

use crate::event::Event;
use crate::host::HostSampler;
use crate::request::StreamRequest;
use crate::server::Shared;

/// The seed's walking skeleton: 42, a second later 100, then the end marker.
pub(crate) fn async_route(_rq: &StreamRequest, tx: Sender<Event>) {
    let send = |v: Value| tx.send(Event::data(v.to_string())).is_ok();
    if !send(json!({"val": 42})) {
        return;
    }
    std::thread::sleep(Duration::from_secs(1));
    if send(json!({"val": 100})) {
        send(json!({"msg": "end"}));
    }
}

/// Publishes the host's numbers on topic `demo` once a second until shutdown.
pub(crate) fn producer(sh: &Shared) {
    let mut sampler = HostSampler::new();
    let mut last_events = sh.metrics.events_published();
    let mut last_at = Instant::now();
    loop {
        match sh.shutdown.recv_timeout(Duration::from_secs(1)) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let mut obj = sampler.sample();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let events = sh.metrics.events_published();
        let rate =
            events.saturating_sub(last_events) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
        last_events = events + 1; // our own publish below is not traffic
        last_at = Instant::now();
        obj.insert("ts".into(), ts.into());
        obj.insert(
            "streams_active".into(),
            sh.metrics.streams_active.load(Ordering::Relaxed).into(),
        );
        obj.insert(
            "events_per_sec".into(),
            ((rate * 10.0).round() / 10.0).into(),
        );
        if let Err(e) = sh
            .hub
            .publish("demo", &Event::data(Value::Object(obj).to_string()))
        {
            log::warn!("demo producer: {e}");
        }
    }
}
