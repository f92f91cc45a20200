//! The stream engine: every rule of an SSE response, and no I/O.
//!
//! It knows the response head, the opening `retry:`, chunk framing, how
//! frames are batched into one chunk, when a heartbeat is due and what it
//! is, and how a stream ends and why. It never reads a clock or touches a
//! socket: a driver passes the time in, asks for the bytes to write, and
//! says how many the socket took. Two drivers run it: the writer pool
//! (`pool.rs`, many non-blocking sockets per thread, every server stream)
//! and the public blocking [`StreamWriter`](crate::StreamWriter) over any
//! `io::Write`.
//!
//! The wire format is chosen for what real clients do, not only for what
//! the WHATWG algorithm says:
//!
//! - `retry:` is a line of the first block, not a block of its own:
//!   `retry: 2000\n` with no blank line after it. A spec parser applies it
//!   when it reads the line; clients that read `retry:` only from a block
//!   that carries data (eventsource-client, reqwest-eventsource) see it
//!   with the first event.
//! - A heartbeat is the comment line `: keep-alive\n`, which does not end a
//!   block either: clients that hand every blank-line-ended block to the
//!   application (httpx-sse) see no empty message for it, and its bytes
//!   still keep proxies and the write timeout busy. A heartbeat is written
//!   only between frames, and every frame ends with a blank line, so it
//!   never lands inside an event.

use std::io;
use std::time::{Duration, Instant, SystemTime};

/// Bytes gathered from a burst before they are written as one chunk.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// The heartbeat: a comment line that does not end a block.
pub(crate) const HEARTBEAT: &[u8] = b": keep-alive\n";
/// The end of a chunked body.
pub(crate) const TERMINATOR: &[u8] = b"0\r\n\r\n";
/// Room kept ahead of a chunk's body for its size line (16 hex digits and
/// CRLF), so the body is built in place and never moved to make room.
const CHUNK_PREFIX: usize = 18;
/// Buffer capacity kept by a stream once a burst or a replay is written.
const IDLE_BUFFER: usize = 8 * 1024;

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
    /// The stream's authorization ended (its token expired, see
    /// [`Grant::expires_at`](crate::Grant::expires_at)). The response was
    /// ended, so a browser reconnects with the token it holds now.
    Expired,
}

/// What a stream's response looks like.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Chunked transfer coding (HTTP/1.1); without it the end of the
    /// connection ends the body (HTTP/1.0).
    pub(crate) chunked: bool,
    /// The `retry:` value sent first.
    pub(crate) retry: Option<u64>,
    /// Idle time after which a heartbeat is written.
    pub(crate) heartbeat: Option<Duration>,
    /// Extra headers (CORS); whoever adds one has refused line breaks.
    pub(crate) headers: Vec<(String, String)>,
}

impl Spec {
    /// The response head, dated `date`.
    pub(crate) fn head(&self, date: SystemTime) -> Vec<u8> {
        let mut head = String::with_capacity(256);
        head.push_str(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
             Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n",
        );
        // tiny_http dates every answer it writes; this head it never sees.
        head.push_str("Date: ");
        head.push_str(&httpdate::fmt_http_date(date));
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
        head.into_bytes()
    }
}

/// One stream's state: the bytes still to write, the chunk being filled,
/// the heartbeat clock, and the end.
#[derive(Debug)]
pub(crate) struct Engine {
    chunked: bool,
    heartbeat: Option<Duration>,
    /// Bytes for the socket; `pos` of them were taken already.
    buf: Vec<u8>,
    pos: usize,
    /// The chunk being filled: where it starts in `buf` (its size-line room
    /// first when chunked) and how many frames it holds.
    open: Option<(usize, u64)>,
    /// Frames in `buf`, the open chunk's included, not yet all written.
    frames: u64,
    last_write: Instant,
    /// The end is queued: nothing more joins.
    ending: bool,
    why: Option<StreamEnd>,
    /// The end was queued and everything, terminator included, written.
    done: bool,
    /// Give back buffer room once what is queued is written.
    trim: bool,
}

impl Engine {
    /// A stream whose first bytes are its head (when `head`) and `retry:`,
    /// both queued now.
    pub(crate) fn new(spec: &Spec, head: bool, date: SystemTime, now: Instant) -> Engine {
        let mut e = Engine {
            chunked: spec.chunked,
            heartbeat: spec.heartbeat,
            // Small to start: an idle stream only ever holds its head,
            // `retry:` and heartbeats, and a burst grows it once.
            buf: if head {
                spec.head(date)
            } else {
                Vec::with_capacity(512)
            },
            pos: 0,
            open: None,
            frames: 0,
            last_write: now,
            ending: false,
            why: None,
            done: false,
            trim: false,
        };
        if let Some(ms) = spec.retry {
            // A line of the first block (see the module's notes): no blank
            // line after it.
            let body = e.body();
            body.extend_from_slice(b"retry: ");
            body.extend_from_slice(ms.to_string().as_bytes());
            body.push(b'\n');
            e.counted();
        }
        e
    }

    /// Adds one encoded frame to the chunk being filled.
    pub(crate) fn push(&mut self, frame: &[u8]) {
        if !self.ending {
            self.body().extend_from_slice(frame);
            self.counted();
        }
    }

    /// Adds one frame that encodes itself into the chunk being filled.
    pub(crate) fn push_encoded<E: crate::event::Encode + ?Sized>(&mut self, frame: &E) {
        if !self.ending {
            frame.encode_into(self.body());
            self.counted();
        }
    }

    /// Whether the chunk being filled has room for more: a burst goes out
    /// in chunks of about `BATCH_BYTES`.
    pub(crate) fn has_room(&self) -> bool {
        !self.ending && self.open_len() < BATCH_BYTES
    }

    /// Whether nothing is waiting for the socket.
    pub(crate) fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes to write next (the chunk being filled is closed first);
    /// empty when there is nothing to write.
    pub(crate) fn pending(&mut self) -> &[u8] {
        self.close();
        &self.buf[self.pos..]
    }

    /// The socket took `n` bytes of [`pending`](Self::pending); once all
    /// of it is written, returns how many frames went out with it.
    pub(crate) fn wrote(&mut self, n: usize, now: Instant) -> Option<u64> {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos < self.buf.len() || self.open.is_some() {
            return None;
        }
        self.buf.clear();
        self.pos = 0;
        if std::mem::take(&mut self.trim) && self.buf.capacity() > IDLE_BUFFER {
            self.buf.shrink_to(IDLE_BUFFER / 8);
        }
        self.last_write = now;
        self.done = self.ending;
        Some(std::mem::take(&mut self.frames))
    }

    /// When to look for a heartbeat next: when one is due, or, if one is
    /// due already but could not be queued (output waiting for the
    /// socket), a period from `now`. `None` when heartbeats are off or the
    /// stream is ending.
    pub(crate) fn next_heartbeat(&self, now: Instant) -> Option<Instant> {
        let every = self.heartbeat.filter(|_| !self.ending)?;
        let due = self.last_write + every;
        Some(if due > now { due } else { now + every })
    }

    /// Queues a heartbeat if nothing was written for a whole period and
    /// nothing is waiting; `true` if it did. Output that is waiting for the
    /// socket is not a reason for one: the write timeout deals with it.
    pub(crate) fn heartbeat(&mut self, now: Instant) -> bool {
        let due = self
            .heartbeat
            .is_some_and(|every| !self.ending && self.last_write + every <= now);
        if !due || !self.is_idle() {
            return false;
        }
        // A stream idle for a whole period gives back what a burst made
        // it hold: up to a batch, times every stream.
        if self.buf.capacity() > IDLE_BUFFER {
            self.buf.shrink_to(IDLE_BUFFER / 8);
        }
        self.push(HEARTBEAT);
        true
    }

    /// Gives buffer room back once what is queued is written (after a
    /// replay, which takes a batch's worth).
    pub(crate) fn trim(&mut self) {
        self.trim = true;
    }

    /// Queues the end of the response: the chunk being filled goes out,
    /// then the terminator (chunked) or nothing (the connection's close ends
    /// an HTTP/1.0 body). The first reason given is the one kept.
    pub(crate) fn finish(&mut self, why: StreamEnd) {
        if self.ending {
            return;
        }
        self.close();
        if self.chunked {
            self.buf.extend_from_slice(TERMINATOR);
        }
        self.ending = true;
        self.why = Some(why);
        self.done = self.buf.is_empty();
    }

    /// Ends an evicted subscriber's stream: what is in the chunk being
    /// filled is dropped, not sent (the client catches up from history
    /// after it reconnects), then the response ends.
    pub(crate) fn evict(&mut self) {
        if self.ending {
            return;
        }
        if let Some((start, frames)) = self.open.take() {
            self.buf.truncate(start);
            self.frames -= frames;
        }
        self.finish(StreamEnd::Evicted);
    }

    /// Whether the end was queued and everything, the terminator included,
    /// was written.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Why the stream ended, once it did (given once).
    pub(crate) fn take_end(&mut self) -> Option<StreamEnd> {
        self.why.take()
    }

    /// The chunk being filled, opened if there is none.
    fn body(&mut self) -> &mut Vec<u8> {
        if self.open.is_none() {
            let start = self.buf.len();
            if self.chunked {
                self.buf.resize(start + CHUNK_PREFIX, 0);
            }
            self.open = Some((start, 0));
        }
        &mut self.buf
    }

    fn counted(&mut self) {
        if let Some((_, n)) = &mut self.open {
            *n += 1;
        }
        self.frames += 1;
    }

    fn open_len(&self) -> usize {
        match self.open {
            Some((start, _)) if self.chunked => self.buf.len() - start - CHUNK_PREFIX,
            Some((start, _)) => self.buf.len() - start,
            None => 0,
        }
    }

    /// Frames the chunk being filled: its size line goes right-aligned into
    /// the room kept ahead of it, so the body stays where it is. The room
    /// left over is skipped when the chunk is the first thing to write, and
    /// closed up otherwise (after a head, once per stream).
    fn close(&mut self) {
        let Some((start, _)) = self.open.take() else {
            return;
        };
        if !self.chunked {
            return;
        }
        let len = self.buf.len() - start - CHUNK_PREFIX;
        if len == 0 {
            // An empty chunk would read as the terminator.
            self.buf.truncate(start);
            return;
        }
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
        let from = start + CHUNK_PREFIX - hex.len() - 2;
        self.buf[from..from + hex.len()].copy_from_slice(hex);
        self.buf[from + hex.len()..start + CHUNK_PREFIX].copy_from_slice(b"\r\n");
        if start == self.pos {
            self.pos = from;
        } else {
            self.buf.copy_within(from.., start);
            self.buf.truncate(self.buf.len() - (from - start));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reader::{Item, SseReader};

    fn spec(chunked: bool, retry: Option<u64>, heartbeat: Option<u64>) -> Spec {
        Spec {
            chunked,
            retry,
            heartbeat: heartbeat.map(Duration::from_millis),
            headers: Vec::new(),
        }
    }

    /// Everything pending, as the socket would take it.
    fn drain(e: &mut Engine, now: Instant) -> (Vec<u8>, Option<u64>) {
        let out = e.pending().to_vec();
        let frames = e.wrote(out.len(), now);
        (out, frames)
    }

    /// The body of a chunked stream, and whether the terminator ended it
    /// (the stream's tests use it too).
    pub(crate) fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        loop {
            let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
                assert!(b.is_empty(), "a partial chunk: {b:?}");
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
    fn the_head_names_the_framing_and_the_date() {
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut s = spec(true, None, None);
        s.headers
            .push(("Access-Control-Allow-Origin".into(), "*".into()));
        let head = String::from_utf8(s.head(date)).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
             Transfer-Encoding: chunked\r\nAccess-Control-Allow-Origin: *\r\n\r\n"
        );
        s.chunked = false;
        let head = String::from_utf8(s.head(date)).unwrap();
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(!head.contains("chunked"), "{head}");
    }

    #[test]
    fn head_and_retry_go_out_together_and_retry_opens_the_first_block() {
        let t0 = Instant::now();
        let s = spec(true, Some(2000), None);
        let mut e = Engine::new(&s, true, SystemTime::now(), t0);
        e.push(b"id: 1\ndata: a\n\n");
        let (out, frames) = drain(&mut e, t0);
        assert_eq!(frames, Some(2));
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        // One chunk, moved up against the head: no stray bytes between.
        let body = &out[split..];
        assert_eq!(body, b"1b\r\nretry: 2000\nid: 1\ndata: a\n\n\r\n");
    }

    #[test]
    fn frames_batch_into_one_chunk_up_to_the_batch_size() {
        let t0 = Instant::now();
        let mut e = Engine::new(&spec(true, None, None), false, SystemTime::now(), t0);
        let frame = [b'x'; 1000];
        let mut pushed = 0;
        while e.has_room() {
            e.push(&frame);
            pushed += 1;
        }
        assert_eq!(pushed, BATCH_BYTES.div_ceil(1000) as u64);
        let (out, frames) = drain(&mut e, t0);
        assert_eq!(frames, Some(pushed));
        let size_line = format!("{:x}\r\n", pushed * 1000);
        assert!(out.starts_with(size_line.as_bytes()));
        let (body, ended) = dechunk(&out);
        assert_eq!(body.len() as u64, pushed * 1000);
        assert!(!ended);
        // Written: a new chunk starts.
        assert!(e.is_idle() && e.has_room());
        e.push(b"data: y\n\n");
        assert_eq!(drain(&mut e, t0).0, b"9\r\ndata: y\n\n\r\n");
    }

    #[test]
    fn a_partial_write_keeps_the_rest() {
        let t0 = Instant::now();
        let mut e = Engine::new(&spec(true, None, None), false, SystemTime::now(), t0);
        e.push(b"data: abc\n\n");
        let all = e.pending().to_vec();
        assert_eq!(e.wrote(3, t0), None);
        // Frames pushed meanwhile start a chunk of their own, after the rest.
        e.push(b"data: d\n\n");
        let rest = e.pending().to_vec();
        assert_eq!(&rest[..all.len() - 3], &all[3..]);
        assert_eq!(e.wrote(rest.len(), t0), Some(2));
        let mut whole = all[..3].to_vec();
        whole.extend_from_slice(&rest);
        assert_eq!(dechunk(&whole).0, b"data: abc\n\ndata: d\n\n");
    }

    #[test]
    fn unchunked_bodies_are_the_frames_as_they_are() {
        let t0 = Instant::now();
        let mut e = Engine::new(&spec(false, Some(5), None), false, SystemTime::now(), t0);
        e.push(b"data: a\n\n");
        e.finish(StreamEnd::Finished);
        let (out, frames) = drain(&mut e, t0);
        assert_eq!(out, b"retry: 5\ndata: a\n\n");
        assert_eq!(frames, Some(2));
        assert!(e.is_done());
    }

    #[test]
    fn heartbeats_follow_the_clock_passed_in() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut e = Engine::new(
            &spec(true, Some(2000), Some(100)),
            false,
            SystemTime::now(),
            t0,
        );
        drain(&mut e, t0);
        assert_eq!(e.next_heartbeat(t0), Some(t0 + ms(100)));
        assert!(!e.heartbeat(t0 + ms(99)));
        assert!(e.heartbeat(t0 + ms(100)));
        let (out, frames) = drain(&mut e, t0 + ms(100));
        assert_eq!(out, b"d\r\n: keep-alive\n\r\n");
        assert_eq!(frames, Some(1));
        // A write resets the period.
        e.push(b"data: x\n\n");
        drain(&mut e, t0 + ms(150));
        assert_eq!(e.next_heartbeat(t0 + ms(150)), Some(t0 + ms(250)));
        assert!(!e.heartbeat(t0 + ms(200)));
        // Output the socket has not taken is no reason for one.
        e.push(b"data: y\n\n");
        let _ = e.pending();
        e.wrote(1, t0 + ms(300));
        assert!(!e.heartbeat(t0 + ms(400)));
        // Due but blocked: look again a period later.
        assert_eq!(e.next_heartbeat(t0 + ms(400)), Some(t0 + ms(500)));
        // Off: never.
        let mut off = Engine::new(&spec(true, None, None), false, SystemTime::now(), t0);
        assert_eq!(off.next_heartbeat(t0), None);
        assert!(!off.heartbeat(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn finishing_sends_what_is_gathered_then_the_terminator() {
        let t0 = Instant::now();
        let mut e = Engine::new(&spec(true, None, Some(10)), false, SystemTime::now(), t0);
        e.push(b"data: last\n\n");
        e.finish(StreamEnd::Shutdown);
        assert!(!e.is_done() && !e.has_room());
        // Nothing joins after the end, not even a heartbeat.
        e.push(b"data: late\n\n");
        assert!(!e.heartbeat(t0 + Duration::from_secs(1)));
        assert_eq!(e.next_heartbeat(t0), None);
        let (out, _) = drain(&mut e, t0);
        assert_eq!(dechunk(&out), (b"data: last\n\n".to_vec(), true));
        assert!(out.ends_with(TERMINATOR));
        assert!(e.is_done());
        assert!(matches!(e.take_end(), Some(StreamEnd::Shutdown)));
    }

    #[test]
    fn eviction_drops_what_was_gathered() {
        let t0 = Instant::now();
        let mut e = Engine::new(&spec(true, Some(2000), None), false, SystemTime::now(), t0);
        drain(&mut e, t0);
        e.push(b"data: queued\n\n");
        e.evict();
        let (out, frames) = drain(&mut e, t0);
        assert_eq!(out, TERMINATOR);
        assert_eq!(frames, Some(0));
        assert!(matches!(e.take_end(), Some(StreamEnd::Evicted)));
    }

    /// The first block holds `retry:`, a heartbeat is a line inside the
    /// next block: a WHATWG parser sees the retry at once, the comment, and
    /// each event exactly once.
    #[test]
    fn retry_and_heartbeats_parse_per_the_whatwg_rules() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut e = Engine::new(
            &spec(false, Some(1500), Some(10)),
            false,
            SystemTime::now(),
            t0,
        );
        let mut wire = drain(&mut e, t0).0;
        assert!(e.heartbeat(t0 + ms(10)));
        wire.extend(drain(&mut e, t0 + ms(10)).0);
        e.push(b"id: 7\ndata: one\n\n");
        wire.extend(drain(&mut e, t0 + ms(11)).0);
        assert!(e.heartbeat(t0 + ms(21)));
        wire.extend(drain(&mut e, t0 + ms(21)).0);
        e.push(b"data: two\n\n");
        e.finish(StreamEnd::Finished);
        wire.extend(drain(&mut e, t0 + ms(22)).0);
        assert_eq!(
            wire,
            b"retry: 1500\n: keep-alive\nid: 7\ndata: one\n\n: keep-alive\ndata: two\n\n"
        );
        let mut r = SseReader::new(&wire[..]);
        let mut items = Vec::new();
        while let Some(i) = r.next_item().unwrap() {
            items.push(i);
        }
        assert_eq!(items[0], Item::Retry(1500));
        assert_eq!(items[1], Item::Comment("keep-alive".into()));
        let events: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                Item::Event(m) => Some((m.data.as_str(), m.last_event_id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(events, [("one", "7"), ("two", "7")]);
    }
}
