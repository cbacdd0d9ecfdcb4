//! The open webhook connections: a bounded number of slots, each connection's phase (see
//! [`super::phase`]) where the accept loop can see it, room made at the limit by closing the one
//! idle longest, and the two drain switches of the shutdown (SPEC 9).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::phase::{Limits, Phase, Snapshot, longest_idle};

/// How long the accept loop waits for a chosen connection to close before it chooses again (the
/// choice may have been declined because a request began on it meanwhile).
const EVICTION_RETRY: Duration = Duration::from_millis(50);

/// One connection's state as its own task writes it and the registry reads it.
#[derive(Debug)]
pub struct Tracker {
    epoch: Instant,
    /// A packed [`Snapshot`]; written only by the connection's task.
    state: AtomicU64,
    /// A packed [`Snapshot`] the registry chose this connection by, or 0.
    eviction: AtomicU64,
    /// Wakes the connection's task: its phase changed, it was chosen, or the drain moved on.
    wake: Notify,
}

impl Tracker {
    fn new(epoch: Instant) -> Tracker {
        let tracker = Tracker {
            epoch,
            state: AtomicU64::new(0),
            eviction: AtomicU64::new(0),
            wake: Notify::new(),
        };
        tracker.enter(Snapshot::new(Phase::Handshake, tracker.now_us()));
        tracker
    }

    /// Microseconds since the registry's epoch.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The epoch's instant for a time in microseconds (for timers).
    pub fn instant(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }

    pub fn snapshot(&self) -> Snapshot {
        // Only `enter` writes the state, always a valid snapshot; the fallback is never taken.
        Snapshot::unpack(self.state.load(Ordering::Acquire))
            .unwrap_or(Snapshot::new(Phase::InFlight, 0))
    }

    fn enter(&self, snapshot: Snapshot) {
        self.state.store(snapshot.pack(), Ordering::Release);
    }

    /// The TLS handshake finished.
    pub fn handshake_done(&self) {
        self.enter(Snapshot::new(Phase::AwaitingFirstRequest, self.now_us()));
    }

    /// Bytes were read. Only the first byte after an answer changes anything (it starts the head
    /// deadline), so the common case is one atomic load.
    pub fn bytes_arrived(&self) {
        let state = self.snapshot();
        if matches!(state.phase, Phase::Idle | Phase::AwaitingFirstRequest) {
            self.enter(state.after_bytes(self.now_us()));
            // The connection's timer may be set to the far idle deadline.
            self.wake.notify_one();
        }
    }

    /// A request head is complete and its request is being served.
    pub fn request_started(&self) {
        self.enter(Snapshot::new(Phase::InFlight, self.now_us()));
    }

    /// The answer to the request in flight is written (or abandoned).
    pub fn answer_done(&self) {
        self.enter(Snapshot::new(Phase::Idle, self.now_us()));
        // Once the delay is over an idle connection closes at once; the task must look.
        self.wake.notify_one();
    }

    /// Asks the connection to close, if it is still as `chosen` says when it looks.
    fn request_eviction(&self, chosen: Snapshot) {
        self.eviction.store(chosen.pack(), Ordering::Release);
        self.wake.notify_one();
    }

    /// The eviction asked for since the last call, if any.
    pub fn take_eviction(&self) -> Option<Snapshot> {
        Snapshot::unpack(self.eviction.swap(0, Ordering::AcqRel))
    }

    /// Resolves when something changed for this connection (a wake-up is never lost: one that
    /// comes while nobody waits is kept for the next wait).
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// The registry of open webhook connections.
#[derive(Debug)]
pub struct Connections {
    epoch: Instant,
    pub limits: Limits,
    slots: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Tracker>>>,
    next_id: AtomicU64,
    /// From the moment shutdown begins: every answer carries `Connection: close`.
    draining: AtomicBool,
    /// From the end of the shutdown delay: idle connections close.
    closing_idle: AtomicBool,
    all_closed: Notify,
}

/// A connection's place in the registry; dropping it (when the connection's task ends) frees the
/// slot.
#[derive(Debug)]
pub struct Registered {
    id: u64,
    pub tracker: Arc<Tracker>,
    connections: Arc<Connections>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.connections.open();
        open.remove(&self.id);
        if open.is_empty() {
            self.connections.all_closed.notify_waiters();
        }
    }
}

impl Connections {
    pub fn new(max_connections: usize, limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            epoch: Instant::now(),
            limits,
            slots: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            closing_idle: AtomicBool::new(false),
            all_closed: Notify::new(),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Tracker>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is consistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection just accepted. At the limit, the connection idle longest is asked
    /// to close (see [`super::phase`]); when every connection is serving a request, this waits for
    /// one to finish.
    pub async fn admit(self: &Arc<Self>) -> Registered {
        let slot = loop {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                break slot;
            }
            let victim = {
                let open = self.open();
                longest_idle(open.iter().map(|(id, t)| (*id, t.snapshot())))
                    .and_then(|(id, chosen)| Some((open.get(&id)?.clone(), chosen)))
            };
            if let Some((tracker, chosen)) = victim {
                tracker.request_eviction(chosen);
            }
            tokio::select! {
                // The semaphore is never closed: an error cannot happen; look again if it did.
                slot = self.slots.clone().acquire_owned() => if let Ok(slot) = slot {
                    break slot;
                },
                _ = tokio::time::sleep(EVICTION_RETRY) => {}
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracker = Arc::new(Tracker::new(self.epoch));
        self.open().insert(id, tracker.clone());
        Registered {
            id,
            tracker,
            connections: self.clone(),
            _slot: slot,
        }
    }

    /// Shutdown began: from now on every answer says `Connection: close`.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The shutdown delay is over: idle connections close (the others once answered).
    pub fn close_idle(&self) {
        self.closing_idle.store(true, Ordering::SeqCst);
        for tracker in self.open().values() {
            tracker.wake.notify_one();
        }
    }

    pub fn closing_idle(&self) -> bool {
        self.closing_idle.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_count(&self) -> usize {
        self.open().len()
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            // Created before the check, so a close in between is not missed.
            let closed = self.all_closed.notified();
            if self.open().is_empty() {
                return;
            }
            closed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
    };

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_connection_is_asked_to_close() {
        let connections = Connections::new(2, LIMITS);
        let old = connections.admit().await;
        old.tracker.handshake_done();
        old.tracker.request_started();
        old.tracker.answer_done();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = connections.admit().await;
        busy.tracker.handshake_done();
        busy.tracker.request_started();
        assert_eq!(connections.open_count(), 2);

        let newcomer = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        // The idle one is asked, with the snapshot it was chosen by; the busy one never is.
        let asked = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                old.tracker.woken().await;
                if let Some(chosen) = old.tracker.take_eviction() {
                    return chosen;
                }
            }
        })
        .await
        .expect("the idle connection is asked to close");
        assert_eq!(asked, old.tracker.snapshot());
        assert_eq!(busy.tracker.take_eviction(), None);
        assert!(!newcomer.is_finished(), "admitted beyond the limit");

        // Once it has closed, the newcomer gets its slot.
        drop(old);
        let admitted = tokio::time::timeout(Duration::from_secs(5), newcomer)
            .await
            .expect("the newcomer is admitted once the idle connection closed")
            .unwrap();
        assert_eq!(connections.open_count(), 2);
        drop((admitted, busy));
        tokio::time::timeout(Duration::from_secs(5), connections.all_closed())
            .await
            .expect("all closed");
    }

    #[tokio::test]
    async fn when_every_connection_is_serving_a_newcomer_waits() {
        let connections = Connections::new(1, LIMITS);
        let busy = connections.admit().await;
        busy.tracker.handshake_done();
        busy.tracker.request_started();
        let newcomer = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        tokio::time::sleep(EVICTION_RETRY * 3).await;
        assert!(!newcomer.is_finished());
        assert_eq!(busy.tracker.take_eviction(), None);
        drop(busy);
        tokio::time::timeout(Duration::from_secs(5), newcomer)
            .await
            .expect("admitted once the request is done")
            .unwrap();
    }

    #[test]
    fn the_tracker_follows_a_connection_through_its_phases() {
        let tracker = Tracker::new(Instant::now());
        assert_eq!(tracker.snapshot().phase, Phase::Handshake);
        tracker.handshake_done();
        let first = tracker.snapshot();
        assert_eq!(first.phase, Phase::AwaitingFirstRequest);
        tracker.bytes_arrived();
        assert_eq!(
            tracker.snapshot(),
            Snapshot::new(Phase::ReadingHead, first.since_us)
        );
        tracker.request_started();
        assert_eq!(tracker.snapshot().phase, Phase::InFlight);
        tracker.bytes_arrived(); // the body
        assert_eq!(tracker.snapshot().phase, Phase::InFlight);
        tracker.answer_done();
        assert_eq!(tracker.snapshot().phase, Phase::Idle);
        tracker.bytes_arrived();
        assert_eq!(tracker.snapshot().phase, Phase::ReadingHead);
    }
}
