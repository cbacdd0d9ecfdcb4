//! Whether the monitor's view of the Workflows is current, for
//! `stage_guard_monitor_last_sync_timestamp_seconds`. Pure: the watch task reports what its stream
//! yields and when; the recompute task asks.
//!
//! The watcher yields nothing while a watch is healthy and quiet, and nothing either when it resumes
//! a watch after an error, so recovery cannot be seen directly. What can be seen: a watch that keeps
//! failing reports an error on every attempt, and attempts follow each other within the backoff's
//! longest wait (30 s) plus a connection attempt. So the view counts as current once the first list
//! is done, as long as no error came after the last event, or the last error is older than
//! [`QUIET_AFTER_ERROR`].

use std::time::{Duration, Instant};

/// How long after a watch error without a further one the watch counts as resumed: longer than the
/// backoff's longest wait (30 s) plus a connection attempt (30 s), with room for jitter.
pub const QUIET_AFTER_ERROR: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct SyncHealth {
    listed: bool,
    last_event: Option<Instant>,
    last_error: Option<Instant>,
}

impl SyncHealth {
    /// The stream yielded an event; `list_done` when it ends a (re)list.
    pub fn event(&mut self, at: Instant, list_done: bool) {
        self.listed |= list_done;
        self.last_event = Some(at);
    }

    /// The stream yielded an error.
    pub fn error(&mut self, at: Instant) {
        self.last_error = Some(at);
    }

    /// The first list is done: the store holds every Workflow.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// The view is current at `now` (see the module's comment).
    pub fn in_sync(&self, now: Instant) -> bool {
        if !self.listed {
            return false;
        }
        match (self.last_error, self.last_event) {
            (None, _) => true,
            (Some(error), Some(event)) if event >= error => true,
            (Some(error), _) => now.saturating_duration_since(error) >= QUIET_AFTER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_once_listed_until_an_error_then_after_an_event_or_a_quiet_spell() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut h = SyncHealth::default();
        assert!(!h.in_sync(at(0)));
        // Objects of the first list arrive before it is done.
        h.event(at(1), false);
        assert!(!h.listed() && !h.in_sync(at(1)));
        h.event(at(2), true);
        assert!(h.listed() && h.in_sync(at(2)));
        // Quiet: still current.
        assert!(h.in_sync(at(1_000)));
        // An error: not current until an event, or until no further error for a while.
        h.error(at(1_000));
        assert!(!h.in_sync(at(1_001)));
        assert!(!h.in_sync(at(1_000) + QUIET_AFTER_ERROR - Duration::from_secs(1)));
        assert!(h.in_sync(at(1_000) + QUIET_AFTER_ERROR));
        h.error(at(1_200));
        assert!(!h.in_sync(at(1_201)));
        h.event(at(1_205), false);
        assert!(h.in_sync(at(1_205)));
        // A failing first list is never current.
        let mut h = SyncHealth::default();
        h.error(at(0));
        assert!(!h.in_sync(at(10_000)));
    }
}
