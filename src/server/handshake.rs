//! Refused TLS handshakes on the webhook listener: why (a small fixed set of reasons, for the metric
//! and the log), and a log that says so without letting a port scan or a misconfigured client flood
//! it: at most one line per reason per [`LOG_WINDOW`], carrying the count of those not logged.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::AlertDescription;

use crate::metrics::HandshakeFailure;

/// At most one log line per reason this often.
pub const LOG_WINDOW: Duration = Duration::from_secs(5);

/// Why a handshake did not complete, from the error the TLS acceptor returned.
pub fn classify(error: &io::Error) -> HandshakeFailure {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return classify_tls(tls);
    }
    match error.kind() {
        io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
        _ => HandshakeFailure::Other,
    }
}

fn classify_tls(error: &rustls::Error) -> HandshakeFailure {
    use rustls::Error as E;
    use rustls::InvalidMessage as M;
    match error {
        // The first bytes are not a TLS record: `GET / HTTP/1.1` has no TLS content type.
        E::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion) => {
            HandshakeFailure::NotTls
        }
        E::NoCertificatesPresented => HandshakeFailure::NoClientCertificate,
        E::InvalidCertificate(_) => HandshakeFailure::BadClientCertificate,
        E::AlertReceived(alert) if is_certificate_alert(*alert) => {
            HandshakeFailure::ServerCertificateRejected
        }
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerIncompatible(_)
        | E::PeerMisbehaved(_)
        | E::NoApplicationProtocol
        | E::AlertReceived(_)
        | E::DecryptError
        | E::PeerSentOversizedRecord => HandshakeFailure::Protocol,
        _ => HandshakeFailure::Other,
    }
}

/// Alerts a client sends when it does not accept the server's certificate. Go sends
/// `bad_certificate` for every verification failure; rustls sends `unknown_ca` for an unknown
/// issuer and `decrypt_error` for a bad signature (a CA of the same name, such as one made again).
fn is_certificate_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::DecryptError
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
    )
}

/// What an operator can do about a reason, for the log line.
pub fn hint(reason: HandshakeFailure) -> &'static str {
    match reason {
        HandshakeFailure::Timeout => "the client sent no complete handshake in time",
        HandshakeFailure::NotTls => "the client speaks plain HTTP to the TLS port",
        HandshakeFailure::Protocol => {
            "no common TLS version (1.2, 1.3), cipher suite or application protocol (http/1.1)"
        }
        HandshakeFailure::NoClientCertificate => {
            "--client-ca-file requires a client certificate; is the API server's AdmissionConfiguration kubeconfig set?"
        }
        HandshakeFailure::BadClientCertificate => {
            "the client certificate is not signed by --client-ca-file, or has expired"
        }
        HandshakeFailure::ServerCertificateRejected => {
            "the client does not trust the serving certificate: does the webhook's caBundle match it?"
        }
        HandshakeFailure::Closed => "the client closed the connection during the handshake",
        HandshakeFailure::Other => "see the error",
    }
}

/// One slot per reason: when it was last logged, and how many failures went unlogged since.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    last_logged: Option<Instant>,
    suppressed: u64,
}

/// Decides which refused handshakes get a log line.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    slots: Mutex<[Slot; HandshakeFailure::ALL.len()]>,
}

impl LogLimiter {
    pub fn new(window: Duration) -> LogLimiter {
        LogLimiter {
            window,
            slots: Mutex::new([Slot::default(); HandshakeFailure::ALL.len()]),
        }
    }

    /// `Some(n)`: log this failure, and say that `n` of the same reason went unlogged before it;
    /// `None`: a line for this reason was written less than a window ago.
    pub fn admit(&self, reason: HandshakeFailure, now: Instant) -> Option<u64> {
        let index = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        // A poisoned lock only means another thread panicked while counting: the counts are still
        // usable.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut slots[index];
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
    use rustls::{CertificateError, InvalidMessage, PeerIncompatible};

    fn wrapped(error: rustls::Error) -> io::Error {
        // As tokio-rustls returns a TLS error from a handshake.
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn every_kind_of_refusal_has_its_reason() {
        let cases = [
            (
                wrapped(rustls::Error::InvalidMessage(
                    InvalidMessage::InvalidContentType,
                )),
                HandshakeFailure::NotTls,
            ),
            (
                wrapped(rustls::Error::NoCertificatesPresented),
                HandshakeFailure::NoClientCertificate,
            ),
            (
                wrapped(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                HandshakeFailure::BadClientCertificate,
            ),
            (
                wrapped(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                HandshakeFailure::ServerCertificateRejected,
            ),
            (
                wrapped(rustls::Error::AlertReceived(
                    AlertDescription::BadCertificate,
                )),
                HandshakeFailure::ServerCertificateRejected,
            ),
            (
                wrapped(rustls::Error::AlertReceived(AlertDescription::DecryptError)),
                HandshakeFailure::ServerCertificateRejected,
            ),
            (
                wrapped(rustls::Error::AlertReceived(
                    AlertDescription::ProtocolVersion,
                )),
                HandshakeFailure::Protocol,
            ),
            (
                wrapped(rustls::Error::PeerIncompatible(
                    PeerIncompatible::SupportedVersionsExtensionRequired,
                )),
                HandshakeFailure::Protocol,
            ),
            (
                wrapped(rustls::Error::NoApplicationProtocol),
                HandshakeFailure::Protocol,
            ),
            (
                wrapped(rustls::Error::General("x".into())),
                HandshakeFailure::Other,
            ),
            (
                io::Error::new(io::ErrorKind::TimedOut, "handshake not completed"),
                HandshakeFailure::Timeout,
            ),
            (
                io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
                HandshakeFailure::Closed,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                HandshakeFailure::Closed,
            ),
            (io::Error::other("something else"), HandshakeFailure::Other),
        ];
        for (error, want) in cases {
            assert_eq!(classify(&error), want, "{error}");
        }
        for reason in HandshakeFailure::ALL {
            assert!(!hint(reason).is_empty());
        }
    }

    #[test]
    fn one_line_per_reason_per_window_with_the_count_of_the_others() {
        let limiter = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        let not_tls = HandshakeFailure::NotTls;
        assert_eq!(limiter.admit(not_tls, at(0)), Some(0));
        assert_eq!(limiter.admit(not_tls, at(100)), None);
        assert_eq!(limiter.admit(not_tls, at(4_999)), None);
        // Another reason has its own window.
        assert_eq!(limiter.admit(HandshakeFailure::Timeout, at(200)), Some(0));
        // The window is over: logged again, with the two that were not.
        assert_eq!(limiter.admit(not_tls, at(5_000)), Some(2));
        assert_eq!(limiter.admit(not_tls, at(5_001)), None);
        assert_eq!(limiter.admit(not_tls, at(60_000)), Some(1));
        assert_eq!(limiter.admit(not_tls, at(70_000)), Some(0));
    }
}
