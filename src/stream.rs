//! The stream writer: the response head, then every frame from a channel,
//! batched into one chunk per wake-up and flushed at once.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, never, select};

use crate::event::{Encode, Event};

/// Bytes gathered from a burst before they are written as one chunk.
const BATCH_BYTES: usize = 64 * 1024;
/// Room kept at the head of the buffer for the chunk-size line.
const CHUNK_PREFIX: usize = 18;

/// Why a stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// Every sender was dropped: the producer is done. The response was ended.
    Finished,
    /// The server is shutting down. The response was ended.
    Shutdown,
    /// The subscriber fell too far behind and the hub dropped it. The response
    /// was ended, so the client reconnects and catches up from history.
    Evicted,
    /// Writing failed: the client went away or stopped reading.
    ClientGone(io::Error),
}

/// Writes an SSE response to any [`Write`]: head, `retry:`, then each frame
/// from a channel, with heartbeats when idle.
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
    heartbeat: Option<Duration>,
    retry: Option<u64>,
    chunked: bool,
    head: bool,
    headers: Vec<(String, String)>,
    shutdown: Option<Receiver<()>>,
    evicted: Option<Arc<AtomicBool>>,
    frames_written: Option<Arc<AtomicU64>>,
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
            heartbeat: Some(Duration::from_secs(15)),
            retry: Some(2000),
            chunked: true,
            head: true,
            headers: Vec::new(),
            shutdown: None,
            evicted: None,
            frames_written: None,
        }
    }

    /// Sends `: keep-alive` after this long without a write; `None` turns it off.
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().heartbeat(Some(std::time::Duration::from_secs(5)));
    /// # let _ = w;
    /// ```
    pub fn heartbeat(mut self, every: Option<Duration>) -> StreamWriter {
        self.heartbeat = every;
        self
    }

    /// The `retry:` value sent first; `None` sends none.
    ///
    /// ```
    /// let w = tinysse::StreamWriter::new().retry(Some(500));
    /// # let _ = w;
    /// ```
    pub fn retry(mut self, millis: Option<u64>) -> StreamWriter {
        self.retry = millis;
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
        self.chunked = chunked;
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
            self.headers.push((name, value));
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

    pub(crate) fn evicted_flag(mut self, flag: Arc<AtomicBool>) -> StreamWriter {
        self.evicted = Some(flag);
        self
    }

    pub(crate) fn count_frames(mut self, counter: Arc<AtomicU64>) -> StreamWriter {
        self.frames_written = Some(counter);
        self
    }

    /// Writes the stream until the senders drop, shutdown, or a write fails.
    pub fn run<W: Write, T: Encode>(&self, out: W, frames: Receiver<T>) -> StreamEnd {
        self.run_with_prelude::<W, T, Event>(out, &[], frames)
    }

    /// Like [`run`](Self::run), but writes `prelude` (a replay) right after
    /// `retry:` and before anything from the channel.
    pub fn run_with_prelude<W: Write, T: Encode, P: Encode>(
        &self,
        mut out: W,
        prelude: &[P],
        frames: Receiver<T>,
    ) -> StreamEnd {
        match self.stream(&mut out, prelude, &frames) {
            Ok(end) => end,
            Err(e) => StreamEnd::ClientGone(e),
        }
    }

    fn stream<W: Write, T: Encode, P: Encode>(
        &self,
        out: &mut W,
        prelude: &[P],
        frames: &Receiver<T>,
    ) -> io::Result<StreamEnd> {
        if self.head {
            out.write_all(self.head_bytes().as_bytes())?;
            // The head goes out now even with nothing else to send, so the
            // client knows at once that the subscription is live.
            out.flush()?;
        }
        let mut batch = Batch::new(self.chunked);
        if let Some(ms) = self.retry {
            // A line of the first event's block, not a block of its own:
            // clients that read `retry:` only from a block with data see
            // it, and those that hand every block to the application get
            // no empty message for it.
            batch
                .body()
                .extend_from_slice(format!("retry: {ms}\n").as_bytes());
            batch.frames += 1;
        }
        for p in prelude {
            p.encode_into(batch.body());
            batch.frames += 1;
            if batch.len() >= BATCH_BYTES {
                self.send(out, &mut batch)?;
            }
        }
        self.send(out, &mut batch)?;

        let no_shutdown = never();
        let shutdown = self.shutdown.as_ref().unwrap_or(&no_shutdown);
        let heartbeat = self.heartbeat.unwrap_or(Duration::from_secs(3600));
        let mut last_write = Instant::now();
        loop {
            if self.is_evicted() {
                return self.finish(out, StreamEnd::Evicted);
            }
            let wait = heartbeat.saturating_sub(last_write.elapsed());
            select! {
                recv(frames) -> first => match first {
                    Ok(first) => {
                        first.encode_into(batch.body());
                        batch.frames += 1;
                        // Whatever queued up meanwhile goes out in the same write.
                        batch.drain(frames);
                        if self.is_evicted() {
                            return self.finish(out, StreamEnd::Evicted);
                        }
                        self.send(out, &mut batch)?;
                        last_write = Instant::now();
                    }
                    Err(_) => return self.finish(out, StreamEnd::Finished),
                },
                recv(shutdown) -> _ => {
                    // select! picks at random among ready arms: frames
                    // already queued were accepted, so they go out first.
                    batch.drain(frames);
                    self.send(out, &mut batch)?;
                    return self.finish(out, StreamEnd::Shutdown);
                }
                default(wait) => {
                    if self.heartbeat.is_some() && last_write.elapsed() >= heartbeat {
                        // A comment line that ends no block: no empty message
                        // for clients that hand every block on.
                        batch.body().extend_from_slice(b": keep-alive\n");
                        batch.frames += 1;
                        self.send(out, &mut batch)?;
                        last_write = Instant::now();
                    }
                }
            }
        }
    }

    fn is_evicted(&self) -> bool {
        self.evicted
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    fn send<W: Write>(&self, out: &mut W, batch: &mut Batch) -> io::Result<()> {
        if batch.len() == 0 {
            return Ok(());
        }
        out.write_all(batch.finish())?;
        out.flush()?;
        if let Some(c) = &self.frames_written {
            c.fetch_add(batch.frames, Ordering::Relaxed);
        }
        batch.clear();
        Ok(())
    }

    fn finish<W: Write>(&self, out: &mut W, end: StreamEnd) -> io::Result<StreamEnd> {
        if self.chunked {
            out.write_all(b"0\r\n\r\n")?;
        }
        out.flush()?;
        Ok(end)
    }

    pub(crate) fn head_bytes(&self) -> String {
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
             Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n",
        );
        // tiny_http dates every answer it writes; this head it never sees.
        head.push_str("Date: ");
        head.push_str(&httpdate::fmt_http_date(std::time::SystemTime::now()));
        head.push_str("\r\n");
        head.push_str(if self.chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            "Connection: close\r\n"
        });
        for (k, v) in &self.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head
    }
}

/// One reusable buffer: room for the chunk-size line, the frames, and the
/// trailing CRLF, so a burst costs one write and no allocation once warm.
struct Batch {
    buf: Vec<u8>,
    chunked: bool,
    frames: u64,
}

impl Batch {
    fn new(chunked: bool) -> Batch {
        // Small to start: an idle stream only ever holds `retry:` and
        // heartbeats, and a burst grows it once.
        let mut buf = Vec::with_capacity(512);
        if chunked {
            buf.resize(CHUNK_PREFIX, 0);
        }
        Batch {
            buf,
            chunked,
            frames: 0,
        }
    }

    /// Adds what is queued, without waiting, up to a batch's worth.
    fn drain<T: Encode>(&mut self, frames: &Receiver<T>) {
        while self.len() < BATCH_BYTES {
            match frames.try_recv() {
                Ok(f) => {
                    f.encode_into(&mut self.buf);
                    self.frames += 1;
                }
                Err(_) => break,
            }
        }
    }

    fn body(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn start(&self) -> usize {
        if self.chunked { CHUNK_PREFIX } else { 0 }
    }

    fn len(&self) -> usize {
        self.buf.len() - self.start()
    }

    /// The bytes to write: the chunk-size line is written right-aligned into
    /// the reserved prefix, so the body never moves.
    fn finish(&mut self) -> &[u8] {
        if !self.chunked {
            return &self.buf;
        }
        let len = self.len();
        self.buf.extend_from_slice(b"\r\n");
        let mut digits = [0u8; 16];
        let mut n = len;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let hex = &digits[i..];
        let from = CHUNK_PREFIX - hex.len() - 2;
        self.buf[from..from + hex.len()].copy_from_slice(hex);
        self.buf[CHUNK_PREFIX - 2..CHUNK_PREFIX].copy_from_slice(b"\r\n");
        &self.buf[from..]
    }

    fn clear(&mut self) {
        self.buf.truncate(self.start());
        self.frames = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{Item, SseReader};
    use crossbeam_channel::bounded;
    use std::sync::Mutex;

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

    fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        loop {
            let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
                return (out, false);
            };
            let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap(), 16).unwrap();
            if n == 0 {
                return (out, &b[nl..] == b"\r\n\r\n");
            }
            out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
            assert_eq!(&b[nl + 2 + n..nl + 4 + n], b"\r\n");
            b = &b[nl + 4 + n..];
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
        let (tx, rx) = bounded(4);
        tx.send(Event::data("x")).unwrap();
        let flag = Arc::new(AtomicBool::new(true));
        let rec = Recorder::default();
        let end = StreamWriter::new()
            .head(false)
            .evicted_flag(flag)
            .run(rec.clone(), rx);
        assert!(matches!(end, StreamEnd::Evicted));
        let (body, terminated) = dechunk(&rec.bytes());
        assert!(terminated);
        assert_eq!(body, b"retry: 2000\n");
    }
}
