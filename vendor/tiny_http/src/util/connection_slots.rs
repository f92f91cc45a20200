//! A counting semaphore for connections (patched in for tinysse).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Counts the connections held; `acquire` waits while the cap is reached.
#[derive(Clone)]
pub struct ConnectionSlots {
    inner: Option<Arc<(Mutex<usize>, Condvar)>>,
    max: usize,
}

/// One held connection; dropping it frees the slot.
pub struct Slot {
    inner: Option<Arc<(Mutex<usize>, Condvar)>>,
}

impl ConnectionSlots {
    pub fn new(max: Option<usize>) -> ConnectionSlots {
        ConnectionSlots {
            inner: max.map(|_| Arc::new((Mutex::new(0), Condvar::new()))),
            max: max.unwrap_or(usize::MAX).max(1),
        }
    }

    /// Waits for a free slot; `None` once `close` is set.
    pub fn acquire(&self, close: &AtomicBool) -> Option<Slot> {
        let inner = match &self.inner {
            None => return Some(Slot { inner: None }),
            Some(inner) => inner,
        };
        let (count, freed) = &**inner;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= self.max {
            // Woken by a freed slot, or after a while to notice `close`.
            n = freed
                .wait_timeout(n, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if close.load(Ordering::Relaxed) {
                return None;
            }
        }
        *n += 1;
        Some(Slot {
            inner: Some(inner.clone()),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let (count, freed) = &**inner;
            let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
            *n = n.saturating_sub(1);
            freed.notify_one();
        }
    }
}
