//! Refused TLS handshakes on the webhook listener: why (a small fixed set of reasons, for the metric
//! and the log, which [`super::log_limit`] keeps to one line per reason per window), and what an
//! operator can do about each.

use std::io;

use rustls::AlertDescription;

use crate::metrics::HandshakeFailure;

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
}
