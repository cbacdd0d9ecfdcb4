//! A log that says what happens to connections without letting a port scan, a misconfigured client
//! or an attack flood it: at most one line per kind of event per window, carrying the count of
//! those not logged. Used for refused TLS handshakes and for connections the server closes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per kind of event this often.
pub const LOG_WINDOW: Duration = Duration::from_secs(5);

/// One slot per kind: when it was last logged, and how many went unlogged since.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    last_logged: Option<Instant>,
    suppressed: u64,
}

/// Decides which events get a log line. `K` is a small fixed set of kinds (a metric's label
/// values), so the slots stay few.
#[derive(Debug)]
pub struct LogLimiter<K> {
    window: Duration,
    slots: Mutex<Vec<(K, Slot)>>,
}

impl<K: Copy + Eq> LogLimiter<K> {
    pub fn new(window: Duration) -> LogLimiter<K> {
        LogLimiter {
            window,
            slots: Mutex::new(Vec::new()),
        }
    }

    /// `Some(n)`: log this event, and say that `n` of the same kind went unlogged before it;
    /// `None`: a line for this kind was written less than a window ago.
    pub fn admit(&self, kind: K, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting: the counts are still
        // usable.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let index = match slots.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                slots.push((kind, Slot::default()));
                slots.len() - 1
            }
        };
        let slot = &mut slots[index].1;
        match slot.last_logged {
            Some(last) if now.saturating_duration_since(last) < self.window => {
                slot.suppressed += 1;
                None
            }
            _ => {
                let suppressed = slot.suppressed;
                *slot = Slot {
                    last_logged: Some(now),
                    suppressed: 0,
                };
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_window_with_the_count_of_the_others() {
        let limiter = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        assert_eq!(limiter.admit("not_tls", at(0)), Some(0));
        assert_eq!(limiter.admit("not_tls", at(100)), None);
        assert_eq!(limiter.admit("not_tls", at(4_999)), None);
        // Another kind has its own window.
        assert_eq!(limiter.admit("timeout", at(200)), Some(0));
        // The window is over: logged again, with the two that were not.
        assert_eq!(limiter.admit("not_tls", at(5_000)), Some(2));
        assert_eq!(limiter.admit("not_tls", at(5_001)), None);
        assert_eq!(limiter.admit("not_tls", at(60_000)), Some(1));
        assert_eq!(limiter.admit("not_tls", at(70_000)), Some(0));
    }
}
