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
