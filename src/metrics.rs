//! Counters shared by the hub and the server, and their Prometheus text.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters; every field is updated lock-free, and reading one
/// never blocks the server.
///
/// ```
/// let hub = tinysse::Hub::new();
/// hub.publish("t", &tinysse::Event::data("x"))?;
/// assert_eq!(hub.metrics().events_published(), 1);
/// assert_eq!(hub.metrics().topics(), 1);
/// assert!(hub.metrics().render().contains("tinysse_events_published_total 1\n"));
/// # Ok::<(), tinysse::PublishError>(())
/// ```
#[derive(Debug)]
pub struct Metrics {
    pub(crate) streams_active: AtomicU64,
    pub(crate) streams_total: AtomicU64,
    pub(crate) streams_rejected: AtomicU64,
    pub(crate) events_published: AtomicU64,
    pub(crate) frames_written: Arc<AtomicU64>,
    pub(crate) subscribers_evicted: AtomicU64,
    pub(crate) topics: AtomicU64,
}

impl Metrics {
    /// Zeroed counters. Only a hub makes them (a server's hub shares its
    /// own with the server): detached counters would count nothing.
    pub(crate) fn new() -> Metrics {
        Metrics {
            streams_active: AtomicU64::new(0),
            streams_total: AtomicU64::new(0),
            streams_rejected: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            frames_written: Arc::new(AtomicU64::new(0)),
            subscribers_evicted: AtomicU64::new(0),
            topics: AtomicU64::new(0),
        }
    }

    /// Open SSE streams right now.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// let stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert_eq!(server.metrics().streams_active(), 1); // counted before the head is sent
    /// stream.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn streams_active(&self) -> u64 {
        self.streams_active.load(Ordering::Relaxed)
    }

    /// SSE streams opened since start.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// for _ in 0..2 {
    ///     tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?.close();
    /// }
    /// assert_eq!(server.metrics().streams_total(), 2);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn streams_total(&self) -> u64 {
        self.streams_total.load(Ordering::Relaxed)
    }

    /// SSE streams refused with `503` for being over `max_streams`.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").max_streams(1).start()?;
    /// let open = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// let refused = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// assert_eq!(refused.status(), 503);
    /// assert_eq!(server.metrics().streams_rejected(), 1);
    /// open.close();
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn streams_rejected(&self) -> u64 {
        self.streams_rejected.load(Ordering::Relaxed)
    }

    /// Topics held right now (see [`Hub::topic_count`](crate::Hub::topic_count)).
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// hub.publish("a", &tinysse::Event::data("x"))?;
    /// hub.publish("b", &tinysse::Event::data("x"))?;
    /// assert_eq!(hub.metrics().topics(), 2);
    /// # Ok::<(), tinysse::PublishError>(())
    /// ```
    pub fn topics(&self) -> u64 {
        self.topics.load(Ordering::Relaxed)
    }

    /// Events published since start.
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").start()?;
    /// server.hub().publish("t", &tinysse::Event::data("x"))?;
    /// assert_eq!(server.metrics().events_published(), 1);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn events_published(&self) -> u64 {
        self.events_published.load(Ordering::Relaxed)
    }

    /// Frames written to clients since start (events, `retry:`, heartbeats).
    ///
    /// ```
    /// let server = tinysse::Server::builder().addr("127.0.0.1:0").retry(None).start()?;
    /// let hub = server.hub().clone();
    /// let mut stream = tinysse::EventStream::connect(server.addr(), "/events?topic=t", &[])?;
    /// hub.publish("t", &tinysse::Event::data("x"))?;
    /// stream.next_message()?;
    /// server.join(); // every stream has ended: its count is final
    /// assert_eq!(hub.metrics().frames_written(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn frames_written(&self) -> u64 {
        self.frames_written.load(Ordering::Relaxed)
    }

    /// Subscribers dropped for reading too slowly.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let sub = hub.subscribe(&["t"], None)?; // and never read
    /// for _ in 0..=tinysse::defaults::QUEUE {
    ///     hub.publish("t", &tinysse::Event::data("x"))?;
    /// }
    /// assert_eq!(hub.metrics().subscribers_evicted(), 1);
    /// # drop(sub);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribers_evicted(&self) -> u64 {
        self.subscribers_evicted.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every counter (what `/metrics`
    /// answers), for a program that serves its metrics elsewhere.
    ///
    /// ```
    /// let text = tinysse::Hub::new().metrics().render();
    /// assert!(text.contains("# TYPE tinysse_streams_active gauge\ntinysse_streams_active 0\n"));
    /// ```
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, u64); 7] = [
            (
                "tinysse_streams_active",
                "gauge",
                "Open SSE streams.",
                self.streams_active(),
            ),
            (
                "tinysse_streams_total",
                "counter",
                "SSE streams opened since start.",
                self.streams_total.load(Ordering::Relaxed),
            ),
            (
                "tinysse_streams_rejected_total",
                "counter",
                "SSE streams refused with 503 (over --max-streams).",
                self.streams_rejected.load(Ordering::Relaxed),
            ),
            (
                "tinysse_events_published_total",
                "counter",
                "Events published to topics.",
                self.events_published(),
            ),
            (
                "tinysse_frames_written_total",
                "counter",
                "SSE frames written to clients (events, retry, heartbeats).",
                self.frames_written(),
            ),
            (
                "tinysse_subscribers_evicted_total",
                "counter",
                "Subscribers disconnected because their queue was full.",
                self.subscribers_evicted(),
            ),
            (
                "tinysse_topics",
                "gauge",
                "Topics held.",
                self.topics.load(Ordering::Relaxed),
            ),
        ];
        let mut out = String::with_capacity(1024);
        for (name, kind, help, value) in rows {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out
    }
}
