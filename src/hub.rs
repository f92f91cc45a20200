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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::event::{Event, Frame, ID_ROOM};
use crate::metrics::Metrics;
use crate::pool::{Inbox, Notify};

/// Limits of a [`Hub`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubLimits {
    /// Events kept per topic for replay.
    pub history: usize,
    /// Frames queued per subscriber before it is evicted.
    pub queue: usize,
    /// Topics held at once.
    pub max_topics: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            history: 1024,
            queue: 256,
            max_topics: 10_000,
        }
    }
}

/// Why a publish was refused. Nothing was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The topic name is empty, too long, or has a character outside
    /// `A-Z a-z 0-9 _ - . : /`.
    InvalidTopic,
    /// Creating the topic would exceed the hub's `max_topics`.
    TooManyTopics,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidTopic => f.write_str(TOPIC_RULE),
            PublishError::TooManyTopics => f.write_str("too many topics"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why a subscription was refused. Nothing was registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// No topic was named.
    NoTopic,
    /// A topic name is invalid (see [`PublishError::InvalidTopic`]).
    InvalidTopic,
    /// Creating a topic would exceed the hub's `max_topics`.
    TooManyTopics,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::NoTopic => f.write_str("missing topic parameter"),
            SubscribeError::InvalidTopic => f.write_str(TOPIC_RULE),
            SubscribeError::TooManyTopics => f.write_str("too many topics"),
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
    first_id: u64,
    next_id: AtomicU64,
    next_sub: AtomicU64,
    /// Held while an id is taken and handed to subscribers of more than one
    /// topic, so that their queues get ids in order across topics; publishes
    /// to a topic without such subscribers never take it.
    across_topics: Mutex<()>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    metrics: Arc<Metrics>,
}

struct Topic {
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
}

struct Subscriber {
    key: u64,
    queue: Sender<Frame>,
    evicted: Arc<AtomicBool>,
    /// Subscribed to more than one topic (see `Inner::across_topics`).
    multi_topic: bool,
    /// Set for a subscriber served by the writer pool: it is woken through
    /// its pool thread, once per publish for all it serves.
    notify: Option<Notify>,
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
            .field("first_id", &self.inner.first_id)
            .finish_non_exhaustive()
    }
}

fn lock(topic: &Topic) -> MutexGuard<'_, TopicState> {
    // A panic elsewhere must not take every later publish down with it: the
    // state is only ever changed in complete steps.
    topic.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub with the default limits (history 1024, queue 256, 10,000 topics).
    pub fn new() -> Hub {
        Hub::with_limits(HubLimits::default())
    }

    /// A hub with the given limits (each at least 1).
    ///
    /// ```
    /// let hub = tinysse::Hub::with_limits(tinysse::HubLimits { history: 10, queue: 8, max_topics: 2 });
    /// hub.publish("a", &tinysse::Event::data("1"))?;
    /// hub.publish("b", &tinysse::Event::data("2"))?;
    /// assert_eq!(hub.publish("c", &tinysse::Event::data("3")), Err(tinysse::PublishError::TooManyTopics));
    /// # Ok::<(), tinysse::PublishError>(())
    /// ```
    pub fn with_limits(limits: HubLimits) -> Hub {
        Hub::with_metrics(limits, Arc::new(Metrics::default()))
    }

    pub(crate) fn with_metrics(limits: HubLimits, metrics: Arc<Metrics>) -> Hub {
        let limits = HubLimits {
            history: limits.history.max(1),
            queue: limits.queue.max(1),
            max_topics: limits.max_topics.max(1),
        };
        // Seeding from the clock keeps ids growing across restarts, so a
        // client's Last-Event-ID from an earlier run is never mistaken for a
        // newer event.
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Hub {
            inner: Arc::new(Inner {
                limits,
                first_id: now_us,
                next_id: AtomicU64::new(now_us),
                next_sub: AtomicU64::new(0),
                across_topics: Mutex::new(()),
                topics: RwLock::new(HashMap::new()),
                metrics,
            }),
        }
    }

    /// The counters this hub updates.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The limits in force.
    pub fn limits(&self) -> &HubLimits {
        &self.inner.limits
    }

    /// The number of topics held.
    pub fn topic_count(&self) -> usize {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, PublishError> {
        if !valid_topic(name) {
            return Err(PublishError::InvalidTopic);
        }
        if let Some(t) = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(t.clone());
        }
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        if topics.len() >= self.inner.limits.max_topics {
            return Err(PublishError::TooManyTopics);
        }
        let t = Arc::new(Topic {
            state: Mutex::new(TopicState::default()),
        });
        topics.insert(name.to_string(), t.clone());
        self.inner
            .metrics
            .topics
            .store(topics.len() as u64, Ordering::Relaxed);
        Ok(t)
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
        let topic = self.topic(topic)?;
        // Encode once, outside the lock, with room for the id line.
        let mut bytes = vec![0u8; ID_ROOM];
        event.encode_fields(&mut bytes, false);
        let bytes: Arc<[u8]> = bytes.into();

        let mut st = lock(&topic);
        // Per topic, its lock orders ids and deliveries. A subscriber to
        // several topics also needs publishers to different topics kept in
        // step, or it could get id 7 after id 8 and, reconnecting from 8,
        // never see 7. Lock order: a topic, then this; never the reverse.
        let in_step = (st.multi_topic > 0).then(|| {
            self.inner
                .across_topics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::with_reserved_id(bytes, id);
        if st.history.len() >= self.inner.limits.history
            && let Some(old) = st.history.pop_front()
        {
            st.dropped_upto = old.id();
        }
        st.history.push_back(frame.clone());
        let metrics = &self.inner.metrics;
        let queue_limit = self.inner.limits.queue;
        let mut wake: Vec<Arc<Inbox>> = Vec::new();
        // A subscriber the pool already has listed costs no wake-up: when
        // its socket is full, publishing must not keep waking the thread
        // for nothing.
        let mut listed = |n: &Notify| {
            if n.mark() && !wake.iter().any(|w| Arc::ptr_eq(w, n.inbox())) {
                wake.push(n.inbox().clone());
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
                // Its pool thread ends the stream.
                if let Some(n) = &s.notify {
                    listed(n);
                }
                return false;
            }
            // Unbounded: an error only means the subscriber has gone.
            let sent = s.queue.try_send(frame.clone()).is_ok();
            if sent && let Some(n) = &s.notify {
                listed(n);
            }
            sent
        };
        let mut gone_multi = 0;
        st.subscribers.retain(|s| {
            let keep = deliver(s);
            if !keep && s.multi_topic {
                gone_multi += 1;
            }
            keep
        });
        st.multi_topic -= gone_multi;
        drop(in_step);
        drop(st);

        // After the lock: a wake-up is a syscall, and the pool thread would
        // only contend for the lock it is still held in.
        for w in wake {
            w.wake();
        }
        metrics.events_published.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Subscribes to `topics` (created if new). With `last_event_id`, the
    /// subscription starts with the retained events after that id (and a
    /// `gap` event first when some can no longer be replayed); live events
    /// follow with no gap and no duplicate.
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

    /// Like [`subscribe`](Self::subscribe), for a subscriber the writer pool
    /// serves: each publish lists it with `notify`.
    pub(crate) fn subscribe_with<S: AsRef<str>>(
        &self,
        topics: &[S],
        last_event_id: Option<u64>,
        notify: Option<Notify>,
    ) -> Result<Subscription, SubscribeError> {
        if topics.is_empty() {
            return Err(SubscribeError::NoTopic);
        }
        let mut names: Vec<&str> = topics.iter().map(|t| t.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        let mut handles = Vec::with_capacity(names.len());
        for name in &names {
            match self.topic(name) {
                Ok(t) => handles.push(t),
                Err(PublishError::InvalidTopic) => return Err(SubscribeError::InvalidTopic),
                Err(PublishError::TooManyTopics) => return Err(SubscribeError::TooManyTopics),
            }
        }
        let (tx, rx) = unbounded();
        let evicted = Arc::new(AtomicBool::new(false));
        let key = self.inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let mut replay = Vec::new();
        let mut gap = false;
        let multi_topic = handles.len() > 1;
        // Every topic locked at once (in name order, so two subscribers never
        // wait on each other): no publish to any of them can fall between
        // the replay snapshot of one and the registration in another.
        let mut states: Vec<_> = handles.iter().map(|t| lock(t)).collect();
        for st in &mut states {
            if let Some(last) = last_event_id {
                replay.extend(st.history.iter().filter(|f| f.id() > last).cloned());
                // Events after `last` exist that we no longer hold: those that
                // left history, or any from before this hub started.
                gap |= st.dropped_upto > last || last + 1 < self.inner.first_id;
            }
            st.subscribers.push(Subscriber {
                key,
                queue: tx.clone(),
                evicted: evicted.clone(),
                multi_topic,
                notify: notify.clone(),
            });
            st.multi_topic += usize::from(multi_topic);
        }
        drop(states);
        replay.sort_unstable_by_key(|f| f.id());
        let gap = match last_event_id {
            Some(last) if gap => Some(gap_frame(last, replay.first().map(|f| f.id()))),
            _ => None,
        };
        Ok(Subscription {
            topics: handles,
            key,
            gap,
            replay,
            queue: rx,
            evicted,
        })
    }
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
    topics: Vec<Arc<Topic>>,
    key: u64,
    gap: Option<Frame>,
    replay: Vec<Frame>,
    queue: Receiver<Frame>,
    evicted: Arc<AtomicBool>,
}

impl Subscription {
    /// The `gap` event to send before the replay, when some events after the
    /// asked id can no longer be replayed.
    pub fn gap(&self) -> Option<&Frame> {
        self.gap.as_ref()
    }

    /// The retained events after the asked id, oldest first.
    pub fn replay(&self) -> &[Frame] {
        &self.replay
    }

    /// The gap event (if any) followed by the replay: everything to write
    /// before live frames.
    pub fn prelude(&self) -> Vec<Frame> {
        self.gap.iter().chain(&self.replay).cloned().collect()
    }

    /// The queue of live frames, each published after the subscription began.
    pub fn receiver(&self) -> &Receiver<Frame> {
        &self.queue
    }

    /// Whether the hub dropped this subscriber for falling behind.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    pub(crate) fn evicted_flag(&self) -> Arc<AtomicBool> {
        self.evicted.clone()
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
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("replay", &self.replay.len())
            .field("gap", &self.gap.is_some())
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
        drop(sub);
        for name in ["a", "b"] {
            let t = hub.topic(name).unwrap();
            assert!(lock(&t).subscribers.is_empty());
            assert_eq!(lock(&t).multi_topic, 0);
        }
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
