//! What every request handler shares: the server's settings, hub, metrics,
//! routes and writer pool, and the slots that count open streams. Below both
//! the server (which builds it) and the routes (which use it).

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::auth::AuthCheck;
use crate::event::Event;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::request::StreamRequest;

/// A custom stream route's handler: it gets the request and a `Sender`, runs
/// on a producer thread of its own, and ends the stream by dropping the sender
/// (see [`ServerBuilder::stream_route`], which takes any such closure).
pub(crate) type StreamHandler = dyn Fn(&StreamRequest, Sender<Event>) + Send + Sync + 'static;

/// Stack for a custom route's producer thread: user code, so more room.
const PRODUCER_STACK: usize = 256 * 1024;
/// Everything the request handlers share.
pub(crate) struct Shared {
    pub(crate) config: Settings,
    pub(crate) hub: Hub,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) routes: HashMap<String, Arc<StreamHandler>>,
    pub(crate) stopping: AtomicBool,
    /// Cloned into every stream slot, so that all of them dropped means
    /// every stream has ended; `None` once shutdown has begun.
    pub(crate) streams: Mutex<Option<Sender<()>>>,
    /// The threads that write every stream.
    pub(crate) pool: Pool,
    /// How long a stream's socket may take nothing before it is dropped.
    pub(crate) write_timeout: Option<Duration>,
}

/// The settings a server runs with (the builder's values).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) public: Option<PathBuf>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) retry: Option<u64>,
    pub(crate) max_streams: u64,
    pub(crate) max_body: u64,
    pub(crate) publish_token: Option<String>,
    pub(crate) cors_origin: Option<String>,
    pub(crate) firehose: bool,
    /// Who may subscribe and publish; `None`: anyone may subscribe, and
    /// `publish_token` (or plain local requests) decide publishing.
    pub(crate) auth: Option<AuthCheck>,
}

/// Holds one slot of `--max-streams` and keeps the server's shutdown waiting
/// until the stream that owns it ends.
pub(crate) struct StreamSlot {
    shared: Arc<Shared>,
    _alive: Sender<()>,
}

impl StreamSlot {
    /// Takes a slot, or `None` when `max_streams` are open (counted as
    /// rejected) or shutdown has begun.
    pub(crate) fn take(sh: &Arc<Shared>) -> Option<StreamSlot> {
        let m = &sh.metrics;
        let max = sh.config.max_streams;
        // Under the registry's lock, so a slot is either taken before
        // shutdown takes the registry, or not given at all.
        let streams = sh.streams.lock().unwrap_or_else(|p| p.into_inner());
        let alive = streams.as_ref()?;
        let ok = m
            .streams_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !ok {
            m.streams_rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        m.streams_total.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot {
            shared: sh.clone(),
            _alive: alive.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.shared
            .metrics
            .streams_active
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a custom route's handler on a producer thread of its own.
pub(crate) fn spawn_producer(
    handler: Arc<StreamHandler>,
    rq: StreamRequest,
    tx: Sender<Event>,
) -> io::Result<()> {
    thread::Builder::new()
        .name("tinysse-producer".into())
        .stack_size(PRODUCER_STACK)
        .spawn(move || handler(&rq, tx))
        .map(drop)
}
