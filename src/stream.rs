//! The public blocking stream writer: the stream engine (`engine.rs`)
//! driven over any `io::Write`, one blocking write per batch.

use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, never, select};

pub use crate::engine::StreamEnd;
use crate::engine::{Engine, Spec};
use crate::event::{Encode, Event, Frame};
use crate::hub::Subscription;

/// How long to wait for a frame when heartbeats are off.
const NO_HEARTBEAT_WAIT: Duration = Duration::from_secs(3600);

/// Writes an SSE response to any [`Write`]: head, `retry:`, then each frame
/// from a channel, with heartbeats when idle. It follows the same rules as
/// the server's own streams (one engine for both): a burst is written as
/// one chunk, each write is flushed at once, and the response always ends
/// with its terminator unless the client is gone.
///
/// ```
/// use tinysse::{Event, StreamEnd, StreamWriter};
///
/// let (tx, rx) = crossbeam_channel::bounded(4);
/// tx.send(Event::data("hello")).unwrap();
/// drop(tx); // the producer is done
/// let mut out = Vec::new();
/// let end = StreamWriter::new().retry(None).chunked(false).head(false).run(&mut out, rx);
/// assert!(matches!(end, StreamEnd::Finished));
/// assert_eq!(out, b"data: hello\n\n");
/// ```
#[derive(Clone, Debug)]
pub struct StreamWriter {
    spec: Spec,
    head: bool,
    shutdown: Option<Receiver<()>>,
}

impl Default for StreamWriter {
    fn default() -> Self {
        StreamWriter::new()
    }
}

impl StreamWriter {
    /// A writer with a 15 s heartbeat, `retry: 2000`, chunked framing and an
    /// HTTP/1.1 response head.
    pub fn new() -> StreamWriter {
        StreamWriter {
            spec: Spec {
                chunked: true,
                retry: Some(2000),
                heartbeat: Some(Duration::from_secs(15)),
                headers: Vec::new(),
            },
            head: true,
            shutdown: None,
        }
    }

    /// Sends the comment line `: keep-alive` after this long without a
    /// write; `None` turns it off.
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().heartbeat(Some(std::time::Duration::from_secs(5)));
    /// # let _ = w;
    /// ```
    pub fn heartbeat(mut self, every: Option<Duration>) -> StreamWriter {
        self.spec.heartbeat = every;
        self
    }

    /// The `retry:` value sent first, as a line of the first event's block;
    /// `None` sends none.
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().retry(Some(500));
    /// # let _ = w;
    /// ```
    pub fn retry(mut self, millis: Option<u64>) -> StreamWriter {
        self.spec.retry = millis;
        self
    }

    /// Whether the body uses chunked transfer encoding (HTTP/1.1). Without it
    /// the end of the stream is the end of the connection (HTTP/1.0).
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().chunked(false);
    /// # let _ = w;
    /// ```
    pub fn chunked(mut self, chunked: bool) -> StreamWriter {
        self.spec.chunked = chunked;
        self
    }

    /// Whether to write the HTTP response head first (off when the caller
    /// already did, or writes to something that is not a socket).
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().head(false);
    /// # let _ = w;
    /// ```
    pub fn head(mut self, head: bool) -> StreamWriter {
        self.head = head;
        self
    }

    /// Adds a response header (for example `Access-Control-Allow-Origin`).
    /// A name or value holding CR or LF is left out: it would let the value
    /// write headers of its own.
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().header("Access-Control-Allow-Origin", "*");
    /// # let _ = w;
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> StreamWriter {
        let (name, value) = (name.into(), value.into());
        let breaks = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if !breaks(&name) && !breaks(&value) {
            self.spec.headers.push((name, value));
        }
        self
    }

    /// Ends the stream (cleanly, with the chunked terminator) as soon as this
    /// channel disconnects: drop its one `Sender` to stop every writer at once.
    ///
    /// ```
    /// let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    /// let w = tinysse::StreamWriter::new().shutdown_signal(stopped);
    /// drop(stop);
    /// # let _ = w;
    /// ```
    pub fn shutdown_signal(mut self, signal: Receiver<()>) -> StreamWriter {
        self.shutdown = Some(signal);
        self
    }

    /// Writes the stream until the senders drop, shutdown, or a write fails.
    pub fn run<W: Write>(&self, mut out: W, events: Receiver<Event>) -> StreamEnd {
        self.stream(&mut out, Vec::new(), &events, None)
    }

    /// Like [`run`](Self::run), for frames encoded already (a producer that
    /// encodes on its own thread, or frames taken from a hub).
    pub fn run_frames<W: Write>(&self, mut out: W, frames: Receiver<Frame>) -> StreamEnd {
        self.stream(&mut out, Vec::new(), &frames, None)
    }

    /// Writes a hub subscription: its gap event and replay first, then its
    /// live frames, until the hub evicts it ([`StreamEnd::Evicted`]: what
    /// is queued is not sent, the client catches up from history when it
    /// reconnects), shutdown, or a write fails. Dropping the subscription
    /// at the end unsubscribes it.
    ///
    /// ```
    /// use tinysse::{Event, Hub, StreamEnd, StreamWriter};
    ///
    /// let hub = Hub::new();
    /// let first = hub.publish("t", &Event::data("old"))?;
    /// let sub = hub.subscribe(&["t"], Some(first - 1))?;
    /// let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    /// drop(stop); // shut down at once: the replay, then the end
    /// let mut out = Vec::new();
    /// let w = StreamWriter::new().head(false).chunked(false).shutdown_signal(stopped);
    /// assert!(matches!(w.run_subscription(&mut out, sub), StreamEnd::Shutdown));
    /// assert_eq!(out, format!("retry: 2000\nid: {first}\ndata: old\n\n").as_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_subscription<W: Write>(&self, mut out: W, mut sub: Subscription) -> StreamEnd {
        let prelude = sub.take_prelude();
        let frames = sub.receiver().clone();
        self.stream(&mut out, prelude, &frames, Some(&sub))
    }

    fn stream<W: Write, T: Encode>(
        &self,
        out: &mut W,
        prelude: Vec<Frame>,
        frames: &Receiver<T>,
        sub: Option<&Subscription>,
    ) -> StreamEnd {
        let evicted = || sub.is_some_and(Subscription::is_evicted);
        let mut e = Engine::new(&self.spec, self.head, SystemTime::now(), Instant::now());
        let no_shutdown = never();
        let shutdown = self.shutdown.as_ref().unwrap_or(&no_shutdown);
        // The head goes out now even with nothing else to send, so the
        // client knows at once that the stream is live.
        let mut step = send(out, &mut e);
        for f in prelude {
            if step.is_err() {
                break;
            }
            e.push(f.bytes());
            if !e.has_room() {
                step = send(out, &mut e);
            }
        }
        e.trim();
        loop {
            if let Err(err) = step.and_then(|()| send(out, &mut e)) {
                return StreamEnd::ClientGone(err);
            }
            if e.is_done() {
                return e.take_end().unwrap_or(StreamEnd::Finished);
            }
            step = Ok(());
            if evicted() {
                e.evict();
                continue;
            }
            let now = Instant::now();
            let wait = e
                .next_heartbeat(now)
                .map_or(NO_HEARTBEAT_WAIT, |t| t.saturating_duration_since(now));
            select! {
                recv(frames) -> first => match first {
                    Ok(first) => {
                        e.push_encoded(&first);
                        // Whatever queued up meanwhile goes out in the same write.
                        gather(&mut e, frames);
                        if evicted() {
                            e.evict();
                        }
                    }
                    Err(_) => e.finish(StreamEnd::Finished),
                },
                recv(shutdown) -> _ => {
                    // select! picks at random among ready arms: frames
                    // already queued were accepted, so they go out first.
                    gather(&mut e, frames);
                    e.finish(StreamEnd::Shutdown);
                }
                default(wait) => {
                    e.heartbeat(Instant::now());
                }
            }
        }
    }
}

/// Adds what is queued, without waiting, up to a batch.
fn gather<T: Encode>(e: &mut Engine, frames: &Receiver<T>) {
    while e.has_room() {
        match frames.try_recv() {
            Ok(f) => e.push_encoded(&f),
            Err(_) => break,
        }
    }
}

/// Writes and flushes whatever the engine has for the socket.
fn send<W: Write>(out: &mut W, e: &mut Engine) -> io::Result<()> {
    let bytes = e.pending();
    if bytes.is_empty() {
        return Ok(());
    }
    let n = bytes.len();
    out.write_all(bytes)?;
    out.flush()?;
    e.wrote(n, Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::dechunk;
    use crate::reader::{Item, SseReader};
    use crossbeam_channel::bounded;
    use std::sync::{Arc, Mutex};

    /// An in-memory socket that records each write and flush.
    #[derive(Clone, Default)]
    struct Recorder {
        log: Arc<Mutex<Vec<Op>>>,
    }
    #[derive(Debug, PartialEq)]
    enum Op {
        Write(Vec<u8>),
        Flush,
    }
    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.log.lock().unwrap().push(Op::Write(b.to_vec()));
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.log.lock().unwrap().push(Op::Flush);
            Ok(())
        }
    }
    impl Recorder {
        fn bytes(&self) -> Vec<u8> {
            let mut v = Vec::new();
            for op in self.log.lock().unwrap().iter() {
                if let Op::Write(b) = op {
                    v.extend_from_slice(b);
                }
            }
            v
        }
    }

    #[test]
    fn head_retry_frames_and_terminator() {
        let (tx, rx) = bounded(8);
        tx.send(Event::data("one")).unwrap();
        tx.send(Event::data("two")).unwrap();
        drop(tx);
        let rec = Recorder::default();
        let end = StreamWriter::new()
            .header("X-Test", "1")
            .run(rec.clone(), rx);
        assert!(matches!(end, StreamEnd::Finished));
        let bytes = rec.bytes();
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&bytes[..split]).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Type: text/event-stream\r\n"));
        assert!(head.contains("Transfer-Encoding: chunked\r\n"));
        assert!(head.contains("X-Test: 1\r\n"));
        assert!(!head.to_ascii_lowercase().contains("content-length"));
        let (body, terminated) = dechunk(&bytes[split..]);
        assert!(terminated);
        // `retry:` is a line of the first event's block.
        assert_eq!(body, b"retry: 2000\ndata: one\n\ndata: two\n\n");
    }

    #[test]
    fn a_lone_event_is_flushed_before_the_next_exists() {
        let (tx, rx) = bounded::<Event>(8);
        let rec = Recorder::default();
        let r2 = rec.clone();
        let t = std::thread::spawn(move || StreamWriter::new().retry(None).run(r2, rx));
        tx.send(Event::data("first")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = rec.log.lock().unwrap();
            let flushed_after_first = log.iter().rposition(|o| *o == Op::Flush).is_some_and(|f| {
                log[..f]
                    .iter()
                    .any(|o| matches!(o, Op::Write(b) if b.windows(5).any(|w| w == b"first")))
            });
            if flushed_after_first {
                break;
            }
            drop(log);
            assert!(Instant::now() < deadline, "first event never flushed");
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(tx);
        assert!(matches!(t.join().unwrap(), StreamEnd::Finished));
    }

    #[test]
    fn a_burst_goes_out_as_one_chunk_in_order() {
        let (tx, rx) = bounded(1000);
        for i in 0..500 {
            tx.send(Event::data(i.to_string())).unwrap();
        }
        drop(tx);
        let rec = Recorder::default();
        StreamWriter::new()
            .retry(None)
            .head(false)
            .run(rec.clone(), rx);
        let writes = rec
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Op::Write(_)))
            .count();
        // One chunk for the burst, one for the terminator.
        assert_eq!(writes, 2);
        let (body, _) = dechunk(&rec.bytes());
        let mut r = SseReader::new(&body[..]);
        for i in 0..500 {
            assert_eq!(r.next_message().unwrap().unwrap().data, i.to_string());
        }
    }

    #[test]
    fn heartbeat_when_idle() {
        let (tx, rx) = bounded::<Event>(1);
        let rec = Recorder::default();
        let r2 = rec.clone();
        let t = std::thread::spawn(move || {
            StreamWriter::new()
                .retry(None)
                .head(false)
                .chunked(false)
                .heartbeat(Some(Duration::from_millis(50)))
                .run(r2, rx)
        });
        let started = Instant::now();
        while !rec.bytes().starts_with(b": keep-alive\n") {
            assert!(started.elapsed() < Duration::from_secs(5), "no heartbeat");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(started.elapsed() >= Duration::from_millis(45));
        drop(tx);
        t.join().unwrap();
        let bytes = rec.bytes();
        let mut r = SseReader::new(&bytes[..]);
        assert_eq!(
            r.next_item().unwrap(),
            Some(Item::Comment("keep-alive".into()))
        );
    }

    #[test]
    fn shutdown_ends_with_terminator() {
        let (_tx, rx) = bounded::<Event>(1);
        let (stop, stopped) = bounded::<()>(0);
        let rec = Recorder::default();
        let r2 = rec.clone();
        let t = std::thread::spawn(move || {
            StreamWriter::new()
                .retry(None)
                .head(false)
                .shutdown_signal(stopped)
                .run(r2, rx)
        });
        drop(stop);
        assert!(matches!(t.join().unwrap(), StreamEnd::Shutdown));
        assert!(rec.bytes().ends_with(b"0\r\n\r\n"));
    }

    #[test]
    fn write_error_reports_client_gone() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = bounded(1);
        tx.send(Event::data("x")).unwrap();
        let end = StreamWriter::new().run(Broken, rx);
        assert!(matches!(end, StreamEnd::ClientGone(e) if e.kind() == io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn eviction_ends_the_stream() {
        let hub = crate::Hub::with_limits(crate::hub::HubLimits {
            queue: 1,
            ..crate::hub::HubLimits::default()
        });
        let sub = hub.subscribe(&["t"], None).unwrap();
        for _ in 0..3 {
            hub.publish("t", &Event::data("x")).unwrap();
        }
        assert!(sub.is_evicted());
        let rec = Recorder::default();
        let end = StreamWriter::new()
            .head(false)
            .run_subscription(rec.clone(), sub);
        assert!(matches!(end, StreamEnd::Evicted));
        // What was queued is not sent: the client catches up from history.
        let (body, terminated) = dechunk(&rec.bytes());
        assert!(terminated);
        assert_eq!(body, b"retry: 2000\n");
    }

    #[test]
    fn a_subscription_is_replayed_then_live() {
        let hub = crate::Hub::new();
        let old = hub.publish("t", &Event::data("old")).unwrap();
        let sub = hub.subscribe(&["t"], Some(old - 1)).unwrap();
        let live = hub.publish("t", &Event::data("live")).unwrap();
        let (stop, stopped) = bounded::<()>(0);
        let rec = Recorder::default();
        let r2 = rec.clone();
        let t = std::thread::spawn(move || {
            StreamWriter::new()
                .head(false)
                .retry(None)
                .shutdown_signal(stopped)
                .run_subscription(r2, sub)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rec.bytes().windows(4).any(|w| w == b"live") {
            assert!(Instant::now() < deadline, "the live event never came");
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(stop);
        assert!(matches!(t.join().unwrap(), StreamEnd::Shutdown));
        let (body, terminated) = dechunk(&rec.bytes());
        assert!(terminated);
        assert_eq!(
            body,
            format!("id: {old}\ndata: old\n\nid: {live}\ndata: live\n\n").as_bytes()
        );
    }
}
