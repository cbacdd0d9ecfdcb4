//! One webhook connection from accept to close: the TLS handshake, then HTTP/1.1 under the deadlines
//! and the eviction rule of [`super::phase`], and its part in the drain. The connection's own task
//! decides, so that closing it never races what it is doing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::connections::{Connections, Registered, Tracker};
use super::gate::{self, Gated};
use super::http::AppState;
use super::log_limit::{LOG_WINDOW, LogLimiter};
use super::phase::{self, Next, Phase};
use super::tracked::{TrackedIo, TrackedService};
use super::{HANDSHAKE_TIMEOUT, handshake, http1_builder, tls};
use crate::metrics::{ConnectionClose, HandshakeFailure};

/// How long a graceful close may take (hyper writing the TLS close_notify) before the connection is
/// dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What every connection of the webhook listener shares.
pub struct Shared {
    pub acceptor: TlsAcceptor,
    pub router: Router,
    pub state: Arc<AppState>,
    pub connections: Arc<Connections>,
    /// TLS handshakes polled at once (see [`gate`]).
    handshakes: Arc<tokio::sync::Semaphore>,
    refusals: LogLimiter<HandshakeFailure>,
    closes: LogLimiter<ConnectionClose>,
}

impl Shared {
    pub fn new(
        acceptor: TlsAcceptor,
        router: Router,
        state: Arc<AppState>,
        connections: Arc<Connections>,
    ) -> Shared {
        Shared {
            acceptor,
            router,
            state,
            connections,
            handshakes: Arc::new(tokio::sync::Semaphore::new(gate::permits())),
            refusals: LogLimiter::new(LOG_WINDOW),
            closes: LogLimiter::new(LOG_WINDOW),
        }
    }

    fn refused(&self, peer: SocketAddr, error: &std::io::Error) {
        let reason = handshake::classify(error);
        self.state.metrics.tls_handshake_failed(reason);
        if let Some(suppressed) = self.refusals.admit(reason, Instant::now()) {
            tracing::warn!(
                peer = %peer,
                reason = reason.as_str(),
                error = %error,
                hint = handshake::hint(reason),
                suppressed,
                "TLS handshake refused"
            );
        }
    }

    fn closed(&self, peer: SocketAddr, reason: ConnectionClose) {
        self.state.metrics.connection_closed(reason);
        let why = match reason {
            // Ordinary: the client left a kept-alive connection unused, or shutdown ended it.
            ConnectionClose::IdleTimeout | ConnectionClose::Drained => {
                tracing::debug!(peer = %peer, reason = reason.as_str(), "closed an idle connection");
                return;
            }
            ConnectionClose::HeaderTimeout => {
                "closed a connection whose request head was not complete within --header-timeout"
            }
            ConnectionClose::Evicted => {
                "at --max-connections: closed the connection idle longest to admit a new one"
            }
        };
        if let Some(suppressed) = self.closes.admit(reason, Instant::now()) {
            tracing::warn!(
                peer = %peer,
                reason = reason.as_str(),
                open = self.connections.open_count(),
                suppressed,
                "{why}"
            );
        }
    }
}

/// What the connection does now, from its phase, the time, an eviction asked for, and the drain.
fn decide(connections: &Connections, tracker: &Tracker) -> Next {
    phase::next(
        tracker.snapshot(),
        tracker.now_us(),
        connections.limits,
        tracker.take_eviction(),
        connections.closing_idle(),
    )
}

/// Serves one accepted connection until it closes. `registered` holds its slot until then.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, registered: Registered) {
    let tracker = registered.tracker.clone();
    let Some(stream) = handshake(&shared, tcp, peer, &tracker).await else {
        return;
    };
    tracker.handshake_done();
    let service = TrackedService::new(
        shared.router.clone(),
        tracker.clone(),
        shared.connections.clone(),
    );
    let io = TokioIo::new(TrackedIo::new(stream, tracker.clone()));
    let mut conn = std::pin::pin!(http1_builder().serve_connection(io, service));
    let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;
    loop {
        match decide(&shared.connections, &tracker) {
            Next::Serve { until_us } => {
                let until = until_us.map(|us| tracker.instant(us));
                if until != armed {
                    if let Some(at) = until {
                        timer.as_mut().reset(at.into());
                    }
                    armed = until;
                }
                // `biased`: the connection is polled first, so whatever already arrived on it is
                // read (and its phase updated) before a deadline or a close request is judged.
                tokio::select! {
                    biased;
                    ended = conn.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    _ = timer.as_mut(), if armed.is_some() => armed = None,
                    _ = tracker.woken() => {}
                }
            }
            Next::Close(reason) => {
                shared.closed(peer, reason);
                if tracker.snapshot().phase == Phase::Idle {
                    // An idle connection is closed the polite way: hyper writes the TLS
                    // close_notify, so its client sees an orderly end, not a reset.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_WAIT, conn.as_mut()).await;
                }
                // Otherwise it has not sent a complete request head: nothing to finish.
                return;
            }
        }
    }
}

/// The TLS handshake, bounded by [`HANDSHAKE_TIMEOUT`] and gated so that a burst of handshakes
/// cannot take every runtime thread; a connection still handshaking may be chosen to make room.
async fn handshake(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
    tracker: &Tracker,
) -> Option<TlsStream<TcpStream>> {
    let mut accepting = std::pin::pin!(Gated::new(
        tls::accept_with_timeout(&shared.acceptor, tcp, HANDSHAKE_TIMEOUT),
        shared.handshakes.clone(),
    ));
    loop {
        tokio::select! {
            biased;
            done = accepting.as_mut() => return match done {
                Ok(stream) => Some(stream),
                Err(e) => {
                    shared.refused(peer, &e);
                    None
                }
            },
            _ = tracker.woken() => {
                if let Next::Close(reason) = decide(&shared.connections, tracker) {
                    shared.closed(peer, reason);
                    return None;
                }
            }
        }
    }
}
