//! The writer pool: a few threads, each serving many hub subscribers over
//! non-blocking sockets. A publish wakes each pool thread at most once (not
//! once per subscriber), and the thread writes every subscriber it owns that
//! has something queued.
//!
//! A subscriber's frames stay in its hub queue until its socket has taken
//! the previous batch, so the hub's `--queue` bound (and its eviction) is
//! exactly what it is for a thread-per-stream writer: what is in flight per
//! stream is one batch of at most `BATCH_BYTES` plus the queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::event::{Encode, Frame};
use crate::hub::{Ready, Subscription, Wake};
use crate::server::StreamSlot;

/// Bytes gathered from a subscriber's queue into one chunk.
const BATCH_BYTES: usize = 64 * 1024;
/// A stream's output buffer kept through an idle heartbeat period.
const IDLE_BUFFER: usize = 8 * 1024;
/// Batches written to one stream before the others get their turn.
const TURN_BATCHES: usize = 4;
/// How often streams that cannot be written are checked against the
/// write timeout.
const STALL_SCAN: Duration = Duration::from_millis(250);
const WAKER: Token = Token(usize::MAX);
/// After shutdown begins, streams still open this long are dropped: within
/// `ServerHandle::join`'s 2 s.
const STOP_DEADLINE: Duration = Duration::from_millis(1800);
/// How long a pool thread with no streams left waits for late ones once
/// shutdown began.
const STOP_LINGER: Duration = Duration::from_millis(200);
/// A pool thread's stack: it moves bytes and keeps small tables.
const POOL_STACK: usize = 256 * 1024;

/// One pool thread's mailbox, shared with the hub's publishers.
pub(crate) struct Inbox {
    /// Keys of subscribers with something new queued (or evicted).
    ready: Sender<u64>,
    cmds: Sender<Cmd>,
    waker: Waker,
    /// Set while a wake-up is on its way, so a burst of publishes costs one.
    woken: AtomicBool,
    /// Streams owned, to place new ones on the least loaded thread.
    load: AtomicUsize,
}

impl Wake for Inbox {
    fn wake(&self) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// A subscriber's entry on its pool thread's ready list.
pub(crate) struct Notify {
    key: u64,
    /// Set when the key is already on the ready list: a subscriber is listed
    /// once however many frames arrive before its thread gets to it.
    listed: Arc<AtomicBool>,
    inbox: Arc<Inbox>,
    /// `inbox`, as the hub's [`Wake`].
    wake: Arc<dyn Wake>,
}

impl Ready for Notify {
    fn queued(&self) -> Option<&Arc<dyn Wake>> {
        if self.listed.swap(true, Ordering::AcqRel) {
            return None;
        }
        let _ = self.inbox.ready.send(self.key);
        Some(&self.wake)
    }
}

enum Cmd {
    Add(Box<Conn>),
    Stop,
}

/// The pool: its threads' mailboxes.
pub(crate) struct Pool {
    inboxes: Vec<Arc<Inbox>>,
    next_key: AtomicU64,
}

/// How a pool stream is written.
pub(crate) struct StreamSpec {
    pub(crate) head: Vec<u8>,
    pub(crate) retry: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) frames_written: Arc<AtomicU64>,
}

impl Pool {
    /// Starts `threads` pool threads.
    pub(crate) fn start(threads: usize) -> io::Result<(Pool, Vec<JoinHandle<()>>)> {
        let mut pool = Pool {
            inboxes: Vec::new(),
            next_key: AtomicU64::new(0),
        };
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            if let Err(e) = pool.start_thread(i, &mut handles) {
                pool.stop();
                return Err(e);
            }
        }
        Ok((pool, handles))
    }

    fn start_thread(&mut self, i: usize, handles: &mut Vec<JoinHandle<()>>) -> io::Result<()> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (ready_tx, ready_rx) = unbounded();
        let (cmd_tx, cmd_rx) = unbounded();
        let inbox = Arc::new(Inbox {
            ready: ready_tx,
            cmds: cmd_tx,
            waker,
            woken: AtomicBool::new(false),
            load: AtomicUsize::new(0),
        });
        let worker = Worker {
            poll,
            inbox: inbox.clone(),
            ready: ready_rx,
            cmds: cmd_rx,
            conns: HashMap::new(),
            again: VecDeque::new(),
            beats: BinaryHeap::new(),
            scratch: Vec::with_capacity(4096),
            stopping: None,
        };
        handles.push(
            thread::Builder::new()
                .name(format!("tinysse-writer-{i}"))
                .stack_size(POOL_STACK)
                .spawn(move || worker.run())?,
        );
        self.inboxes.push(inbox);
        Ok(())
    }

    /// A ready-list entry for a new stream, on the least loaded thread.
    pub(crate) fn notify(&self) -> Arc<Notify> {
        let inbox = self
            .inboxes
            .iter()
            .min_by_key(|i| i.load.load(Ordering::Relaxed))
            .expect("at least one pool thread")
            .clone();
        let wake: Arc<dyn Wake> = inbox.clone();
        Arc::new(Notify {
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
            listed: Arc::new(AtomicBool::new(false)),
            inbox,
            wake,
        })
    }

    /// Hands a subscriber's socket to the pool thread `notify` belongs to.
    /// The head, `retry:` and the replay go out first, then live frames.
    pub(crate) fn add(
        &self,
        notify: &Notify,
        sock: TcpStream,
        mut sub: Subscription,
        spec: StreamSpec,
        slot: StreamSlot,
    ) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        let mut out = spec.head;
        // Moved, not copied: the stream drains the hub's one replay vector
        // and frees it once written.
        let prelude = sub.take_prelude();
        let conn = Conn {
            key: notify.key,
            sock: mio::net::TcpStream::from_std(sock),
            out: Vec::new(),
            pos: 0,
            out_frames: 0,
            chunked: spec.chunked,
            prelude: prelude.into_iter(),
            replayed: false,
            sub,
            listed: notify.listed.clone(),
            last_write: Instant::now(),
            stalled: None,
            ending: false,
            heartbeat: spec.heartbeat,
            write_timeout: spec.write_timeout,
            frames_written: spec.frames_written,
            _slot: slot,
        };
        let mut conn = Box::new(conn);
        if let Some(ms) = spec.retry {
            // The retry goes in the first chunk, with the head: one write.
            // A line of the first event's block (see stream.rs).
            let body = format!("retry: {ms}\n").into_bytes();
            push_chunk(&mut out, &body, conn.chunked);
            conn.out_frames = 1;
        }
        conn.out = out;
        let inbox = &notify.inbox;
        inbox.load.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = inbox.cmds.send(Cmd::Add(conn)) {
            inbox.load.fetch_sub(1, Ordering::Relaxed);
            drop(e);
            return Err(io::Error::other("the writer pool has stopped"));
        }
        // Serviced once added, whatever was listed before.
        inbox.wake();
        Ok(())
    }

    /// Ends every pool stream: what is queued goes out, then the end of the
    /// response; each thread ends once its streams are done.
    pub(crate) fn stop(&self) {
        for i in &self.inboxes {
            let _ = i.cmds.send(Cmd::Stop);
            i.wake();
        }
    }
}

/// Appends `body` as one chunk (or as is, without chunking).
fn push_chunk(out: &mut Vec<u8>, body: &[u8], chunked: bool) {
    if body.is_empty() {
        return;
    }
    if chunked {
        let _ = write!(out, "{:x}\r\n", body.len());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(body);
    }
}

/// One stream, owned by one pool thread.
struct Conn {
    key: u64,
    sock: mio::net::TcpStream,
    /// Bytes to write; `pos` of them are written.
    out: Vec<u8>,
    pos: usize,
    /// Frames in `out`, counted once it is all written.
    out_frames: u64,
    chunked: bool,
    /// The gap event and replay still to write.
    prelude: std::vec::IntoIter<Frame>,
    /// The last of the prelude is in `out`: once written, `out` gives back
    /// the batch-sized room the replay made it take.
    replayed: bool,
    sub: Subscription,
    listed: Arc<AtomicBool>,
    last_write: Instant,
    /// Since when `out` has been waiting for the socket to take it.
    stalled: Option<Instant>,
    /// The end of the response is in `out`: close once it is written.
    ending: bool,
    heartbeat: Option<Duration>,
    write_timeout: Option<Duration>,
    frames_written: Arc<AtomicU64>,
    _slot: StreamSlot,
}

enum Step {
    /// Waiting for the socket or for frames.
    Idle,
    /// More is queued than one turn writes.
    More,
    /// The stream is over: drop it.
    Done,
}

impl Conn {
    /// Writes what `out` holds; `Ok(true)` when all of it went out.
    fn flush(&mut self, now: Instant) -> io::Result<bool> {
        let mut progressed = false;
        while self.pos < self.out.len() {
            match self.sock.write(&self.out[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Like a blocking send's timeout: a client that reads,
                    // however slowly, is not stuck.
                    if progressed {
                        self.stalled = Some(now);
                    } else {
                        self.stalled.get_or_insert(now);
                    }
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.stalled = None;
        self.last_write = now;
        self.frames_written
            .fetch_add(self.out_frames, Ordering::Relaxed);
        self.out_frames = 0;
        self.out.clear();
        self.pos = 0;
        if std::mem::take(&mut self.replayed) && self.out.capacity() > IDLE_BUFFER {
            self.out.shrink_to(IDLE_BUFFER / 8);
        }
        Ok(true)
    }

    /// Writes whatever is pending and then what is queued, a few batches at
    /// most, never blocking.
    fn service(&mut self, scratch: &mut Vec<u8>, stopping: bool, now: Instant) -> Step {
        for _ in 0..TURN_BATCHES {
            match self.flush(now) {
                Ok(true) => {}
                Ok(false) => return Step::Idle,
                Err(e) => {
                    log::debug!("/events: client gone: {e}");
                    return Step::Done;
                }
            }
            if self.ending {
                return Step::Done;
            }
            scratch.clear();
            let frames = self.gather(scratch);
            if self.sub.is_evicted() {
                // Like the thread writer: what is queued is not sent to an
                // evicted subscriber, it catches up from history.
                log::debug!("/events: stream ended: Evicted");
                scratch.clear();
                self.end();
                continue;
            }
            if stopping {
                push_chunk(&mut self.out, scratch, self.chunked);
                self.out_frames += frames;
                self.end();
                continue;
            }
            if frames == 0 {
                return Step::Idle;
            }
            push_chunk(&mut self.out, scratch, self.chunked);
            self.out_frames += frames;
        }
        Step::More
    }

    /// Moves replayed, then queued frames into `scratch`, up to a batch.
    fn gather(&mut self, scratch: &mut Vec<u8>) -> u64 {
        let mut frames = 0;
        if self.prelude.len() > 0 {
            while scratch.len() < BATCH_BYTES {
                let Some(f) = self.prelude.next() else {
                    break;
                };
                f.encode_into(scratch);
                frames += 1;
            }
            if self.prelude.len() == 0 {
                // The vector itself, up to 32 bytes per replayed event,
                // goes now, not when the stream ends.
                self.prelude = Vec::new().into_iter();
                self.replayed = true;
            }
        }
        if self.prelude.len() == 0 {
            // Cleared before looking, so a frame queued after this drain
            // lists the subscriber again.
            self.listed.store(false, Ordering::Release);
            while scratch.len() < BATCH_BYTES {
                match self.sub.receiver().try_recv() {
                    Ok(f) => {
                        f.encode_into(scratch);
                        frames += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        frames
    }

    /// Queues the end of the response.
    fn end(&mut self) {
        if self.chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.ending = true;
    }

    /// Reads and drops what the client sends; `false` once it has closed
    /// the connection or it failed.
    fn drain_input(&mut self, scratch: &mut Vec<u8>) -> bool {
        scratch.resize(4096, 0);
        // Bounded, so a client that keeps sending cannot hold the thread;
        // what is left makes the socket readable again.
        for _ in 0..16 {
            match self.sock.read(scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Writes a heartbeat if nothing was written for a whole period;
    /// returns when the next one is due.
    fn beat(&mut self, every: Duration, now: Instant) -> io::Result<Instant> {
        let due = self.last_write + every;
        if due > now {
            return Ok(due);
        }
        if self.out.is_empty() && !self.ending {
            push_chunk(&mut self.out, b": keep-alive\n", self.chunked);
            self.out_frames = 1;
            if self.out.capacity() > IDLE_BUFFER {
                // A stream idle for a whole heartbeat period gives back what
                // a burst made it hold: up to a batch, times every stream.
                self.out.shrink_to(IDLE_BUFFER / 8);
            }
            self.flush(now)?;
        }
        // Blocked output: the stall check deals with it; look again later.
        Ok(now + every)
    }
}

struct Worker {
    poll: Poll,
    inbox: Arc<Inbox>,
    ready: Receiver<u64>,
    cmds: Receiver<Cmd>,
    conns: HashMap<u64, Box<Conn>>,
    /// Streams with more queued than one turn wrote.
    again: VecDeque<u64>,
    /// Heartbeat deadlines, one entry per stream with a heartbeat.
    beats: BinaryHeap<Reverse<(Instant, u64)>>,
    scratch: Vec<u8>,
    /// When `Cmd::Stop` came.
    stopping: Option<Instant>,
}

/// Marks a pool thread that ends by a panic as full, so no new stream is
/// placed on it (its mailbox is gone, so one would be refused anyway).
struct PanicGuard(Arc<Inbox>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            log::error!("a writer pool thread panicked; its streams ended");
            self.0.load.store(usize::MAX / 2, Ordering::Relaxed);
        }
    }
}

impl Worker {
    fn run(mut self) {
        let _guard = PanicGuard(self.inbox.clone());
        let mut events = Events::with_capacity(1024);
        let mut last_scan = Instant::now();
        loop {
            let now = Instant::now();
            let mut timeout = STALL_SCAN;
            if let Some(Reverse((t, _))) = self.beats.peek() {
                timeout = timeout.min(t.saturating_duration_since(now));
            }
            if !self.again.is_empty() || !self.ready.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("writer pool: poll failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
            self.inbox.woken.store(false, Ordering::SeqCst);
            let now = Instant::now();

            while let Ok(cmd) = self.cmds.try_recv() {
                match cmd {
                    Cmd::Add(conn) => self.insert(conn, now),
                    Cmd::Stop => {
                        if self.stopping.is_none() {
                            self.stopping = Some(now);
                            let keys: Vec<u64> = self.conns.keys().copied().collect();
                            self.again.extend(keys);
                        }
                    }
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let key = ev.token().0 as u64;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    let alive = match self.conns.get_mut(&key) {
                        Some(c) => c.drain_input(&mut self.scratch),
                        None => continue,
                    };
                    if !alive {
                        log::debug!("/events: client gone: connection closed");
                        self.remove(key);
                        continue;
                    }
                }
                if ev.is_writable() {
                    self.service(key, now);
                }
            }
            // Only those listed so far: publishers listing faster than this
            // thread writes must not keep it from heartbeats and sockets.
            for _ in 0..self.ready.len() {
                let Ok(key) = self.ready.try_recv() else {
                    break;
                };
                self.service(key, now);
            }
            for _ in 0..self.again.len() {
                let Some(key) = self.again.pop_front() else {
                    break;
                };
                self.service(key, now);
            }
            self.heartbeats(now);
            if now.duration_since(last_scan) >= STALL_SCAN {
                last_scan = now;
                self.drop_stalled(now);
            }
            if let Some(stopped) = self.stopping {
                // A stream handed over just as shutdown began may still be
                // on its way: wait a moment for it before ending.
                if self.conns.is_empty() && now >= stopped + STOP_LINGER {
                    return;
                }
                if now >= stopped + STOP_DEADLINE {
                    let keys: Vec<u64> = self.conns.keys().copied().collect();
                    for k in keys {
                        self.remove(k);
                    }
                    return;
                }
            }
        }
    }

    fn insert(&mut self, mut conn: Box<Conn>, now: Instant) {
        let key = conn.key;
        if let Err(e) = self.poll.registry().register(
            &mut conn.sock,
            Token(key as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("writer pool: cannot watch a socket: {e}");
            self.inbox.load.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if let Some(every) = conn.heartbeat {
            self.beats.push(Reverse((now + every, key)));
        }
        conn.last_write = now;
        self.conns.insert(key, conn);
        self.again.push_back(key);
    }

    fn service(&mut self, key: u64, now: Instant) {
        let stopping = self.stopping.is_some();
        let step = match self.conns.get_mut(&key) {
            Some(c) => c.service(&mut self.scratch, stopping, now),
            None => return,
        };
        match step {
            Step::Idle => {}
            Step::More => self.again.push_back(key),
            Step::Done => self.remove(key),
        }
    }

    fn remove(&mut self, key: u64) {
        if let Some(mut c) = self.conns.remove(&key) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.inbox.load.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn heartbeats(&mut self, now: Instant) {
        while let Some(Reverse((t, key))) = self.beats.peek().copied() {
            if t > now {
                return;
            }
            self.beats.pop();
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            let Some(every) = c.heartbeat else {
                continue;
            };
            match c.beat(every, now) {
                Ok(next) => self.beats.push(Reverse((next, key))),
                Err(e) => {
                    log::debug!("/events: client gone: {e}");
                    self.remove(key);
                }
            }
        }
    }

    /// Drops streams whose socket took nothing for the write timeout: the
    /// client stopped reading (a thread writer's send timeout, here).
    fn drop_stalled(&mut self, now: Instant) {
        let stuck: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!((c.stalled, c.write_timeout), (Some(s), Some(t)) if now.duration_since(s) >= t)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in stuck {
            log::debug!("/events: client gone: write timed out");
            self.remove(k);
        }
    }
}
