//! The storage seam: what a hub asks of wherever it keeps acknowledged
//! events beyond memory. Below the hub (which calls it) and beside the
//! stores that fill it (`store_sqlite`, later Redis).

use std::collections::HashMap;

/// The storage seam: what a hub asks of where it keeps acknowledged events
/// beyond memory (none by default). An event is appended, and only then
/// acknowledged and delivered; at start-up the hub loads what the store
/// retained. Events published elsewhere (another instance) come in through
/// [`Hub::ingest`](crate::hub::Hub::ingest).
pub(crate) trait Store: Send + Sync {
    /// Makes one event durable; returns once it is (a group commit may
    /// take many at once). An error is a one-line reason: nothing was kept.
    fn append(&self, topic: &str, id: u64, at_ms: u64, payload: &[u8]) -> Result<(), String>;
    /// What the store retained, for a hub starting up.
    fn load(&self, seed: u64) -> Result<Loaded, String>;
    /// Whether the store can take appends now; the reason if not.
    fn health(&self) -> Result<(), String>;
    /// Drops what is older than the store's age limit, if it has one.
    fn prune_by_age(&self) -> Result<(), String>;
}

/// What a [`Store`] retained.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Every retained event, ids ascending: (id, topic, at_ms, payload).
    pub(crate) events: Vec<(u64, String, u64, Vec<u8>)>,
    /// The highest id ever stored (pruned or not): the next id is larger.
    pub(crate) highest_id: u64,
    /// The first id the store was used with: a client asking from before
    /// it may have missed what the store never held.
    pub(crate) first_id: u64,
    /// Per topic, the largest id that left its retained events.
    pub(crate) pruned: HashMap<String, u64>,
}

/// The scale-out seam: one id sequence and one history shared by several
/// hubs (instances), e.g. through Redis. A hub publishes through it and
/// gets the event back, like every other hub, from a follower that calls
/// [`Hub::ingest`](crate::hub::Hub::ingest) in the shared order, so there
/// is one order everywhere. It replays what a hub does not hold itself.
pub(crate) trait Cluster: Send + Sync {
    /// Publishes one encoded event (without its id line); returns its id
    /// once the cluster holds it. An error is a one-line reason: nothing
    /// was published (or, said in the reason, it may have been).
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<u64, String>;
    /// The retained events of `topics` after `after`, from one snapshot.
    fn replay(&self, topics: &[&str], after: u64) -> Result<Replay, String>;
    /// Whether the cluster can take publishes now; the reason if not.
    fn health(&self) -> Result<(), String>;
}

/// What a [`Cluster`] replayed.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// The retained events after the asked id, ids ascending:
    /// (id, topic, payload without its id line).
    pub(crate) events: Vec<(u64, String, Vec<u8>)>,
    /// Some events after the asked id are no longer held.
    pub(crate) gap: bool,
    /// The highest id issued at the snapshot: every event of the topics up
    /// to it is in `events` or covered by `gap`, every later one comes
    /// through the follower.
    pub(crate) upto: u64,
}
