//! Topics, ids, history, subscribers, replay hand-off and eviction.
//!
//! Each topic has its own lock, held while an id is taken, the frame is
//! appended to history and handed to every subscriber's queue with
//! `try_send`: that one step is what keeps replay and live delivery free of
//! gaps and duplicates. Publishers to different topics do not wait on each
//! other, with one exception: while someone is subscribed to several topics
//! at once, publishers to those topics also take one shared lock for that
//! step, so the subscriber's ids arrive in order across its topics. No
//! publisher ever waits on a subscriber: a full queue evicts it.
//!
//! `history_bytes` is kept with one counter for all topics and, to find the
//! oldest event across topics, a heap of each topic's oldest id; a publish
//! touches the heap only when its topic had no history. Over the limit, the
//! publisher evicts (one thread at a time, see [`Inner::shrink`]); another
//! bound on age would evict through the same path.
//!
//! Where events are kept beyond memory is the storage seam, [`Store`]:
//! the hub asks a store to append each event before acknowledging it, to
//! load the retained events and the highest id at start-up, and a store
//! may feed in events published elsewhere ([`Hub::ingest`], which loading
//! uses too). With a store, ids are taken in one sequence and each event is
//! delivered in id order once it is stored, so publishers share the
//! store's group commits without ever delivering out of order.
//!
//! A topic lives while it holds history or subscribers; once it has neither
//! it is forgotten (removed from the hub), so it stops counting towards
//! `max_topics`. Whoever may leave a topic empty (the last unsubscribe, the
//! eviction of its last retained event) calls [`Inner::forget`]. A removed
//! topic is marked under its own lock, and a publisher or subscriber that
//! looked it up just before finds the mark and looks the name up again,
//! so nothing is ever published into a topic nobody can reach.

use std::cmp::{Ordering as Order, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::defaults;
use crate::event::{Event, Frame, ID_ROOM};
use crate::metrics::Metrics;
use crate::store::{Cluster, Loaded, Store};

/// How the hub tells whoever serves a subscription (its owner: a writer
/// pool thread) that it has something to do: a frame was queued, or it was
/// evicted. The hub calls [`queued`](Ready::queued) under the topic's lock,
/// for every subscriber a publish reaches; the owner records the subscriber
/// as ready there and says which thread, if any, must be woken. The hub
/// wakes each such thread once per publish, after the lock: a burst of
/// publishes costs one wake-up per owning thread, not one per subscriber,
/// and no wake-up is a syscall made while publishers wait on the lock.
pub(crate) trait Ready: Send + Sync {
    /// Records that the subscriber has something to do. Cheap and never
    /// blocking (it runs under the topic's lock). Returns the thread to
    /// wake, or `None` when the subscriber was already recorded (whoever
    /// recorded it woke the thread, or the thread is busy with it).
    fn queued(&self) -> Option<&Arc<dyn Wake>>;
}

/// Wakes the thread that owns ready subscribers (see [`Ready`]).
pub(crate) trait Wake: Send + Sync {
    /// Wakes the thread; cheap when it is awake or a wake-up is on its way.
    fn wake(&self);
}

/// The clock a hub reads, in µs since the Unix epoch: ids are seeded from
/// it, and `history_age` measures with it. Injected in tests to set the
/// clock back.
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub(crate) fn system_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A stored event waiting for its turn: topic, publish time, bytes.
type Stored = (String, u64, Arc<[u8]>);

/// Ids taken but not yet delivered, with a store (see [`Hub::publish`]).
#[derive(Default)]
struct Sequence {
    /// Taken, in order, not yet delivered.
    pending: VecDeque<u64>,
    /// Stored (`Some`, with what to deliver) or failed (`None`), waiting
    /// for the ids before them.
    done: HashMap<u64, Option<Stored>>,
    /// Delivered ids whose topic could not be held (`max_topics`).
    refused: HashMap<u64, PublishError>,
}

/// Topics one subscription may name.
pub(crate) const MAX_SUBSCRIPTION_TOPICS: usize = 64;

/// Limits of a [`Hub`], set through the server builder's setters (the one
/// public way to set them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HubLimits {
    /// Events kept per topic for replay.
    pub(crate) history: usize,
    /// Frames queued per subscriber before it is evicted.
    pub(crate) queue: usize,
    /// Topics held at once.
    pub(crate) max_topics: usize,
    /// Bytes of retained events of all topics together, counted by encoded
    /// frame size; over it, the oldest events (smallest ids, across topics)
    /// leave the history first.
    pub(crate) history_bytes: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            history: defaults::HISTORY,
            queue: defaults::QUEUE,
            max_topics: defaults::MAX_TOPICS,
            history_bytes: defaults::HISTORY_BYTES,
        }
    }
}

/// Why a publish was refused. Nothing was published.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is empty, too long, or has a character outside
    /// `A-Z a-z 0-9 _ - . : /`.
    InvalidTopic,
    /// Creating the topic would exceed the hub's `max_topics`.
    TooManyTopics,
    /// The event could not be stored (a full disk, a database error): it
    /// was not published. The reason says why.
    Unavailable(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidTopic => f.write_str(TOPIC_RULE),
            PublishError::TooManyTopics => f.write_str("too many topics"),
            PublishError::Unavailable(reason) => write!(f, "cannot store the event: {reason}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why a subscription was refused. Nothing was registered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// No topic was named.
    NoTopic,
    /// A topic name is invalid (see [`PublishError::InvalidTopic`]).
    InvalidTopic,
    /// Creating a topic would exceed the hub's `max_topics`.
    TooManyTopics,
    /// More than 64 topics were named (repeats count).
    TopicListTooLong,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::NoTopic => f.write_str("missing topic parameter"),
            SubscribeError::InvalidTopic => f.write_str(TOPIC_RULE),
            SubscribeError::TooManyTopics => f.write_str("too many topics"),
            SubscribeError::TopicListTooLong => write!(
                f,
                "too many topic parameters: a subscription names at most {MAX_SUBSCRIPTION_TOPICS} topics"
            ),
        }
    }
}

impl std::error::Error for SubscribeError {}

const TOPIC_RULE: &str = "invalid topic: use 1 to 128 characters of A-Z a-z 0-9 _ - . : /";

/// Whether `name` is a valid topic name.
///
/// ```
/// assert!(tinysse::valid_topic("sensors/room-1.temp"));
/// assert!(!tinysse::valid_topic("a b"));
/// ```
pub fn valid_topic(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
}

/// A `Last-Event-ID` value as an id: decimal digits only (surrounding
/// spaces and tabs allowed), else `None` (the client gets live events
/// only). A number beyond `u64::MAX` is larger than any id ever issued, so
/// it saturates there: the subscriber then gets a `gap`, as for any id from
/// the future, instead of an overflow.
pub(crate) fn parse_last_event_id(value: &str) -> Option<u64> {
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// A set of topics shared by publishers and subscribers on any thread.
/// Cloning is cheap: clones share the same topics.
///
/// ```
/// use tinysse::{Event, Hub};
///
/// let hub = Hub::new();
/// let sub = hub.subscribe(&["news"], None)?;
/// let id = hub.publish("news", &Event::data("hello"))?;
/// let frame = sub.receiver().recv().unwrap();
/// assert_eq!(frame.id(), id);
/// assert_eq!(frame.bytes(), format!("id: {id}\ndata: hello\n\n").as_bytes());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    limits: HubLimits,
    /// Ids before this one may be missing from the history (from before
    /// this hub started, or missed by a cluster's follower); `u64::MAX`
    /// after a follower's gap, until the next event sets it.
    first_id: AtomicU64,
    next_id: AtomicU64,
    next_sub: AtomicU64,
    /// Held while an id is taken and handed to subscribers of more than one
    /// topic, so that their queues get ids in order across topics; publishes
    /// to a topic without such subscribers never take it.
    across_topics: Mutex<()>,
    /// Encoded bytes of every topic's history, changed under that topic's
    /// lock.
    held_bytes: AtomicUsize,
    /// Set while a thread evicts for `history_bytes`.
    shrinking: AtomicBool,
    /// One entry for each topic with history, none for the others. An
    /// entry is out of the heap only while `shrink` looks at its topic.
    oldest: Mutex<BinaryHeap<Oldest>>,
    topics: RwLock<HashMap<Box<str>, Arc<Topic>>>,
    metrics: Arc<Metrics>,
    /// Events older than this leave the history.
    history_age: Option<Duration>,
    clock: Clock,
    store: Option<Arc<dyn Store>>,
    /// With a cluster, ids come from it and events come in only through
    /// [`Hub::ingest`]; the history holds what was followed since start.
    cluster: Option<Arc<dyn Cluster>>,
    sequence: Mutex<Sequence>,
    /// Signalled whenever ids of `sequence` are delivered.
    delivered: Condvar,
    /// Per topic, the largest id that left it before this hub started (from
    /// the store): a topic made again starts from there.
    pruned_before: HashMap<String, u64>,
    /// The largest id that left any topic since forgotten: a topic made
    /// again starts from there, so a client that asks it for events it
    /// lost gets a `gap` (one number, not one per forgotten name, which
    /// clients could make grow without bound).
    forgotten_upto: AtomicU64,
}

/// A topic's oldest retained id, or less: the history's own `--history`
/// limit drops events without updating it. The heap's top is the oldest.
struct Oldest {
    id: u64,
    topic: Arc<Topic>,
}

impl PartialEq for Oldest {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Oldest {}

impl PartialOrd for Oldest {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Oldest {
    fn cmp(&self, other: &Self) -> Order {
        Reverse(self.id).cmp(&Reverse(other.id))
    }
}

struct Topic {
    name: Box<str>,
    state: Mutex<TopicState>,
}

#[derive(Default)]
struct TopicState {
    history: VecDeque<Frame>,
    /// The largest id that has left the history (0 when none has).
    dropped_upto: u64,
    subscribers: Vec<Subscriber>,
    /// How many of `subscribers` also listen to other topics.
    multi_topic: usize,
    /// No longer in the hub: look the name up again.
    removed: bool,
}

impl TopicState {
    fn unused(&self) -> bool {
        self.history.is_empty() && self.subscribers.is_empty()
    }

    /// Drops the oldest retained event.
    fn drop_oldest(&mut self) -> Option<Frame> {
        let f = self.history.pop_front()?;
        self.dropped_upto = self.dropped_upto.max(f.id());
        Some(f)
    }
}

struct Subscriber {
    key: u64,
    queue: Sender<Frame>,
    evicted: Arc<AtomicBool>,
    /// Subscribed to more than one topic (see `Inner::across_topics`).
    multi_topic: bool,
    /// Set for a subscriber served by the writer pool: it is woken through
    /// its pool thread, once per publish for all it serves.
    ready: Option<Arc<dyn Ready>>,
    /// Ids up to this one were replayed from a cluster: not delivered again.
    skip_upto: u64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.inner.limits)
            .field("first_id", &self.inner.first_id.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock(topic: &Topic) -> MutexGuard<'_, TopicState> {
    // A panic elsewhere must not take every later publish down with it: the
    // state is only ever changed in complete steps.
    topic.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn now_ms(&self) -> u64 {
        (self.clock)() / 1000
    }

    /// Drops the locked topic's events older than `history_age`.
    fn drop_aged(&self, st: &mut TopicState) {
        let Some(age) = self.history_age else { return };
        let cutoff = self
            .now_ms()
            .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        while st.history.front().is_some_and(|f| f.at_ms() < cutoff) {
            if let Some(f) = st.drop_oldest() {
                self.held_bytes.fetch_sub(f.bytes().len(), Ordering::SeqCst);
            }
        }
    }

    fn sequence(&self) -> MutexGuard<'_, Sequence> {
        self.sequence.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn oldest(&self) -> MutexGuard<'_, BinaryHeap<Oldest>> {
        self.oldest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, PublishError> {
        if !valid_topic(name) {
            return Err(PublishError::InvalidTopic);
        }
        if let Some(t) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(t.clone());
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        if topics.len() >= self.limits.max_topics {
            return Err(PublishError::TooManyTopics);
        }
        let t = Arc::new(Topic {
            name: name.into(),
            state: Mutex::new(TopicState {
                dropped_upto: self
                    .pruned_before
                    .get(name)
                    .copied()
                    .unwrap_or(0)
                    .max(self.forgotten_upto.load(Ordering::Acquire)),
                ..TopicState::default()
            }),
        });
        topics.insert(name.into(), t.clone());
        self.metrics
            .topics
            .store(topics.len() as u64, Ordering::Relaxed);
        Ok(t)
    }

    /// Removes `topic` from the hub if it has neither history nor
    /// subscribers. Lock order: the topic map, then a topic; nobody takes
    /// the map while holding a topic.
    fn forget(&self, topic: &Arc<Topic>) {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let mut st = lock(topic);
        if st.removed || !st.unused() {
            return;
        }
        st.removed = true;
        self.forgotten_upto
            .fetch_max(st.dropped_upto, Ordering::AcqRel);
        drop(st);
        if topics
            .get(&topic.name)
            .is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            topics.remove(&topic.name);
        }
        self.metrics
            .topics
            .store(topics.len() as u64, Ordering::Relaxed);
    }

    /// Evicts the oldest retained events, across topics, until the history
    /// fits in `history_bytes`. Called with no lock held, by a publisher
    /// that took the history over the limit. One thread evicts at a time, so
    /// no more is evicted than needed; a publisher that finds another one
    /// at it leaves its bytes to that one, which looks again once done.
    fn shrink(&self) {
        let limit = self.limits.history_bytes;
        while self.held_bytes.load(Ordering::SeqCst) > limit {
            if self.shrinking.swap(true, Ordering::SeqCst) {
                return;
            }
            let _done = Shrinking(&self.shrinking);
            while self.held_bytes.load(Ordering::SeqCst) > limit && self.evict_oldest() {}
        }
    }

    /// Evicts the oldest retained event of all topics; `false` when no
    /// topic holds any. Only while `shrinking` is set.
    fn evict_oldest(&self) -> bool {
        // Ends: each round either evicts, or moves an entry up to its
        // topic's true oldest id, which only publishes move on.
        loop {
            let Some(entry) = self.oldest().pop() else {
                return false;
            };
            // The lock order is a topic, then the heap: not both at once here.
            let mut st = lock(&entry.topic);
            let Some(front) = st.history.front().map(Frame::id) else {
                // Cannot happen (only this thread empties a history); an
                // empty topic needs no entry anyway.
                continue;
            };
            if front > entry.id {
                // Events left by the per-topic limit: this topic may not hold
                // the oldest after all.
                self.oldest().push(Oldest {
                    id: front,
                    topic: entry.topic.clone(),
                });
                continue;
            }
            if let Some(f) = st.drop_oldest() {
                self.held_bytes.fetch_sub(f.bytes().len(), Ordering::SeqCst);
            }
            if let Some(next) = st.history.front() {
                self.oldest().push(Oldest {
                    id: next.id(),
                    topic: entry.topic.clone(),
                });
            }
            let unused = st.unused();
            drop(st);
            if unused {
                self.forget(&entry.topic);
            }
            return true;
        }
    }
}

/// Clears `Inner::shrinking`, even if evicting panicked: a stuck flag would
/// let the history grow without bound.
struct Shrinking<'a>(&'a AtomicBool);

impl Drop for Shrinking<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Hub {
    /// A standalone hub with the default limits (see
    /// [`defaults`](crate::defaults)); a server makes its own, with the
    /// builder's limits ([`ServerHandle::hub`](crate::ServerHandle::hub)).
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// assert_eq!(hub.topic_count(), 0);
    /// ```
    pub fn new() -> Hub {
        Hub::with_metrics(HubLimits::default(), Arc::new(Metrics::new()))
    }

    /// A hub with the given limits (each at least 1).
    #[cfg(test)]
    pub(crate) fn with_limits(limits: HubLimits) -> Hub {
        Hub::with_metrics(limits, Arc::new(Metrics::new()))
    }

    pub(crate) fn with_metrics(limits: HubLimits, metrics: Arc<Metrics>) -> Hub {
        Hub::start(limits, metrics, None, None, Arc::new(system_clock_us))
            .expect("a hub without a store always starts")
    }

    /// A hub with its limits, its age limit, a store (whose retained events
    /// it loads) and the clock it reads; the error is the store's reason.
    pub(crate) fn start(
        limits: HubLimits,
        metrics: Arc<Metrics>,
        history_age: Option<Duration>,
        store: Option<Arc<dyn Store>>,
        clock: Clock,
    ) -> Result<Hub, String> {
        // Seeding from the clock keeps ids growing across restarts, so a
        // client's Last-Event-ID from an earlier run is never mistaken for a
        // newer event; a store's highest id keeps them growing when the
        // clock is behind the last run's (a host without a real-time clock
        // boots with a stale one).
        let now_us = clock();
        let loaded = match &store {
            Some(store) => store.load(now_us)?,
            None => Loaded::default(),
        };
        let seed = now_us.max(loaded.highest_id.saturating_add(1));
        let first_id = if store.is_some() {
            loaded.first_id.min(seed)
        } else {
            seed
        };
        let hub = Hub::assemble(limits, metrics, history_age, clock, seed, first_id);
        let hub = Hub {
            inner: Arc::new(Inner {
                store,
                pruned_before: loaded.pruned,
                ..Arc::into_inner(hub.inner).expect("not shared yet")
            }),
        };
        for (id, topic, at_ms, payload) in loaded.events {
            let mut bytes = vec![0u8; ID_ROOM];
            bytes.extend_from_slice(&payload);
            if let Err(e) = hub.ingest(&topic, id, at_ms, bytes.into()) {
                log::warn!("store: event {id} of topic {topic} not loaded: {e}");
            }
        }
        Ok(hub)
    }

    /// A hub sharing its ids and history through `cluster`, whose follower
    /// has delivered up to `followed` (the next event it ingests is later):
    /// it holds what is followed from then on, and asks the cluster to
    /// replay what it does not hold.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn start_cluster(
        limits: HubLimits,
        metrics: Arc<Metrics>,
        history_age: Option<Duration>,
        cluster: Arc<dyn Cluster>,
        followed: u64,
    ) -> Hub {
        let next = followed.saturating_add(1);
        // A cluster that has issued nothing yet: the first event followed
        // is where this hub's history starts (an id from before it belongs
        // to an emptied data set).
        let first = if followed == 0 { u64::MAX } else { next };
        let hub = Hub::assemble(
            limits,
            metrics,
            history_age,
            Arc::new(system_clock_us),
            next,
            first,
        );
        Hub {
            inner: Arc::new(Inner {
                cluster: Some(cluster),
                ..Arc::into_inner(hub.inner).expect("not shared yet")
            }),
        }
    }

    fn assemble(
        limits: HubLimits,
        metrics: Arc<Metrics>,
        history_age: Option<Duration>,
        clock: Clock,
        next_id: u64,
        first_id: u64,
    ) -> Hub {
        let limits = HubLimits {
            history: limits.history.max(1),
            queue: limits.queue.max(1),
            max_topics: limits.max_topics.max(1),
            history_bytes: limits.history_bytes.max(1),
        };
        Hub {
            inner: Arc::new(Inner {
                limits,
                first_id: AtomicU64::new(first_id),
                next_id: AtomicU64::new(next_id),
                next_sub: AtomicU64::new(0),
                across_topics: Mutex::new(()),
                held_bytes: AtomicUsize::new(0),
                shrinking: AtomicBool::new(false),
                oldest: Mutex::new(BinaryHeap::new()),
                topics: RwLock::new(HashMap::new()),
                metrics,
                history_age,
                clock,
                store: None,
                cluster: None,
                sequence: Mutex::new(Sequence::default()),
                delivered: Condvar::new(),
                pruned_before: HashMap::new(),
                forgotten_upto: AtomicU64::new(0),
            }),
        }
    }

    /// Takes in an event whose id was given elsewhere (loaded from the
    /// store, or published on another instance): kept and delivered like a
    /// local publish, not appended again. `bytes` holds the encoded event
    /// after [`ID_ROOM`] bytes of room for its id line.
    pub(crate) fn ingest(
        &self,
        topic: &str,
        id: u64,
        at_ms: u64,
        bytes: Arc<[u8]>,
    ) -> Result<u64, PublishError> {
        let inner = &*self.inner;
        let held = self.insert(topic, Some(id), at_ms, bytes);
        if inner.cluster.is_some() {
            if held.is_err() {
                // Not held (one topic too many): a topic made later must not
                // replay as if it had never had this event.
                inner.forgotten_upto.fetch_max(id, Ordering::AcqRel);
            }
            // Only once delivered: a subscriber asking from `id` before then
            // is sent to the cluster (an id this hub has not seen), never
            // given `id` live again.
            inner
                .next_id
                .fetch_max(id.saturating_add(1), Ordering::AcqRel);
            let _ =
                inner
                    .first_id
                    .compare_exchange(u64::MAX, id, Ordering::AcqRel, Ordering::Acquire);
        }
        held
    }

    /// A cluster's follower may have missed events (they left the shared
    /// history before it read them, or the cluster lost them): until the
    /// next one comes in, every replay asks the cluster, and every open
    /// subscription ends, so that its client reconnects with its
    /// `Last-Event-ID` and is replayed what it missed, or told with a `gap`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn lost_track(&self) {
        let inner = &*self.inner;
        inner.first_id.store(u64::MAX, Ordering::Release);
        let topics: Vec<Arc<Topic>> = inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut wake: Vec<Arc<dyn Wake>> = Vec::new();
        for t in topics {
            let st = lock(&t);
            for s in &st.subscribers {
                if !s.evicted.swap(true, Ordering::AcqRel)
                    && let Some(w) = s.ready.as_ref().and_then(|r| r.queued())
                    && !wake.iter().any(|x| Arc::ptr_eq(x, w))
                {
                    wake.push(w.clone());
                }
            }
        }
        for w in wake {
            w.wake();
        }
    }

    /// The reason the store or the cluster cannot take events now, if it
    /// cannot.
    pub(crate) fn store_health(&self) -> Result<(), String> {
        match (&self.inner.store, &self.inner.cluster) {
            (Some(s), _) => s.health(),
            (None, Some(c)) => c.health(),
            (None, None) => Ok(()),
        }
    }

    /// Drops what `history_age` no longer allows, in memory and in the
    /// store; forgets topics left with neither history nor subscribers.
    pub(crate) fn prune_aged(&self) {
        let inner = &*self.inner;
        if inner.history_age.is_none() {
            return;
        }
        let topics: Vec<Arc<Topic>> = inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for t in topics {
            let mut st = lock(&t);
            inner.drop_aged(&mut st);
            let unused = st.unused();
            drop(st);
            if unused {
                inner.forget(&t);
            }
        }
        if let Some(store) = &inner.store
            && let Err(e) = store.prune_by_age()
        {
            log::warn!("store: pruning by age: {e}");
        }
    }

    /// The counters this hub updates (a server's hub shares the server's).
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// hub.publish("t", &tinysse::Event::data("x"))?;
    /// assert_eq!(hub.metrics().events_published(), 1);
    /// # Ok::<(), tinysse::PublishError>(())
    /// ```
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &HubLimits {
        &self.inner.limits
    }

    /// The number of topics held: those with retained events or subscribers.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let sub = hub.subscribe(&["a", "b"], None)?;
    /// assert_eq!(hub.topic_count(), 2);
    /// drop(sub); // nothing retained, nobody subscribed: both are forgotten
    /// assert_eq!(hub.topic_count(), 0);
    /// # Ok::<(), tinysse::SubscribeError>(())
    /// ```
    pub fn topic_count(&self) -> usize {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The bytes of retained events, all topics together (see
    /// [`ServerBuilder::history_bytes`](crate::ServerBuilder::history_bytes)).
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let id = hub.publish("t", &tinysse::Event::data("hi"))?;
    /// assert_eq!(hub.history_bytes(), format!("id: {id}\ndata: hi\n\n").len());
    /// # Ok::<(), tinysse::PublishError>(())
    /// ```
    pub fn history_bytes(&self) -> usize {
        self.inner.held_bytes.load(Ordering::SeqCst)
    }

    /// Publishes `event` on `topic` and returns the id it was given (any id
    /// already on the event is replaced). Never blocks on subscribers.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let a = hub.publish("t", &tinysse::Event::data("1"))?;
    /// let b = hub.publish("u", &tinysse::Event::data("2"))?;
    /// assert!(b > a);
    /// # Ok::<(), tinysse::PublishError>(())
    /// ```
    pub fn publish(&self, topic: &str, event: &Event) -> Result<u64, PublishError> {
        // Encode once, outside the lock, with room for the id line.
        let mut bytes = vec![0u8; ID_ROOM];
        event.encode_fields(&mut bytes, false);
        let bytes: Arc<[u8]> = bytes.into();
        let inner = &*self.inner;
        let at_ms = if inner.history_age.is_some() || inner.store.is_some() {
            inner.now_ms()
        } else {
            0
        };
        match (&inner.store, &inner.cluster) {
            (Some(store), _) => self.publish_stored(&**store, topic, at_ms, bytes),
            (None, Some(cluster)) => {
                // Refused here, as without a cluster, before anything is
                // published.
                let t = inner.topic(topic)?;
                // Delivered here only as the follower brings it back, in
                // the cluster's one order.
                let published = cluster.publish(topic, &bytes[ID_ROOM..]);
                if published.is_err() {
                    // A name made for nothing must not count towards
                    // `max_topics` while Redis is away.
                    inner.forget(&t);
                }
                published.map_err(PublishError::Unavailable)
            }
            (None, None) => self.insert(topic, None, at_ms, bytes),
        }
    }

    /// With a store: the id is taken in one sequence, the event appended
    /// (concurrent publishers share a commit), and only then delivered, in
    /// id order: whoever finds the next ids stored delivers them, and each
    /// publisher returns once its own event is in the history.
    fn publish_stored(
        &self,
        store: &dyn Store,
        topic: &str,
        at_ms: u64,
        bytes: Arc<[u8]>,
    ) -> Result<u64, PublishError> {
        let inner = &*self.inner;
        // An invalid or one-too-many topic is refused before anything is
        // stored.
        let made = inner.topic(topic)?;
        let id = {
            let mut seq = inner.sequence();
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            seq.pending.push_back(id);
            id
        };
        let stored = store.append(topic, id, at_ms, &bytes[ID_ROOM..]);
        let mut seq = inner.sequence();
        let entry = stored
            .as_ref()
            .ok()
            .map(|()| (topic.to_string(), at_ms, bytes));
        seq.done.insert(id, entry);
        while let Some(&next) = seq.pending.front() {
            let Some(entry) = seq.done.remove(&next) else {
                break;
            };
            seq.pending.pop_front();
            if let Some((t, at, b)) = entry
                && let Err(e) = self.insert(&t, Some(next), at, b)
            {
                seq.refused.insert(next, e);
            }
        }
        inner.delivered.notify_all();
        while seq.pending.front().is_some_and(|&p| p <= id) {
            seq = inner.delivered.wait(seq).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(e) = seq.refused.remove(&id) {
            return Err(e);
        }
        drop(seq);
        if stored.is_err() {
            // Not held for nothing: see the cluster's case in `publish`.
            inner.forget(&made);
        }
        stored.map(|()| id).map_err(PublishError::Unavailable)
    }

    /// Keeps and delivers one event: with `id`, that id (given by the
    /// sequence, the store or another instance); without, the next one,
    /// taken under the topic's lock so that ids and deliveries of a topic
    /// are in one order.
    fn insert(
        &self,
        topic: &str,
        id: Option<u64>,
        at_ms: u64,
        bytes: Arc<[u8]>,
    ) -> Result<u64, PublishError> {
        let inner = &*self.inner;
        // Ends: a topic is removed only once it is unused, and each round
        // here follows such a removal by someone else.
        loop {
            let topic = inner.topic(topic)?;
            let mut st = lock(&topic);
            if st.removed {
                continue;
            }
            // Per topic, its lock orders ids and deliveries. A subscriber to
            // several topics also needs publishers to different topics kept in
            // step, or it could get id 7 after id 8 and, reconnecting from 8,
            // never see 7. Lock order: a topic, then this; never the reverse.
            let in_step = (st.multi_topic > 0).then(|| {
                inner
                    .across_topics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
            let id = id.unwrap_or_else(|| inner.next_id.fetch_add(1, Ordering::Relaxed));
            let frame = Frame::with_reserved_id(bytes, id).at(at_ms);
            let size = frame.bytes().len();
            inner.drop_aged(&mut st);
            if st.history.is_empty() {
                inner.oldest().push(Oldest {
                    id,
                    topic: topic.clone(),
                });
            } else if st.history.len() >= inner.limits.history
                && let Some(old) = st.drop_oldest()
            {
                inner
                    .held_bytes
                    .fetch_sub(old.bytes().len(), Ordering::SeqCst);
            }
            let held = inner.held_bytes.fetch_add(size, Ordering::SeqCst) + size;
            st.history.push_back(frame.clone());
            let wake = deliver(inner, &mut st, &frame);
            drop(in_step);
            drop(st);

            // After the lock: a wake-up is a syscall, and the pool thread would
            // only contend for the lock it is still held in.
            for w in wake {
                w.wake();
            }
            if held > inner.limits.history_bytes {
                inner.shrink();
            }
            inner
                .metrics
                .events_published
                .fetch_add(1, Ordering::Relaxed);
            return Ok(id);
        }
    }

    /// Subscribes to `topics` (created if new; at most 64, repeats
    /// counted). With `last_event_id`, the subscription starts with the
    /// retained events after that id (and a `gap` event first when some can
    /// no longer be replayed, or the id is larger than any this hub
    /// issued); live events follow with no gap and no duplicate.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let first = hub.publish("t", &tinysse::Event::data("1"))?;
    /// let second = hub.publish("t", &tinysse::Event::data("2"))?;
    /// let sub = hub.subscribe(&["t"], Some(first))?;
    /// assert_eq!(sub.replay().len(), 1);
    /// assert_eq!(sub.replay()[0].id(), second);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe<S: AsRef<str>>(
        &self,
        topics: &[S],
        last_event_id: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(topics, last_event_id, None)
    }

    /// Like [`subscribe`](Self::subscribe), for a subscriber whose owner
    /// learns through `ready` that it has something to do.
    pub(crate) fn subscribe_with<S: AsRef<str>>(
        &self,
        topics: &[S],
        last_event_id: Option<u64>,
        ready: Option<Arc<dyn Ready>>,
    ) -> Result<Subscription, SubscribeError> {
        if topics.is_empty() {
            return Err(SubscribeError::NoTopic);
        }
        if topics.len() > MAX_SUBSCRIPTION_TOPICS {
            return Err(SubscribeError::TopicListTooLong);
        }
        let mut names: Vec<&str> = topics.iter().map(|t| t.as_ref()).collect();
        if !names.iter().all(|n| valid_topic(n)) {
            return Err(SubscribeError::InvalidTopic);
        }
        names.sort_unstable();
        names.dedup();
        let inner = &*self.inner;
        let mut handles: Vec<Arc<Topic>> = Vec::with_capacity(names.len());
        for name in &names {
            match inner.topic(name) {
                Ok(t) => handles.push(t),
                Err(e) => {
                    // Topics this call created must not outlive it unused.
                    for t in &handles {
                        inner.forget(t);
                    }
                    return Err(match e {
                        PublishError::InvalidTopic => SubscribeError::InvalidTopic,
                        // `topic()` only refuses a name or a new topic.
                        _ => SubscribeError::TooManyTopics,
                    });
                }
            }
        }
        let (tx, rx) = unbounded();
        let evicted = Arc::new(AtomicBool::new(false));
        let key = inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let multi_topic = handles.len() > 1;
        // Every topic locked at once (in name order, so two subscribers never
        // wait on each other): no publish to any of them can fall between
        // the replay snapshot of one and the registration in another. A
        // topic removed meanwhile is looked up again (see `publish` for why
        // this ends).
        let mut states = loop {
            let states: Vec<_> = handles.iter().map(|t| lock(t)).collect();
            let gone: Vec<usize> = (0..states.len()).filter(|&i| states[i].removed).collect();
            if gone.is_empty() {
                break states;
            }
            drop(states);
            for i in gone {
                match inner.topic(names[i]) {
                    Ok(t) => handles[i] = t,
                    Err(e) => {
                        for t in &handles {
                            inner.forget(t);
                        }
                        return Err(match e {
                            PublishError::InvalidTopic => SubscribeError::InvalidTopic,
                            _ => SubscribeError::TooManyTopics,
                        });
                    }
                }
            }
        };
        for st in &mut states {
            inner.drop_aged(st);
        }
        let (prelude, gap) = match last_event_id {
            Some(last) => replay(inner, &states, last),
            None => (Vec::new(), false),
        };
        for st in &mut states {
            st.subscribers.push(Subscriber {
                key,
                queue: tx.clone(),
                evicted: evicted.clone(),
                multi_topic,
                ready: ready.clone(),
                skip_upto: 0,
            });
            st.multi_topic += usize::from(multi_topic);
        }
        drop(states);
        let mut sub = Subscription {
            hub: self.inner.clone(),
            topics: handles,
            key,
            gap,
            prelude,
            queue: rx,
            evicted,
        };
        if gap && let (Some(cluster), Some(last)) = (&inner.cluster, last_event_id) {
            catch_up(&**cluster, &mut sub, &names, last, &tx);
        }
        Ok(sub)
    }
}

/// Replays from the cluster what the hub does not hold, for a subscription
/// registered already: the live frames it was given that the replay also
/// holds (ids up to the snapshot's `upto`) are taken out, and no more are
/// given. When the cluster cannot replay, the hub's own replay stays, with
/// its `gap` event.
fn catch_up(
    cluster: &dyn Cluster,
    sub: &mut Subscription,
    names: &[&str],
    last: u64,
    tx: &Sender<Frame>,
) {
    let replayed = match cluster.replay(names, last) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("replay after {last}: {e}; replaying what this instance holds");
            return;
        }
    };
    let upto = replayed.upto;
    // Every topic locked (in name order, as when subscribing): nothing is
    // delivered while the queue is sifted.
    let mut states: Vec<_> = sub.topics.iter().map(|t| lock(t)).collect();
    for st in &mut states {
        for s in st.subscribers.iter_mut().filter(|s| s.key == sub.key) {
            s.skip_upto = upto;
        }
    }
    let queued: Vec<Frame> = sub.queue.try_iter().collect();
    for f in queued.into_iter().filter(|f| f.id() > upto) {
        // The receiver is `sub`'s own: it is there.
        let _ = tx.send(f);
    }
    drop(states);
    let mut prelude = Vec::with_capacity(usize::from(replayed.gap) + replayed.events.len());
    if replayed.gap {
        prelude.push(gap_frame(last, replayed.events.first().map(|e| e.0)));
    }
    for (id, _, payload) in replayed.events {
        let mut bytes = vec![0u8; ID_ROOM];
        bytes.extend_from_slice(&payload);
        prelude.push(Frame::with_reserved_id(bytes.into(), id));
    }
    sub.gap = replayed.gap;
    sub.prelude = prelude;
}

/// Hands `frame` to every subscriber of the locked topic `st`, drops those
/// gone or evicted, and returns the owning threads to wake, each once.
fn deliver(inner: &Inner, st: &mut TopicState, frame: &Frame) -> Vec<Arc<dyn Wake>> {
    let metrics = &inner.metrics;
    let queue_limit = inner.limits.queue;
    let mut wake: Vec<Arc<dyn Wake>> = Vec::new();
    // A subscriber its owner already has listed costs no wake-up: when
    // its socket is full, publishing must not keep waking the thread
    // for nothing.
    let mut listed = |r: &Arc<dyn Ready>| {
        if let Some(w) = r.queued()
            && !wake.iter().any(|x| Arc::ptr_eq(x, w))
        {
            wake.push(w.clone());
        }
    };
    let mut deliver = |s: &Subscriber| -> bool {
        if s.evicted.load(Ordering::Relaxed) {
            return false;
        }
        // The queue is bounded here rather than by the channel: a bounded
        // crossbeam channel allocates every slot up front (10 KiB for 256
        // frames), which idle subscribers would pay for nothing. Only
        // publishers holding this topic's lock add to it, so the check
        // cannot be raced past except by a subscriber's other topics.
        if s.queue.len() >= queue_limit {
            if !s.evicted.swap(true, Ordering::AcqRel) {
                metrics.subscribers_evicted.fetch_add(1, Ordering::Relaxed);
            }
            // Its owner ends the stream.
            if let Some(r) = &s.ready {
                listed(r);
            }
            return false;
        }
        // Unbounded: an error only means the subscriber has gone.
        let sent = s.queue.try_send(frame.clone()).is_ok();
        if sent && let Some(r) = &s.ready {
            listed(r);
        }
        sent
    };
    // Only a cluster's subscribers can have ids to skip; without a cluster
    // the loop stays as it was (the check in it measured at +0.05 to
    // +0.09 ms on a publish to 1,000 subscribers, docs/benchmarks.md).
    let skip = inner.cluster.is_some().then(|| frame.id());
    let mut gone_multi = 0;
    st.subscribers.retain(|s| {
        if skip.is_some_and(|id| id <= s.skip_upto) {
            return true;
        }
        let keep = deliver(s);
        if !keep && s.multi_topic {
            gone_multi += 1;
        }
        keep
    });
    st.multi_topic -= gone_multi;
    wake
}

/// The gap event (when one is due) and the retained events after `last` of
/// the locked topics, in id order: one vector, built once, whose frames
/// share their bytes with the history.
fn replay(inner: &Inner, states: &[MutexGuard<'_, TopicState>], last: u64) -> (Vec<Frame>, bool) {
    // Events after `last` exist that we no longer hold: those that left
    // history, any from before this hub started, or, for an id larger than
    // any issued (a clock that went back, another server), whatever it
    // stands for.
    let from_before = last.saturating_add(1) < inner.first_id.load(Ordering::Acquire);
    let from_future = last >= inner.next_id.load(Ordering::Relaxed);
    let mut gap = from_before || from_future;
    let mut runs = Vec::with_capacity(states.len());
    let mut count = 0;
    for st in states {
        gap |= st.dropped_upto > last;
        let start = st.history.partition_point(|f| f.id() <= last);
        count += st.history.len() - start;
        let mut run = st.history.range(start..).peekable();
        if run.peek().is_some() {
            runs.push(run);
        }
    }
    let mut out = Vec::with_capacity(usize::from(gap) + count);
    if gap {
        // Its oldest id is known once the rest is in place.
        out.push(Frame::new(0, Vec::new()));
    }
    if let [run] = &mut runs[..] {
        out.extend(run.cloned());
    } else {
        // Each topic's history is in id order already: merge them.
        let mut heads: BinaryHeap<Reverse<(u64, usize)>> = runs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, r)| r.peek().map(|f| Reverse((f.id(), i))))
            .collect();
        while let Some(Reverse((_, i))) = heads.pop() {
            if let Some(f) = runs[i].next() {
                out.push(f.clone());
            }
            if let Some(f) = runs[i].peek() {
                heads.push(Reverse((f.id(), i)));
            }
        }
    }
    if gap {
        out[0] = gap_frame(last, out.get(1).map(|f| f.id()));
    }
    (out, gap)
}

fn gap_frame(asked: u64, oldest: Option<u64>) -> Frame {
    let oldest = oldest.map_or("null".to_string(), |id| format!("\"{id}\""));
    let text =
        format!("event: gap\ndata: {{\"lastEventId\":\"{asked}\",\"oldestId\":{oldest}}}\n\n");
    Frame::new(0, text.into_bytes())
}

/// A live subscription: a replay to send first, then a queue of frames.
/// Dropping it unregisters it from its topics.
pub struct Subscription {
    hub: Arc<Inner>,
    topics: Vec<Arc<Topic>>,
    key: u64,
    /// `prelude` starts with a gap event.
    gap: bool,
    /// The gap event, if any, then the replay.
    prelude: Vec<Frame>,
    queue: Receiver<Frame>,
    evicted: Arc<AtomicBool>,
}

impl Subscription {
    /// The `gap` event to send before the replay, when some events after the
    /// asked id can no longer be replayed.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let id = hub.publish("t", &tinysse::Event::data("x"))?;
    /// // An id from before this hub started: what came after it is unknown.
    /// let sub = hub.subscribe(&["t"], Some(1))?;
    /// let gap = sub.gap().expect("a gap event");
    /// assert!(gap.bytes().starts_with(b"event: gap\n"));
    /// assert_eq!(sub.replay()[0].id(), id);
    /// assert!(hub.subscribe(&["t"], Some(id))?.gap().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn gap(&self) -> Option<&Frame> {
        self.prelude.first().filter(|_| self.gap)
    }

    /// The retained events after the asked id, oldest first.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let a = hub.publish("t", &tinysse::Event::data("a"))?;
    /// let b = hub.publish("t", &tinysse::Event::data("b"))?;
    /// let c = hub.publish("t", &tinysse::Event::data("c"))?;
    /// let sub = hub.subscribe(&["t"], Some(a))?;
    /// let ids: Vec<u64> = sub.replay().iter().map(|f| f.id()).collect();
    /// assert_eq!(ids, [b, c]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay(&self) -> &[Frame] {
        &self.prelude[usize::from(self.gap)..]
    }

    /// The gap event (if any) followed by the replay: everything to write
    /// before live frames. The frames share their bytes with the history.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// hub.publish("t", &tinysse::Event::data("a"))?;
    /// let sub = hub.subscribe(&["t"], Some(1))?;
    /// assert_eq!(sub.prelude().len(), 2); // the gap event, then "a"
    /// assert_eq!(sub.prelude()[1..], *sub.replay());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prelude(&self) -> &[Frame] {
        &self.prelude
    }

    /// Takes the prelude out, for a writer that consumes it frame by frame
    /// and frees it once written.
    pub(crate) fn take_prelude(&mut self) -> Vec<Frame> {
        self.gap = false;
        std::mem::take(&mut self.prelude)
    }

    /// The queue of live frames, each published after the subscription
    /// began; once the subscriber is evicted, nothing more is added.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let sub = hub.subscribe(&["t"], None)?;
    /// hub.publish("t", &tinysse::Event::data("live"))?;
    /// let frame = sub.receiver().recv_timeout(std::time::Duration::from_secs(1))?;
    /// assert!(frame.bytes().ends_with(b"data: live\n\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver(&self) -> &Receiver<Frame> {
        &self.queue
    }

    /// Whether the hub dropped this subscriber for falling behind (its queue
    /// held [`defaults::QUEUE`](crate::defaults::QUEUE), or the server's
    /// `queue`, frames).
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let sub = hub.subscribe(&["t"], None)?;
    /// for _ in 0..=tinysse::defaults::QUEUE {
    ///     hub.publish("t", &tinysse::Event::data("x"))?; // never blocks
    /// }
    /// assert!(sub.is_evicted());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for t in &self.topics {
            let mut st = lock(t);
            let mut gone_multi = 0;
            st.subscribers.retain(|s| {
                let mine = s.key == self.key;
                gone_multi += usize::from(mine && s.multi_topic);
                !mine
            });
            st.multi_topic -= gone_multi;
            let unused = st.unused();
            drop(st);
            if unused {
                self.hub.forget(t);
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("replay", &self.replay().len())
            .field("gap", &self.gap)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(history: usize, queue: usize) -> HubLimits {
        HubLimits {
            history,
            queue,
            max_topics: 100,
            ..HubLimits::default()
        }
    }

    #[test]
    fn history_rolls_over_and_reports_a_gap() {
        let hub = Hub::with_limits(limits(3, 8));
        let ids: Vec<u64> = (0..5)
            .map(|i| hub.publish("t", &Event::data(i.to_string())).unwrap())
            .collect();
        let sub = hub.subscribe(&["t"], Some(ids[0])).unwrap();
        let replayed: Vec<u64> = sub.replay().iter().map(|f| f.id()).collect();
        assert_eq!(replayed, ids[2..]);
        let gap = String::from_utf8(sub.gap().unwrap().bytes().to_vec()).unwrap();
        assert_eq!(
            gap,
            format!(
                "event: gap\ndata: {{\"lastEventId\":\"{}\",\"oldestId\":\"{}\"}}\n\n",
                ids[0], ids[2]
            )
        );
        // Asking from inside the retained window: no gap.
        let sub = hub.subscribe(&["t"], Some(ids[2])).unwrap();
        assert!(sub.gap().is_none());
        assert_eq!(sub.replay().len(), 2);
    }

    #[test]
    fn an_id_from_before_start_is_a_gap_with_null_oldest() {
        let hub = Hub::new();
        let sub = hub.subscribe(&["t"], Some(5)).unwrap();
        let gap = String::from_utf8(sub.gap().unwrap().bytes().to_vec()).unwrap();
        assert!(gap.ends_with("\"oldestId\":null}\n\n"), "{gap}");
    }

    #[test]
    fn a_full_queue_evicts_only_that_subscriber() {
        let hub = Hub::with_limits(limits(16, 2));
        let slow = hub.subscribe(&["t"], None).unwrap();
        let fast = hub.subscribe(&["t"], None).unwrap();
        for i in 0..5 {
            hub.publish("t", &Event::data(i.to_string())).unwrap();
            assert!(fast.receiver().try_recv().is_ok());
        }
        assert!(slow.is_evicted());
        assert!(!fast.is_evicted());
        assert_eq!(hub.metrics().subscribers_evicted(), 1);
    }

    #[test]
    fn dropping_a_subscription_unregisters_it() {
        let hub = Hub::new();
        let sub = hub.subscribe(&["a", "b"], None).unwrap();
        let held: Vec<_> = ["a", "b"].map(|name| hub.inner.topic(name).unwrap()).into();
        drop(sub);
        for t in held {
            assert!(lock(&t).subscribers.is_empty());
            assert_eq!(lock(&t).multi_topic, 0);
            // Unused now: forgotten.
            assert!(lock(&t).removed);
        }
        assert_eq!(hub.topic_count(), 0);
    }

    #[test]
    fn multi_topic_replay_is_in_id_order() {
        let hub = Hub::new();
        let start = hub.publish("a", &Event::data("0")).unwrap();
        let mut expect = Vec::new();
        for i in 0..6 {
            let t = if i % 2 == 0 { "a" } else { "b" };
            expect.push(hub.publish(t, &Event::data("x")).unwrap());
        }
        let sub = hub.subscribe(&["b", "a", "a"], Some(start)).unwrap();
        let got: Vec<u64> = sub.replay().iter().map(|f| f.id()).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn topic_names_are_checked() {
        let hub = Hub::new();
        assert_eq!(
            hub.publish("", &Event::data("x")),
            Err(PublishError::InvalidTopic)
        );
        assert_eq!(
            hub.publish(&"a".repeat(129), &Event::data("x")),
            Err(PublishError::InvalidTopic)
        );
        assert!(hub.publish(&"a".repeat(128), &Event::data("x")).is_ok());
        assert_eq!(
            hub.subscribe::<&str>(&[], None).unwrap_err(),
            SubscribeError::NoTopic
        );
    }
}

#[cfg(test)]
mod ordering_tests {
    use super::*;

    /// Publishers racing on two topics: a subscriber to both must still get
    /// strictly increasing ids, or a reconnect with the larger id would skip
    /// the smaller one for good.
    #[test]
    fn a_multi_topic_subscriber_gets_ids_in_order() {
        let hub = Hub::with_limits(HubLimits {
            history: 100_000,
            queue: 1_000_000,
            max_topics: 10,
            ..HubLimits::default()
        });
        for round in 0..20 {
            let sub = hub.subscribe(&["a", "b"], None).unwrap();
            let publishers: Vec<_> = ["a", "b", "a", "b"]
                .into_iter()
                .map(|t| {
                    let hub = hub.clone();
                    std::thread::spawn(move || {
                        for _ in 0..2_000 {
                            hub.publish(t, &Event::data("x")).unwrap();
                        }
                    })
                })
                .collect();
            for p in publishers {
                p.join().unwrap();
            }
            let ids: Vec<u64> = sub.receiver().try_iter().map(|f| f.id()).collect();
            assert_eq!(ids.len(), 8_000, "round {round}");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "round {round}: ids out of order"
            );
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use std::collections::HashSet;
    use std::sync::Barrier;

    use super::*;

    fn ids(frames: &[Frame]) -> Vec<u64> {
        frames.iter().map(|f| f.id()).collect()
    }

    fn text(f: &Frame) -> String {
        String::from_utf8(f.bytes().to_vec()).unwrap()
    }

    #[test]
    fn an_unused_topic_is_forgotten() {
        let hub = Hub::with_limits(HubLimits {
            max_topics: 2,
            ..HubLimits::default()
        });
        let sub = hub.subscribe(&["a", "b"], None).unwrap();
        assert_eq!(hub.topic_count(), 2);
        assert_eq!(hub.metrics().topics(), 2);
        drop(sub);
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(hub.metrics().topics(), 0);
        // Waves of subscribers to new topics never use up max_topics.
        for i in 0..100 {
            let sub = hub
                .subscribe(&[format!("x{i}"), format!("y{i}")], None)
                .unwrap();
            drop(sub);
        }
        assert_eq!(hub.topic_count(), 0);
        // A topic with history is kept after its last subscriber leaves.
        let sub = hub.subscribe(&["kept"], None).unwrap();
        let id = hub.publish("kept", &Event::data("x")).unwrap();
        drop(sub);
        assert_eq!(hub.topic_count(), 1);
        let again = hub.subscribe(&["kept"], Some(id - 1)).unwrap();
        assert_eq!(ids(again.replay()), [id]);
    }

    #[test]
    fn a_refused_subscription_leaves_no_topic_behind() {
        let hub = Hub::with_limits(HubLimits {
            max_topics: 2,
            ..HubLimits::default()
        });
        hub.publish("held", &Event::data("x")).unwrap();
        assert_eq!(
            hub.subscribe(&["a", "b", "c"], None).unwrap_err(),
            SubscribeError::TooManyTopics
        );
        assert_eq!(hub.topic_count(), 1);
        let many: Vec<String> = (0..=MAX_SUBSCRIPTION_TOPICS)
            .map(|i| format!("t{i}"))
            .collect();
        let hub = Hub::new();
        assert_eq!(
            hub.subscribe(&many, None).unwrap_err(),
            SubscribeError::TopicListTooLong
        );
        assert_eq!(
            hub.subscribe(&vec!["same"; MAX_SUBSCRIPTION_TOPICS + 1], None)
                .unwrap_err(),
            SubscribeError::TopicListTooLong
        );
        assert_eq!(hub.topic_count(), 0);
        assert!(
            hub.subscribe(&many[..MAX_SUBSCRIPTION_TOPICS], None)
                .is_ok()
        );
    }

    /// Publishers racing with subscribers that come and go on the same new
    /// topics, which are forgotten whenever the last one leaves before the
    /// first publish: every id answered is in the history or was delivered,
    /// never published into a topic the hub no longer holds.
    #[test]
    fn publishing_never_lands_in_a_forgotten_topic() {
        const ROUNDS: usize = 1000;
        const TOPICS: usize = 3;
        const CHURNERS: usize = 3;
        let hub = Hub::with_limits(HubLimits {
            history: 100_000,
            queue: 100_000,
            ..HubLimits::default()
        });
        let names = |round: usize| -> Vec<String> {
            (0..TOPICS).map(|t| format!("r{round}-{t}")).collect()
        };
        let start = Arc::new(Barrier::new(2 + CHURNERS));
        let publishers: Vec<_> = (0..2)
            .map(|p| {
                let (hub, start) = (hub.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut published = Vec::new();
                    let mut missed = Vec::new();
                    for round in 0..ROUNDS {
                        // No panic between barriers: the others would wait
                        // for this thread for ever.
                        start.wait();
                        for t in names(round).iter().cycle().skip(p).take(TOPICS) {
                            // The first publisher listens to its topic first:
                            // registered in a topic that was being forgotten,
                            // it would not get its own event.
                            let own = (p == 0).then(|| hub.subscribe(&[t], None));
                            let Ok(id) = hub.publish(t, &Event::data("x")) else {
                                missed.push(0);
                                continue;
                            };
                            if let Some(Ok(own)) = own
                                && !own.receiver().try_iter().any(|f| f.id() == id)
                            {
                                missed.push(id);
                            }
                            published.push(id);
                        }
                    }
                    (published, missed)
                })
            })
            .collect();
        let churners: Vec<_> = (0..CHURNERS)
            .map(|c| {
                let (hub, start) = (hub.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut delivered = Vec::new();
                    for round in 0..ROUNDS {
                        let names = names(round);
                        start.wait();
                        for k in 0..40 {
                            let first = (c + k) % TOPICS;
                            let pick = [&names[first], &names[(first + 1) % TOPICS]];
                            if let Ok(sub) = hub.subscribe(&pick[..1 + k % 2], None) {
                                delivered.extend(sub.receiver().try_iter().map(|f| f.id()));
                            }
                        }
                    }
                    delivered
                })
            })
            .collect();
        let mut seen: HashSet<u64> = HashSet::new();
        for c in churners {
            seen.extend(c.join().unwrap());
        }
        let mut published = Vec::new();
        for p in publishers {
            let (ids, missed) = p.join().unwrap();
            assert!(missed.is_empty(), "own events missed: {missed:?}");
            published.extend(ids);
        }
        for round in 0..ROUNDS {
            for t in names(round) {
                let sub = hub.subscribe(&[t], Some(0)).unwrap();
                seen.extend(ids(sub.replay()));
            }
        }
        let lost: Vec<u64> = published
            .into_iter()
            .filter(|id| !seen.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} answered ids are nowhere: {lost:?}",
            lost.len()
        );
        assert_eq!(hub.topic_count(), ROUNDS * TOPICS);
    }

    #[test]
    fn history_bytes_evicts_the_oldest_across_topics() {
        // Every frame here is the same size: `id: <16 digits>\ndata: x\n\n`.
        let probe = Hub::new();
        probe.publish("p", &Event::data("x")).unwrap();
        let frame = probe.history_bytes();
        let hub = Hub::with_limits(HubLimits {
            history_bytes: 5 * frame + frame / 2,
            ..HubLimits::default()
        });
        let topics = ["a", "b", "a", "c", "a", "b", "b", "c", "a"];
        let published: Vec<u64> = topics
            .iter()
            .map(|t| hub.publish(t, &Event::data("x")).unwrap())
            .collect();
        // The newest five, whatever their topics, are what is left.
        assert_eq!(hub.history_bytes(), 5 * frame);
        let all = hub.subscribe(&["a", "b", "c"], Some(0)).unwrap();
        assert_eq!(ids(all.replay()), published[4..]);
        assert!(all.gap().is_some());
        // Asking from the first id: a gap naming the oldest still held.
        let a = hub.subscribe(&["a"], Some(published[0])).unwrap();
        assert_eq!(ids(a.replay()), [published[4], published[8]]);
        assert_eq!(
            text(a.gap().unwrap()),
            format!(
                "event: gap\ndata: {{\"lastEventId\":\"{}\",\"oldestId\":\"{}\"}}\n\n",
                published[0], published[4]
            )
        );
        // From inside what is held: no gap.
        let b = hub.subscribe(&["b"], Some(published[5])).unwrap();
        assert!(b.gap().is_none());
        assert_eq!(ids(b.replay()), [published[6]]);
        drop((all, a, b));
        // Publishing more to `a` pushes out `b` and `c`, which are then
        // unused and forgotten.
        let more: Vec<u64> = (0..5)
            .map(|_| hub.publish("a", &Event::data("x")).unwrap())
            .collect();
        assert_eq!(hub.topic_count(), 1);
        let a = hub.subscribe(&["a"], Some(0)).unwrap();
        assert_eq!(ids(a.replay()), more);
    }

    #[test]
    fn the_per_topic_limit_keeps_the_byte_count_exact() {
        let hub = Hub::with_limits(limits_bytes(3, 1 << 20));
        for _ in 0..10 {
            hub.publish("a", &Event::data("xyz")).unwrap();
            hub.publish("b", &Event::data("x")).unwrap();
        }
        let sub = hub.subscribe(&["a", "b"], Some(0)).unwrap();
        let held: usize = sub.replay().iter().map(|f| f.bytes().len()).sum();
        assert_eq!(sub.replay().len(), 6);
        assert_eq!(hub.history_bytes(), held);
    }

    fn limits_bytes(history: usize, history_bytes: usize) -> HubLimits {
        HubLimits {
            history,
            history_bytes,
            ..HubLimits::default()
        }
    }

    /// A body of CRs is split into as many `data:` lines: its frame, not its
    /// body, is what counts.
    #[test]
    fn the_encoded_size_is_what_counts() {
        let hub = Hub::new();
        let id = hub.publish("t", &Event::data("\r".repeat(1000))).unwrap();
        assert_eq!(
            hub.history_bytes(),
            format!("id: {id}\n").len() + 1001 * "data:\n".len() + 1
        );
    }

    #[test]
    fn concurrent_publishers_stay_within_history_bytes() {
        let hub = Hub::with_limits(limits_bytes(100_000, 64 << 10));
        let threads: Vec<_> = (0..4)
            .map(|p| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let t = format!("t{}", (p + i) % 7);
                        hub.publish(&t, &Event::data("y".repeat(i % 300))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let names: Vec<String> = (0..7).map(|t| format!("t{t}")).collect();
        let sub = hub.subscribe(&names, Some(0)).unwrap();
        let held: usize = sub.replay().iter().map(|f| f.bytes().len()).sum();
        assert_eq!(hub.history_bytes(), held);
        assert!(held <= 64 << 10, "{held}");
        // Not much less either: one frame's worth below the limit at most.
        assert!(held > (64 << 10) - 400, "{held}");
        // What is left is the newest: no held id is older than one evicted.
        let held_ids = ids(sub.replay());
        let oldest = held_ids[0];
        assert!(held_ids.windows(2).all(|w| w[0] < w[1]));
        let gap = text(sub.gap().unwrap());
        assert!(gap.contains(&format!("\"oldestId\":\"{oldest}\"")), "{gap}");
    }

    #[test]
    fn client_ids_never_overflow() {
        let hub = Hub::new();
        let id = hub.publish("t", &Event::data("x")).unwrap();
        // Larger than any id issued: a gap, nothing replayed.
        for last in [u64::MAX, u64::MAX - 1, id + 1] {
            let sub = hub.subscribe(&["t"], Some(last)).unwrap();
            assert!(sub.replay().is_empty());
            let gap = text(sub.gap().expect("a gap for an id from the future"));
            assert!(
                gap.contains(&format!("\"lastEventId\":\"{last}\"")),
                "{gap}"
            );
            assert!(gap.ends_with("\"oldestId\":null}\n\n"), "{gap}");
        }
        // The latest id itself: up to date, no gap.
        let sub = hub.subscribe(&["t"], Some(id)).unwrap();
        assert!(sub.gap().is_none() && sub.replay().is_empty());
        let sub = hub.subscribe(&["t"], Some(0)).unwrap();
        assert_eq!(ids(sub.replay()), [id]);
    }

    #[test]
    fn last_event_id_values() {
        assert_eq!(parse_last_event_id("42"), Some(42));
        assert_eq!(parse_last_event_id(" 42\t"), Some(42));
        assert_eq!(parse_last_event_id("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_last_event_id("18446744073709551616"), Some(u64::MAX));
        assert_eq!(parse_last_event_id(&"9".repeat(400)), Some(u64::MAX));
        for bad in ["", " ", "+5", "-1", "1e3", "0x10", "4 2", "٣"] {
            assert_eq!(parse_last_event_id(bad), None, "{bad:?}");
        }
    }

    /// The prelude is one vector: the gap event, then the replay, whose
    /// frames are the history's own bytes.
    #[test]
    fn the_replay_shares_the_history() {
        let hub = Hub::with_limits(limits_bytes(2, 1 << 20));
        let ids: Vec<u64> = (0..4)
            .map(|_| hub.publish("t", &Event::data("x")).unwrap())
            .collect();
        let a = hub.subscribe(&["t"], Some(ids[0])).unwrap();
        let b = hub.subscribe(&["t"], Some(ids[0])).unwrap();
        assert_eq!(a.prelude().len(), 3);
        assert!(std::ptr::eq(a.gap().unwrap(), &a.prelude()[0]));
        assert!(std::ptr::eq(&a.replay()[0], &a.prelude()[1]));
        for (x, y) in a.replay().iter().zip(b.replay()) {
            assert!(std::ptr::eq(x.bytes(), y.bytes()));
        }
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::store_sqlite::{SqliteStore, StoreOptions, SyncMode};

    fn hub_at(path: &std::path::Path, clock_us: Arc<AtomicU64>) -> Hub {
        let store = SqliteStore::open(
            path,
            StoreOptions {
                sync: SyncMode::Normal,
                history: 100,
                history_age: None,
            },
        )
        .expect("store opens");
        let clock: Clock = Arc::new(move || clock_us.load(Ordering::SeqCst));
        Hub::start(
            HubLimits::default(),
            Arc::new(Metrics::new()),
            None,
            Some(Arc::new(store)),
            clock,
        )
        .expect("hub starts")
    }

    /// A host without a real-time clock boots with a stale one: the next
    /// run's clock is behind the ids the last run gave. With a store, the
    /// next id is past every stored one all the same, and a client holding
    /// the last run's newest id is replayed the new events, without a gap.
    #[test]
    fn ids_never_go_back_when_the_clock_does() {
        let dir = std::env::temp_dir().join(format!("tinysse-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.db");
        let clock = Arc::new(AtomicU64::new(5_000_000_000));
        let hub = hub_at(&path, clock.clone());
        let first = hub.publish("t", &Event::data("before")).unwrap();
        let last = hub.publish("t", &Event::data("before too")).unwrap();
        assert_eq!(first, 5_000_000_000, "seeded from the clock");
        drop(hub);

        clock.store(1_000_000, Ordering::SeqCst); // years back
        let hub = hub_at(&path, clock.clone());
        let next = hub.publish("t", &Event::data("after")).unwrap();
        assert_eq!(next, last + 1, "past every stored id, not the clock");
        let sub = hub.subscribe(&["t"], Some(last)).unwrap();
        assert!(sub.gap().is_none(), "nothing was lost");
        let ids: Vec<u64> = sub.replay().iter().map(Frame::id).collect();
        assert_eq!(ids, [next]);
        drop((sub, hub));

        // The clock ahead of the stored ids again: seeded from it.
        clock.store(9_000_000_000, Ordering::SeqCst);
        let hub = hub_at(&path, clock);
        assert_eq!(
            hub.publish("t", &Event::data("later")).unwrap(),
            9_000_000_000
        );
        drop(hub);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The cluster path with a fake cluster whose "follower" is the test, so
/// that every interleaving below is forced, not hoped for.
#[cfg(test)]
mod cluster_tests {
    use super::*;
    use crate::store::Replay;

    /// Issued events; on `replay`, first hands `during` to the hub (the
    /// follower delivering while the round trip is under way).
    struct Fake {
        hub: Mutex<Option<Hub>>,
        issued: Mutex<Vec<(u64, String, Vec<u8>)>>,
        during: Mutex<Vec<u64>>,
        replays: AtomicUsize,
        down: AtomicBool,
    }

    impl Cluster for Fake {
        fn publish(&self, topic: &str, payload: &[u8]) -> Result<u64, String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            let mut issued = self.issued.lock().unwrap();
            let id = issued.last().map_or(10, |e| e.0 + 10);
            issued.push((id, topic.to_string(), payload.to_vec()));
            Ok(id)
        }

        fn replay(&self, topics: &[&str], after: u64) -> Result<Replay, String> {
            self.replays.fetch_add(1, Ordering::SeqCst);
            let hub = self.hub.lock().unwrap().clone().expect("hub set");
            for id in std::mem::take(&mut *self.during.lock().unwrap()) {
                follow(&hub, self, id);
            }
            let issued = self.issued.lock().unwrap();
            Ok(Replay {
                events: issued
                    .iter()
                    .filter(|e| e.0 > after && topics.contains(&e.1.as_str()))
                    .cloned()
                    .collect(),
                gap: false,
                upto: issued.last().map_or(0, |e| e.0),
            })
        }

        fn health(&self) -> Result<(), String> {
            Ok(())
        }
    }

    /// The follower bringing issued event `id` to `hub`.
    fn follow(hub: &Hub, fake: &Fake, id: u64) {
        let (topic, payload) = fake
            .issued
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.0 == id)
            .map(|e| (e.1.clone(), e.2.clone()))
            .expect("issued");
        let mut bytes = vec![0u8; ID_ROOM];
        bytes.extend_from_slice(&payload);
        hub.ingest(&topic, id, 0, bytes.into()).unwrap();
    }

    fn setup() -> (Hub, Arc<Fake>) {
        let fake = Arc::new(Fake {
            hub: Mutex::new(None),
            issued: Mutex::new(Vec::new()),
            during: Mutex::new(Vec::new()),
            replays: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let hub = Hub::start_cluster(
            HubLimits::default(),
            Arc::new(Metrics::new()),
            None,
            fake.clone(),
            0,
        );
        *fake.hub.lock().unwrap() = Some(hub.clone());
        (hub, fake)
    }

    fn queued(sub: &Subscription) -> Vec<u64> {
        sub.receiver().try_iter().map(|f| f.id()).collect()
    }

    #[test]
    fn a_publish_is_delivered_only_as_the_follower_brings_it() {
        let (hub, fake) = setup();
        let sub = hub.subscribe(&["t"], None).unwrap();
        let id = hub.publish("t", &Event::data("x")).unwrap();
        assert_eq!(id, 10);
        assert!(
            queued(&sub).is_empty(),
            "delivered before the cluster's order"
        );
        follow(&hub, &fake, id);
        assert_eq!(queued(&sub), [10]);
    }

    #[test]
    fn publishes_refused_while_the_cluster_is_down_hold_no_topics() {
        let (hub, fake) = setup();
        fake.down.store(true, Ordering::SeqCst);
        for i in 0..5 {
            let e = hub.publish(&format!("t{i}"), &Event::data("x"));
            assert!(matches!(e, Err(PublishError::Unavailable(_))), "{e:?}");
        }
        assert_eq!(hub.topic_count(), 0);
    }

    #[test]
    fn a_followed_id_replays_locally_without_asking_the_cluster() {
        let (hub, fake) = setup();
        for _ in 0..3 {
            let id = hub.publish("t", &Event::data("x")).unwrap();
            follow(&hub, &fake, id);
        }
        let sub = hub.subscribe(&["t"], Some(10)).unwrap();
        let ids: Vec<u64> = sub.prelude().iter().map(Frame::id).collect();
        assert_eq!(ids, [20, 30]);
        assert!(sub.gap().is_none());
        assert_eq!(fake.replays.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_cluster_replay_hands_over_to_live_with_no_duplicate() {
        let (hub, fake) = setup();
        // 10 followed; 20, 30 and 40 issued but not followed yet, so a
        // client that saw 20 elsewhere is ahead of this instance.
        for _ in 0..4 {
            hub.publish("t", &Event::data("x")).unwrap();
        }
        follow(&hub, &fake, 10);
        // The follower delivers 30 while the replay is under way: it is in
        // the queue when the replay answers, and in the replay too.
        fake.during.lock().unwrap().push(20);
        fake.during.lock().unwrap().push(30);
        let sub = hub.subscribe(&["t"], Some(20)).unwrap();
        assert_eq!(fake.replays.load(Ordering::SeqCst), 1);
        let replayed: Vec<u64> = sub.prelude().iter().map(Frame::id).collect();
        assert_eq!(replayed, [30, 40]);
        assert!(queued(&sub).is_empty(), "30 queued twice");
        // 40 was in the replay; the follower bringing it must not repeat it.
        follow(&hub, &fake, 40);
        let later = hub.publish("t", &Event::data("y")).unwrap();
        follow(&hub, &fake, later);
        assert_eq!(queued(&sub), [later]);
    }

    #[test]
    fn after_a_follower_gap_streams_end_and_replays_ask_the_cluster() {
        let (hub, fake) = setup();
        let a = hub.publish("t", &Event::data("x")).unwrap();
        follow(&hub, &fake, a);
        let sub = hub.subscribe(&["t"], None).unwrap();
        hub.lost_track();
        assert!(sub.is_evicted(), "the open stream must end");
        // Issued while the follower lost track; the next it brings is 30.
        let missed = hub.publish("t", &Event::data("missed")).unwrap();
        let next = hub.publish("t", &Event::data("next")).unwrap();
        follow(&hub, &fake, next);
        let again = hub.subscribe(&["t"], Some(a)).unwrap();
        let ids: Vec<u64> = again.prelude().iter().map(Frame::id).collect();
        assert_eq!(ids, [missed, next], "replayed from the cluster");
        // From the event after the gap on, the local history is exact.
        let replays = fake.replays.load(Ordering::SeqCst);
        let after = hub.publish("t", &Event::data("after")).unwrap();
        follow(&hub, &fake, after);
        let local = hub.subscribe(&["t"], Some(next)).unwrap();
        let ids: Vec<u64> = local.prelude().iter().map(Frame::id).collect();
        assert_eq!(ids, [after]);
        assert_eq!(fake.replays.load(Ordering::SeqCst), replays);
    }
}
