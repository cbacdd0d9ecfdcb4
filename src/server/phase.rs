//! Where a webhook connection is in its life, and what follows from that (pure, no I/O): the
//! deadline it must meet next, whether it is closed now, and which connection makes room when the
//! connection limit is reached.
//!
//! The rules, and why:
//! - A request head must be complete within the header timeout: counted from the end of the TLS
//!   handshake for the first request, and from its first byte for a later one. A client that says
//!   nothing, or trickles its headers, is not a client the API server would be; it holds a slot.
//! - Between requests a kept-alive connection may idle for the idle timeout, well above the 90 s
//!   for which the API server reuses idle connections (SPEC 5); the header timeout never applies
//!   to that wait.
//! - A request in flight (head complete, answer not yet written) has no deadline here: the body
//!   read has its own, and the answer is ours to write.
//! - At the limit, the connection that has gone longest without progress is closed to admit the
//!   newcomer. Progress is the end of the handshake, the start of a request and the end of an
//!   answer; bytes of an unfinished head are not, so trickling headers does not look busy. A
//!   connection with a request in flight is never chosen.

use std::time::Duration;

use crate::metrics::ConnectionClose;

/// A connection's phase. The discriminants start at 1, so that no packed [`Snapshot`] is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Accepted; the TLS handshake is not done.
    Handshake = 1,
    /// TLS is up; no byte of the first request yet.
    AwaitingFirstRequest = 2,
    /// Bytes of a request head arrived; the head is not complete.
    ReadingHead = 3,
    /// A request is being served: its head was complete, its answer is not written yet.
    InFlight = 4,
    /// A request was answered; no byte of the next one yet.
    Idle = 5,
}

impl Phase {
    fn from_u8(value: u8) -> Option<Phase> {
        Some(match value {
            1 => Phase::Handshake,
            2 => Phase::AwaitingFirstRequest,
            3 => Phase::ReadingHead,
            4 => Phase::InFlight,
            5 => Phase::Idle,
            _ => return None,
        })
    }
}

/// A phase and the moment it began (microseconds since the connection registry's epoch). It packs
/// into one `u64`, so a connection's state is read and compared in one atomic step: a victim
/// chosen from a snapshot is closed only if its snapshot has not changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub since_us: u64,
}

impl Snapshot {
    pub fn new(phase: Phase, since_us: u64) -> Snapshot {
        Snapshot { phase, since_us }
    }

    /// 56 bits of microseconds last two thousand years.
    pub fn pack(self) -> u64 {
        (self.since_us << 8) | self.phase as u64
    }

    pub fn unpack(packed: u64) -> Option<Snapshot> {
        Some(Snapshot {
            phase: Phase::from_u8((packed & 0xff) as u8)?,
            since_us: packed >> 8,
        })
    }

    /// The phase after bytes were read from the connection: they begin a request head, or belong
    /// to the one under way. For the first request the deadline still counts from the handshake.
    pub fn after_bytes(self, now_us: u64) -> Snapshot {
        match self.phase {
            Phase::Idle => Snapshot::new(Phase::ReadingHead, now_us),
            Phase::AwaitingFirstRequest => Snapshot::new(Phase::ReadingHead, self.since_us),
            Phase::Handshake | Phase::ReadingHead | Phase::InFlight => self,
        }
    }
}

/// The connection deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// What a connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep serving; look again at `until` (microseconds since the epoch), or when woken.
    Serve { until_us: Option<u64> },
    /// Close it now, for this reason.
    Close(ConnectionClose),
}

/// What to do with a connection in `state` at `now_us`. `eviction` is the snapshot the registry
/// chose it by, if it asked for room; `closing_idle` is true once the shutdown delay is over.
pub fn next(
    state: Snapshot,
    now_us: u64,
    limits: Limits,
    eviction: Option<Snapshot>,
    closing_idle: bool,
) -> Next {
    // Chosen as idle longest, and nothing happened since: close it. Anything that happened in
    // between (a request begun or answered) makes it someone else's turn.
    if eviction == Some(state) && state.phase != Phase::InFlight {
        return Next::Close(ConnectionClose::Evicted);
    }
    let deadline = |timeout: Duration, reason: ConnectionClose| {
        let until_us = state
            .since_us
            .saturating_add(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX));
        if now_us >= until_us {
            Next::Close(reason)
        } else {
            Next::Serve {
                until_us: Some(until_us),
            }
        }
    };
    match state.phase {
        // The handshake has its own timeout; an answer in flight is ours to finish.
        Phase::Handshake | Phase::InFlight => Next::Serve { until_us: None },
        Phase::AwaitingFirstRequest | Phase::ReadingHead => {
            deadline(limits.header_timeout, ConnectionClose::HeaderTimeout)
        }
        Phase::Idle if closing_idle => Next::Close(ConnectionClose::Drained),
        Phase::Idle => deadline(limits.idle_timeout, ConnectionClose::IdleTimeout),
    }
}

/// The connection to close to make room: the one longest without progress, never one with a
/// request in flight. `None` when every connection is serving a request.
pub fn longest_idle<K>(
    connections: impl IntoIterator<Item = (K, Snapshot)>,
) -> Option<(K, Snapshot)> {
    connections
        .into_iter()
        .filter(|(_, s)| s.phase != Phase::InFlight)
        .min_by_key(|(_, s)| s.since_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
    };
    const S: u64 = 1_000_000;

    fn at(phase: Phase, since_s: u64) -> Snapshot {
        Snapshot::new(phase, since_s * S)
    }

    #[test]
    fn snapshots_pack_and_unpack_and_are_never_zero() {
        for phase in [
            Phase::Handshake,
            Phase::AwaitingFirstRequest,
            Phase::ReadingHead,
            Phase::InFlight,
            Phase::Idle,
        ] {
            for since_us in [0, 1, 123_456_789, (1 << 56) - 1] {
                let s = Snapshot::new(phase, since_us);
                assert_ne!(s.pack(), 0);
                assert_eq!(Snapshot::unpack(s.pack()), Some(s));
            }
        }
        assert_eq!(Snapshot::unpack(0), None);
        assert_eq!(Snapshot::unpack(0x1_06), None);
    }

    #[test]
    fn bytes_start_a_head_deadline_only_after_an_answer() {
        // After an answer: the head deadline counts from the first byte of the next request.
        assert_eq!(
            at(Phase::Idle, 5).after_bytes(70 * S),
            at(Phase::ReadingHead, 70)
        );
        // The first request's deadline counts from the handshake, bytes or not.
        assert_eq!(
            at(Phase::AwaitingFirstRequest, 5).after_bytes(9 * S),
            at(Phase::ReadingHead, 5)
        );
        // More bytes of a head, or a body, change nothing.
        for phase in [Phase::ReadingHead, Phase::InFlight, Phase::Handshake] {
            assert_eq!(at(phase, 5).after_bytes(9 * S), at(phase, 5));
        }
    }

    #[test]
    fn each_phase_has_its_deadline() {
        let serve_until = |s: u64| Next::Serve {
            until_us: Some(s * S),
        };
        let cases = [
            // (state, now in s, expected)
            (at(Phase::AwaitingFirstRequest, 100), 105, serve_until(110)),
            (
                at(Phase::AwaitingFirstRequest, 100),
                110,
                Next::Close(ConnectionClose::HeaderTimeout),
            ),
            (at(Phase::ReadingHead, 100), 109, serve_until(110)),
            (
                at(Phase::ReadingHead, 100),
                111,
                Next::Close(ConnectionClose::HeaderTimeout),
            ),
            // Idle between requests: far past the header timeout, within the idle timeout.
            (at(Phase::Idle, 100), 111, serve_until(220)),
            (at(Phase::Idle, 100), 219, serve_until(220)),
            (
                at(Phase::Idle, 100),
                220,
                Next::Close(ConnectionClose::IdleTimeout),
            ),
            // No deadline of ours while handshaking or serving a request, however long.
            (
                at(Phase::Handshake, 100),
                1_000,
                Next::Serve { until_us: None },
            ),
            (
                at(Phase::InFlight, 100),
                1_000,
                Next::Serve { until_us: None },
            ),
        ];
        for (state, now_s, want) in cases {
            assert_eq!(
                next(state, now_s * S, LIMITS, None, false),
                want,
                "{state:?} at {now_s} s"
            );
        }
    }

    #[test]
    fn once_the_delay_is_over_idle_connections_close_and_others_are_served() {
        assert_eq!(
            next(at(Phase::Idle, 100), 101 * S, LIMITS, None, true),
            Next::Close(ConnectionClose::Drained)
        );
        assert_eq!(
            next(at(Phase::InFlight, 100), 101 * S, LIMITS, None, true),
            Next::Serve { until_us: None }
        );
        // A connection that has not sent its request yet gets it answered (with Connection: close).
        assert_eq!(
            next(
                at(Phase::AwaitingFirstRequest, 100),
                101 * S,
                LIMITS,
                None,
                true
            ),
            Next::Serve {
                until_us: Some(110 * S)
            }
        );
    }

    #[test]
    fn an_eviction_holds_only_while_nothing_happened_since_the_choice() {
        let chosen = at(Phase::Idle, 100);
        assert_eq!(
            next(chosen, 101 * S, LIMITS, Some(chosen), false),
            Next::Close(ConnectionClose::Evicted)
        );
        // A request began or was answered since: declined.
        for now in [at(Phase::ReadingHead, 101), at(Phase::Idle, 101)] {
            assert_eq!(
                next(now, 101 * S, LIMITS, Some(chosen), false),
                Next::Serve {
                    until_us: Some(if now.phase == Phase::Idle {
                        221 * S
                    } else {
                        111 * S
                    })
                }
            );
        }
        // Never a request in flight, even with an unchanged snapshot.
        let serving = at(Phase::InFlight, 100);
        assert_eq!(
            next(serving, 101 * S, LIMITS, Some(serving), false),
            Next::Serve { until_us: None }
        );
    }

    #[test]
    fn the_longest_idle_connection_makes_room_never_one_in_flight() {
        let open = [
            ("api-server-pooled", at(Phase::Idle, 50)),
            ("serving-for-long", at(Phase::InFlight, 1)),
            ("silent", at(Phase::AwaitingFirstRequest, 20)),
            // Trickling bytes does not refresh a head's start.
            ("slow-headers", at(Phase::ReadingHead, 30)),
            ("handshaking", at(Phase::Handshake, 60)),
        ];
        assert_eq!(longest_idle(open).map(|(k, _)| k), Some("silent"));
        assert_eq!(
            longest_idle(open.into_iter().filter(|(k, _)| *k != "silent")).map(|(k, _)| k),
            Some("slow-headers")
        );
        assert_eq!(longest_idle([("busy", at(Phase::InFlight, 1))]), None);
        assert_eq!(longest_idle(Vec::<(&str, Snapshot)>::new()), None);
    }
}
