//! A counting semaphore for connections (patched in for tinysse), which at
//! the cap makes room by closing the connection that has waited longest on
//! its client.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counts the connections held; `acquire` waits while the cap is reached.
#[derive(Clone)]
pub struct ConnectionSlots {
    inner: Option<Arc<Shared>>,
    max: usize,
}

struct Shared {
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    held: usize,
    next_id: u64,
    /// Connections that can be closed to make room.
    watched: HashMap<u64, Watched>,
}

struct Watched {
    /// When the connection began its current request (accepted, or its
    /// previous response ended): how long it has kept its slot for one
    /// request, mostly waiting on the client.
    since: Instant,
    sock: TcpStream,
    /// Already shut down to make room; its thread is on its way out.
    preempted: bool,
}

/// One held connection; dropping it frees the slot.
pub struct Slot {
    inner: Option<Arc<Shared>>,
    id: u64,
}

/// Tells the slot registry that a connection starts a new request.
#[derive(Clone)]
pub struct Progress {
    inner: Option<Arc<Shared>>,
    id: u64,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConnectionSlots {
    pub fn new(max: Option<usize>) -> ConnectionSlots {
        ConnectionSlots {
            inner: max.map(|_| {
                Arc::new(Shared {
                    state: Mutex::new(State::default()),
                    freed: Condvar::new(),
                })
            }),
            max: max.unwrap_or(usize::MAX).max(1),
        }
    }

    /// Waits for a free slot; `None` once `close` is set.
    ///
    /// At the cap, rather than leaving new connections in the backlog
    /// behind clients that trickle their requests (or never read their
    /// answers), the connection whose current request began earliest is
    /// shut down: a client that keeps a slot for long is the one to go.
    /// A request from a well-behaved client takes milliseconds, so it is
    /// never the oldest while slow clients hold slots.
    pub fn acquire(&self, close: &AtomicBool) -> Option<Slot> {
        let inner = match &self.inner {
            None => return Some(Slot { inner: None, id: 0 }),
            Some(inner) => inner,
        };
        let mut st = lock(inner);
        // Room is made a little ahead of the cap, so that a new client
        // finds a free slot at once instead of waiting for a preempted
        // connection's thread to end.
        let headroom = if self.max >= 16 { (self.max / 8).min(16) } else { 0 };
        if headroom > 0 && st.held.saturating_add(headroom) >= self.max {
            preempt_oldest(&mut st);
        }
        while st.held >= self.max {
            preempt_oldest(&mut st);
            // Woken by a freed slot, or after a while to notice `close`.
            st = inner
                .freed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if close.load(Ordering::Relaxed) {
                return None;
            }
        }
        st.held += 1;
        st.next_id += 1;
        Some(Slot {
            inner: Some(inner.clone()),
            id: st.next_id,
        })
    }
}

/// Shuts down the connection whose current request began earliest (and
/// that is not already on its way out): its blocked read or write fails at
/// once, its thread then ends and frees the slot.
fn preempt_oldest(st: &mut State) {
    let oldest = st
        .watched
        .iter_mut()
        .filter(|(_, w)| !w.preempted)
        .min_by_key(|(_, w)| w.since);
    if let Some((_, w)) = oldest {
        w.preempted = true;
        let _ = w.sock.shutdown(Shutdown::Both);
    }
}

impl ConnectionSlots {
    /// Shuts down the read half of every watched connection: one waiting
    /// for a request (or a body) ends, one writing an answer finishes it.
    pub fn stop_reading(&self) {
        self.shut_down(Shutdown::Read);
    }

    /// Shuts every watched connection down.
    pub fn shut_down_all(&self) {
        self.shut_down(Shutdown::Both);
    }

    fn shut_down(&self, how: Shutdown) {
        if let Some(inner) = &self.inner {
            for w in lock(inner).watched.values() {
                let _ = w.sock.shutdown(how);
            }
        }
    }
}

impl Slot {
    /// Lets the registry shut `sock` (a handle on this connection's socket)
    /// down to make room at the cap.
    pub fn watch(&self, sock: TcpStream) {
        if let Some(inner) = &self.inner {
            lock(inner).watched.insert(
                self.id,
                Watched {
                    since: Instant::now(),
                    sock,
                    preempted: false,
                },
            );
        }
    }

    /// The handle the connection uses to report a new request.
    pub fn progress(&self) -> Progress {
        Progress {
            inner: self.inner.clone(),
            id: self.id,
        }
    }
}

impl Progress {
    /// The connection starts reading a new request.
    pub fn new_request(&self) {
        if let Some(inner) = &self.inner {
            if let Some(w) = lock(inner).watched.get_mut(&self.id) {
                w.since = Instant::now();
            }
        }
    }

    /// The connection is handed over (or done): it can no longer be
    /// preempted, and the registry's handle on its socket is closed.
    pub fn forget(&self) {
        if let Some(inner) = &self.inner {
            lock(inner).watched.remove(&self.id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let mut st = lock(inner);
            st.watched.remove(&self.id);
            st.held = st.held.saturating_sub(1);
            inner.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn at_the_cap_the_oldest_connection_is_shut_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = ConnectionSlots::new(Some(2));
        let close = AtomicBool::new(false);
        let _c1 = TcpStream::connect(addr).unwrap();
        let (s1, _) = listener.accept().unwrap();
        let old = slots.acquire(&close).unwrap();
        old.watch(s1.try_clone().unwrap());
        std::thread::sleep(Duration::from_millis(5));
        let _c2 = TcpStream::connect(addr).unwrap();
        let (s2, _) = listener.accept().unwrap();
        let young = slots.acquire(&close).unwrap();
        young.watch(s2.try_clone().unwrap());

        // A third slot: the oldest is shut down, and its owner frees it.
        let owner = std::thread::spawn(move || {
            let mut s1 = s1;
            let mut b = [0u8; 1];
            let n = s1.read(&mut b).unwrap_or(0);
            drop(old);
            n
        });
        let third = slots.acquire(&close).expect("room made");
        assert_eq!(owner.join().unwrap(), 0, "the oldest read saw its end");
        let mut s2 = s2;
        s2.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let young_alive = matches!(s2.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(young_alive, "the younger connection is left alone");
        drop((third, young));
    }
}
