//! The writer pool: a few threads, each serving many streams over
//! non-blocking sockets, every server stream included (`/events`,
//! `/async`, `/firehose`, custom routes). Each stream is the stream engine
//! (`engine.rs`) fed from one of two sources:
//!
//! - a hub subscription: a publish marks the subscriber ready on its pool
//!   thread through the hub's [`Ready`] trait and wakes each thread at most
//!   once (not once per subscriber);
//! - a producer's bounded channel (custom routes, `/async`, `/firehose`):
//!   crossbeam has no hook on `send`, so a relay thread waits in a
//!   `Select` over the receivers of the channel streams that have nothing
//!   to write ("armed"). When one becomes ready (a frame, or the producer
//!   dropped its sender), the relay disarms it and marks it ready on its
//!   pool thread, the same way as the hub does. The pool thread takes from
//!   the channel only while the socket keeps up, and when the channel is
//!   empty hands it back to the relay. A slow client thus leaves frames in
//!   its channel, whose bound blocks that producer only; and a busy stream
//!   costs the relay nothing, as it is not armed while there is work.
//!
//!   Each wait registers with every armed channel, so it costs in
//!   proportion to how many a relay watches: a relay watches at most
//!   `RELAY_STREAMS` streams, and one more relay starts for each
//!   `RELAY_STREAMS` channel streams open at once (one at start-up, so a
//!   custom route's stream costs its producer thread and no other, up to
//!   that many).
//!
//! What is in flight per stream is one batch of at most `BATCH_BYTES` plus
//! its queue (the hub's `--queue`, or the channel's bound).

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, unbounded};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::engine::{Engine, Spec, StreamEnd};
use crate::event::{Event, Frame};
use crate::hub::{Ready, Subscription, Wake};

/// Batches written to one stream before the others get their turn.
const TURN_BATCHES: usize = 4;
/// How often streams that cannot be written are checked against the
/// write timeout.
const STALL_SCAN: Duration = Duration::from_millis(250);
const WAKER: Token = Token(usize::MAX);
/// How long a pool thread with no streams left waits for late ones once
/// shutdown began.
const STOP_LINGER: Duration = Duration::from_millis(200);
/// A pool thread's stack: it moves bytes and keeps small tables.
const POOL_STACK: usize = 256 * 1024;
/// The relay's stack: it only selects over channels.
const RELAY_STACK: usize = 128 * 1024;
/// Channel streams one relay watches at most: a wait costs a registration
/// with each armed channel (about 0.1 us), so this bounds what one wake-up
/// of a relay costs, however many streams are open.
const RELAY_STREAMS: usize = 64;

/// One pool thread's mailbox, shared with publishers and the relay.
pub(crate) struct Inbox {
    /// Keys of streams with something new queued (or evicted, or ended).
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

/// One stream's entry on its pool thread's ready list.
pub(crate) struct Notify {
    key: u64,
    /// Set when the key is already on the ready list: a stream is listed
    /// once however many frames arrive before its thread gets to it.
    listed: AtomicBool,
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
    /// End every stream; any still open at the deadline is dropped.
    Stop(Instant),
}

/// Where a stream's frames come from.
pub(crate) enum Feed {
    /// A hub subscription: its prelude (gap, replay), then its queue.
    Hub(Subscription),
    /// A producer's channel of events; the stream ends when it disconnects.
    Events(Receiver<Event>),
    /// A producer's channel of encoded frames (`/firehose`).
    Frames(Receiver<Frame>),
}

/// How a pool stream is written.
pub(crate) struct StreamSpec {
    pub(crate) spec: Spec,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) frames_written: Arc<AtomicU64>,
    /// Dropped when the stream ends (the server's stream slot).
    pub(crate) hold: Box<dyn Any + Send>,
    /// When the stream's authorization ends (its token's expiry): the
    /// response is ended then, so the client reconnects with a fresh one.
    pub(crate) ends_at: Option<Instant>,
}

/// The pool: its threads' mailboxes, the relays, and the threads to join.
pub(crate) struct Pool {
    inboxes: Vec<Arc<Inbox>>,
    next_key: AtomicU64,
    relays: Mutex<Relays>,
    threads: Mutex<Vec<JoinHandle<bool>>>,
}

struct Relays {
    list: Vec<Arc<Relay>>,
    /// Set by `stop`: no relay starts after it.
    stopped: bool,
}

/// One relay thread's mailbox, and how many channel streams it serves.
struct Relay {
    cmds: Sender<RelayCmd>,
    streams: AtomicUsize,
}

impl Pool {
    /// Starts `threads` pool threads and the first relay.
    pub(crate) fn start(threads: usize) -> io::Result<Pool> {
        let mut pool = Pool {
            inboxes: Vec::new(),
            next_key: AtomicU64::new(0),
            relays: Mutex::new(Relays {
                list: Vec::new(),
                stopped: false,
            }),
            threads: Mutex::new(Vec::new()),
        };
        let first = {
            let mut relays = pool.relays.lock().unwrap_or_else(|p| p.into_inner());
            pool.start_relay(&mut relays, 0)
        };
        if let Err(e) = first {
            pool.stop(Instant::now());
            pool.join();
            return Err(e);
        }
        for i in 0..threads.max(1) {
            if let Err(e) = pool.start_thread(i) {
                pool.stop(Instant::now());
                pool.join();
                return Err(e);
            }
        }
        Ok(pool)
    }

    fn start_thread(&mut self, i: usize) -> io::Result<()> {
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
            arms: Vec::new(),
            conns: HashMap::new(),
            again: VecDeque::new(),
            beats: BinaryHeap::new(),
            ends: BinaryHeap::new(),
            scratch: Vec::with_capacity(4096),
            stopping: None,
        };
        let handle = thread::Builder::new()
            .name(format!("tinysse-writer-{i}"))
            .stack_size(POOL_STACK)
            .spawn(move || worker.run())?;
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
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
            listed: AtomicBool::new(false),
            inbox,
            wake,
        })
    }

    /// A relay with room for one more channel stream (counted), started if
    /// every one is full; `None` once the pool is stopping, when a stream
    /// is ended at once and needs none.
    fn relay_for_stream(&self) -> io::Result<Option<Released>> {
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        if relays.stopped {
            return Ok(None);
        }
        for r in &relays.list {
            let room = r
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < RELAY_STREAMS).then_some(n + 1)
                })
                .is_ok();
            if room {
                return Ok(Some(Released(r.clone())));
            }
        }
        self.start_relay(&mut relays, 1).map(|r| Some(Released(r)))
    }

    /// Starts a relay serving `streams` channel streams.
    fn start_relay(&self, relays: &mut Relays, streams: usize) -> io::Result<Arc<Relay>> {
        let (cmds, rx) = unbounded();
        let handle = thread::Builder::new()
            .name("tinysse-relay".into())
            .stack_size(RELAY_STACK)
            .spawn(move || {
                relay(rx);
                true
            })?;
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
        let r = Arc::new(Relay {
            cmds,
            streams: AtomicUsize::new(streams),
        });
        relays.list.push(r.clone());
        Ok(r)
    }

    /// Hands a stream's socket to the pool thread `notify` belongs to. The
    /// head and `retry:` go out first, then the feed's frames.
    pub(crate) fn add(
        &self,
        notify: &Arc<Notify>,
        sock: TcpStream,
        feed: Feed,
        spec: StreamSpec,
    ) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        let now = Instant::now();
        let source = match feed {
            // Moved, not copied: the stream drains the hub's one replay
            // vector and frees it once written.
            Feed::Hub(mut sub) => Source::Hub {
                prelude: sub.take_prelude().into_iter(),
                sub,
            },
            Feed::Events(rx) => Source::Channel {
                rx: Watched::Events(rx),
                armed: false,
                relay: self.relay_for_stream()?,
            },
            Feed::Frames(rx) => Source::Channel {
                rx: Watched::Frames(rx),
                armed: false,
                relay: self.relay_for_stream()?,
            },
        };
        let conn = Box::new(Conn {
            key: notify.key,
            sock: mio::net::TcpStream::from_std(sock),
            engine: Engine::new(&spec.spec, true, SystemTime::now(), now),
            source,
            notify: notify.clone(),
            stalled: None,
            write_timeout: spec.write_timeout,
            frames_written: spec.frames_written,
            ends_at: spec.ends_at,
            _hold: spec.hold,
        });
        let inbox = &notify.inbox;
        inbox.load.fetch_add(1, Ordering::Relaxed);
        if inbox.cmds.send(Cmd::Add(conn)).is_err() {
            inbox.load.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("the writer pool has stopped"));
        }
        // Serviced once added, whatever was listed before.
        inbox.wake();
        Ok(())
    }

    /// Ends every pool stream: what is queued goes out (a batch at most),
    /// then the end of the response; each thread ends once its streams
    /// are done, dropping those still open at `deadline`. Called again, an
    /// earlier deadline wins.
    pub(crate) fn stop(&self, deadline: Instant) {
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        relays.stopped = true;
        for r in &relays.list {
            let _ = r.cmds.send(RelayCmd::Stop);
        }
        drop(relays);
        for i in &self.inboxes {
            let _ = i.cmds.send(Cmd::Stop(deadline));
            i.wake();
        }
    }

    /// Waits for the pool's threads (after [`stop`](Self::stop)); whether
    /// every stream ended before the deadline.
    pub(crate) fn join(&self) -> bool {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut all = true;
        for t in threads {
            all &= t.join().unwrap_or(false);
        }
        all
    }
}

/// A channel stream's receiver.
enum Watched {
    Events(Receiver<Event>),
    Frames(Receiver<Frame>),
}

impl Watched {
    fn select<'a>(&'a self, sel: &mut Select<'a>) {
        match self {
            Watched::Events(r) => sel.recv(r),
            Watched::Frames(r) => sel.recv(r),
        };
    }

    fn is_empty(&self) -> bool {
        match self {
            Watched::Events(r) => r.is_empty(),
            Watched::Frames(r) => r.is_empty(),
        }
    }

    fn clone_rx(&self) -> Watched {
        match self {
            Watched::Events(r) => Watched::Events(r.clone()),
            Watched::Frames(r) => Watched::Frames(r.clone()),
        }
    }

    /// Moves queued frames into the engine while it has room. `Ok(true)`:
    /// the channel is empty now; `Err(())`: the producer is done.
    fn gather(&self, e: &mut Engine, frames: &mut u64) -> Result<bool, ()> {
        fn take<T: crate::event::Encode>(
            r: &Receiver<T>,
            e: &mut Engine,
            frames: &mut u64,
        ) -> Result<bool, ()> {
            while e.has_room() {
                match r.try_recv() {
                    Ok(f) => {
                        e.push_encoded(&f);
                        *frames += 1;
                    }
                    Err(TryRecvError::Empty) => return Ok(true),
                    Err(TryRecvError::Disconnected) => return Err(()),
                }
            }
            Ok(false)
        }
        match self {
            Watched::Events(r) => take(r, e, frames),
            Watched::Frames(r) => take(r, e, frames),
        }
    }
}

enum RelayCmd {
    /// Watch these channels until each has something, then mark it ready.
    Arm(Vec<Armed>),
    /// The stream ended: let go of its receiver, so its producer's `send`
    /// fails.
    Disarm(u64),
    Stop,
}

struct Armed {
    key: u64,
    rx: Watched,
    notify: Arc<Notify>,
}

/// The relay: waits until an armed channel has a frame or is disconnected,
/// then disarms it and marks it ready on its pool thread. Waiting costs a
/// registration per armed channel, so it is done only for channels with
/// nothing queued; a stream with work is never armed.
fn relay(cmds: Receiver<RelayCmd>) {
    let mut armed: Vec<Armed> = Vec::new();
    let mut wake: Vec<Arc<dyn Wake>> = Vec::new();
    loop {
        // Every command first: those that came while the relay was firing
        // join this one wait instead of each costing one.
        loop {
            match cmds.try_recv() {
                Ok(RelayCmd::Arm(list)) => armed.extend(list),
                Ok(RelayCmd::Disarm(key)) => {
                    if let Some(i) = armed.iter().position(|a| a.key == key) {
                        armed.swap_remove(i);
                    }
                }
                Ok(RelayCmd::Stop) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        let picked = {
            let mut sel = Select::new();
            sel.recv(&cmds);
            for a in &armed {
                a.rx.select(&mut sel);
            }
            sel.ready()
        };
        if picked == 0 {
            continue;
        }
        // The one picked, and every other one with frames by now: one
        // wake-up per pool thread for all of them.
        let mut fire = |a: Armed| {
            if let Some(w) = a.notify.queued()
                && !wake.iter().any(|x| Arc::ptr_eq(x, w))
            {
                wake.push(w.clone());
            }
        };
        fire(armed.swap_remove(picked - 1));
        let mut i = 0;
        while i < armed.len() {
            if armed[i].rx.is_empty() {
                i += 1;
            } else {
                fire(armed.swap_remove(i));
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
    }
}

enum Source {
    Hub {
        sub: Subscription,
        /// The gap event and replay still to write.
        prelude: std::vec::IntoIter<Frame>,
    },
    Channel {
        rx: Watched,
        /// The relay watches it (or has just marked it ready).
        armed: bool,
        /// `None` for a stream added while the pool stops.
        relay: Option<Released>,
    },
}

/// A stream's place on its relay, given back when the stream ends.
struct Released(Arc<Relay>);

impl Drop for Released {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One stream, owned by one pool thread.
struct Conn {
    key: u64,
    sock: mio::net::TcpStream,
    engine: Engine,
    source: Source,
    notify: Arc<Notify>,
    /// Since when output has been waiting for the socket to take it.
    stalled: Option<Instant>,
    write_timeout: Option<Duration>,
    frames_written: Arc<AtomicU64>,
    ends_at: Option<Instant>,
    _hold: Box<dyn Any + Send>,
}

enum Step {
    /// Waiting for the socket or for frames.
    Idle,
    /// More is queued than one turn writes.
    More,
    /// The stream is over: drop it.
    Done,
}

/// What one look at a stream's source found.
struct Gathered {
    frames: u64,
    /// The hub evicted the subscriber.
    evicted: bool,
    /// The producer dropped its sender and everything it sent is taken.
    finished: bool,
    /// The channel has nothing more right now: arm the relay.
    empty: bool,
}

impl Conn {
    /// Writes what the engine has; `Ok(true)` when all of it went out.
    fn flush(&mut self, now: Instant) -> io::Result<bool> {
        let mut progressed = false;
        loop {
            let bytes = self.engine.pending();
            if bytes.is_empty() {
                break;
            }
            match self.sock.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    progressed = true;
                    if let Some(frames) = self.engine.wrote(n, now) {
                        self.frames_written.fetch_add(frames, Ordering::Relaxed);
                    }
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
        Ok(true)
    }

    /// Writes whatever is pending and then what is queued, a few batches at
    /// most, never blocking.
    fn service(
        &mut self,
        stopping: bool,
        now: Instant,
        arms: &mut Vec<(Arc<Relay>, Armed)>,
    ) -> Step {
        for _ in 0..TURN_BATCHES {
            match self.flush(now) {
                Ok(true) => {}
                Ok(false) => return Step::Idle,
                Err(e) => {
                    log::debug!("stream: client gone: {e}");
                    return Step::Done;
                }
            }
            if self.engine.is_done() {
                if let Some(end) = self.engine.take_end() {
                    log::debug!("stream ended: {end:?}");
                }
                return Step::Done;
            }
            let got = self.gather();
            if got.evicted {
                self.engine.evict();
            } else if stopping {
                self.engine.finish(StreamEnd::Shutdown);
            } else if got.finished {
                self.engine.finish(StreamEnd::Finished);
            } else if got.frames == 0 {
                if got.empty {
                    self.arm(arms);
                }
                return Step::Idle;
            }
        }
        Step::More
    }

    /// Moves replayed, then queued frames into the engine, up to a batch.
    fn gather(&mut self) -> Gathered {
        let mut got = Gathered {
            frames: 0,
            evicted: false,
            finished: false,
            empty: false,
        };
        match &mut self.source {
            Source::Hub { sub, prelude } => {
                if prelude.len() > 0 {
                    while self.engine.has_room() {
                        let Some(f) = prelude.next() else {
                            break;
                        };
                        self.engine.push(f.bytes());
                        got.frames += 1;
                    }
                    if prelude.len() == 0 {
                        // The vector itself, up to 32 bytes per replayed
                        // event, goes now, and so does the room the replay
                        // made the buffer take, once written.
                        *prelude = Vec::new().into_iter();
                        self.engine.trim();
                    }
                }
                if prelude.len() == 0 {
                    // Cleared before looking, so a frame queued after this
                    // drain lists the subscriber again.
                    self.notify.listed.store(false, Ordering::Release);
                    while self.engine.has_room() {
                        match sub.receiver().try_recv() {
                            Ok(f) => {
                                self.engine.push(f.bytes());
                                got.frames += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
                got.evicted = sub.is_evicted();
            }
            Source::Channel { rx, armed, .. } => {
                // Listed by the relay: it has let go of the channel.
                if self.notify.listed.swap(false, Ordering::AcqRel) {
                    *armed = false;
                }
                match rx.gather(&mut self.engine, &mut got.frames) {
                    Ok(empty) => got.empty = empty,
                    Err(()) => got.finished = true,
                }
            }
        }
        got
    }

    /// Has the relay watch the channel, unless it does already: queued in
    /// `arms`, which the thread sends once per loop, in one message per
    /// relay.
    fn arm(&mut self, arms: &mut Vec<(Arc<Relay>, Armed)>) {
        if let Source::Channel {
            rx,
            armed,
            relay: Some(relay),
        } = &mut self.source
            && !*armed
        {
            *armed = true;
            arms.push((
                relay.0.clone(),
                Armed {
                    key: self.key,
                    rx: rx.clone_rx(),
                    notify: self.notify.clone(),
                },
            ));
        }
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
}

struct Worker {
    poll: Poll,
    inbox: Arc<Inbox>,
    ready: Receiver<u64>,
    cmds: Receiver<Cmd>,
    /// Channels to hand to their relays at the end of this loop.
    arms: Vec<(Arc<Relay>, Armed)>,
    conns: HashMap<u64, Box<Conn>>,
    /// Streams with more queued than one turn wrote.
    again: VecDeque<u64>,
    /// Heartbeat deadlines, one entry per stream with a heartbeat.
    beats: BinaryHeap<Reverse<(Instant, u64)>>,
    /// When streams' authorizations end, one entry per stream with an end
    /// (and some of streams already gone, dropped now and then).
    ends: BinaryHeap<Reverse<(Instant, u64)>>,
    scratch: Vec<u8>,
    /// When `Cmd::Stop` came, and the deadline it set.
    stopping: Option<(Instant, Instant)>,
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
    /// Serves streams until stopped; whether every stream ended before the
    /// stop deadline.
    fn run(mut self) -> bool {
        let _guard = PanicGuard(self.inbox.clone());
        let mut events = Events::with_capacity(1024);
        let mut last_scan = Instant::now();
        loop {
            let now = Instant::now();
            let mut timeout = STALL_SCAN;
            for heap in [&self.beats, &self.ends] {
                if let Some(Reverse((t, _))) = heap.peek() {
                    timeout = timeout.min(t.saturating_duration_since(now));
                }
            }
            if let Some((_, deadline)) = self.stopping {
                timeout = timeout.min(deadline.saturating_duration_since(now));
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
                    Cmd::Stop(deadline) => match &mut self.stopping {
                        Some((_, d)) => *d = (*d).min(deadline),
                        None => {
                            self.stopping = Some((now, deadline));
                            let keys: Vec<u64> = self.conns.keys().copied().collect();
                            self.again.extend(keys);
                        }
                    },
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
                        log::debug!("stream: client gone: connection closed");
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
            self.expiries(now);
            self.send_arms();
            if now.duration_since(last_scan) >= STALL_SCAN {
                last_scan = now;
                self.drop_stalled(now);
            }
            if let Some((stopped, deadline)) = self.stopping {
                // A stream handed over just as shutdown began may still be
                // on its way: wait a moment for it before ending.
                if self.conns.is_empty() && now >= (stopped + STOP_LINGER).min(deadline) {
                    return true;
                }
                if now >= deadline {
                    let keys: Vec<u64> = self.conns.keys().copied().collect();
                    let cut = !keys.is_empty();
                    for k in keys {
                        self.remove(k);
                    }
                    return !cut;
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
        if let Some(next) = conn.engine.next_heartbeat(now) {
            self.beats.push(Reverse((next, key)));
        }
        if let Some(end) = conn.ends_at {
            self.ends.push(Reverse((end, key)));
        }
        self.conns.insert(key, conn);
        self.again.push_back(key);
    }

    fn service(&mut self, key: u64, now: Instant) {
        let stopping = self.stopping.is_some();
        let step = match self.conns.get_mut(&key) {
            Some(c) => c.service(stopping, now, &mut self.arms),
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
            if let Source::Channel {
                armed: true,
                relay: Some(relay),
                ..
            } = &c.source
            {
                // Not sent yet, or sent: either way the relay lets go of the
                // receiver, so the producer's `send` fails.
                self.arms.retain(|(_, a)| a.key != key);
                let _ = relay.0.cmds.send(RelayCmd::Disarm(key));
            }
            self.inbox.load.fetch_sub(1, Ordering::Relaxed);
            // A stream that ended early leaves its entry behind until its
            // time (hours, for a long token): dropped in bulk instead,
            // so the heap stays in proportion to the streams open.
            if self.ends.len() > 2 * self.conns.len() + 64 {
                let conns = &self.conns;
                self.ends.retain(|Reverse((_, k))| conns.contains_key(k));
            }
        }
    }

    /// Ends the streams whose authorization ran out: what is gathered goes
    /// out, then the end of the response (the terminator), so a browser
    /// reconnects at once with whatever token it holds now.
    fn expiries(&mut self, now: Instant) {
        while let Some(Reverse((t, key))) = self.ends.peek().copied() {
            if t > now {
                return;
            }
            self.ends.pop();
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.engine.finish(StreamEnd::Expired);
            self.service(key, now);
        }
    }

    /// Sends the channels armed in this loop, one message per relay.
    fn send_arms(&mut self) {
        while let Some((relay, first)) = self.arms.pop() {
            let mut batch = vec![first];
            let mut i = 0;
            while i < self.arms.len() {
                if Arc::ptr_eq(&self.arms[i].0, &relay) {
                    batch.push(self.arms.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            let _ = relay.cmds.send(RelayCmd::Arm(batch));
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
            if c.engine.heartbeat(now)
                && let Err(e) = c.flush(now)
            {
                log::debug!("stream: client gone: {e}");
                self.remove(key);
                continue;
            }
            if let Some(next) = c.engine.next_heartbeat(now) {
                self.beats.push(Reverse((next, key)));
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
            log::debug!("stream: client gone: write timed out");
            self.remove(k);
        }
    }
}
