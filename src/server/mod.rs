//! The `serve` command: a TLS webhook listener and a plain admin listener, certificate reload, and the
//! drain-then-stop shutdown of SPEC 9.

pub mod connection;
pub mod connections;
pub mod gate;
pub mod handshake;
pub mod http;
pub mod listen;
pub mod log_limit;
pub mod phase;
pub mod reload;
pub mod tls;
pub mod tracked;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::certs;
use crate::core::Policy;
use crate::metrics::Metrics;
use connections::Connections;
use http::AppState;
use listen::{ListenAddr, ListenError};
use reload::{ReloadEvent, ReloadingCertResolver};

/// How long a kept-alive connection may idle between requests. The API server reuses idle
/// connections for up to 90 s; closing ours earlier would make it redial (SPEC 5).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default `--header-timeout`: a request head (the first after the handshake, or one begun
/// later) must be complete this soon. The API server sends a head in one write.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not finished the TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are re-read (SPEC 6 asks for new certificates within 10 s).
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Everything `serve` needs, already parsed.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: ListenAddr,
    pub admin_listen: ListenAddr,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub dev_cert_dir: PathBuf,
    pub max_body_bytes: usize,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// Bound on concurrent webhook connections; at it, the connection idle longest makes room.
    pub max_connections: usize,
    /// Deadline for a request head (see [`phase`]).
    pub header_timeout: Duration,
}

/// A start-up problem: bad certificates or an address that cannot be bound. The process exits 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("development certificates: {0}")]
    DevCertificates(crate::certs::CertError),
    #[error("--tls-cert-file and --tls-key-file go together: give both or neither")]
    HalfAPair,
    #[error(transparent)]
    Certificate(#[from] crate::pem::PemError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// The certificate files to serve and watch.
struct CertSource {
    cert: PathBuf,
    key: PathBuf,
}

fn cert_source(opts: &ServeOptions) -> Result<CertSource, StartError> {
    match (&opts.tls_cert_file, &opts.tls_key_file) {
        (Some(cert), Some(key)) => Ok(CertSource {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => {
            let dev =
                certs::ensure_dev_certs(&opts.dev_cert_dir).map_err(StartError::DevCertificates)?;
            tracing::warn!(
                ca = %dev.ca_path.display(),
                generated = dev.generated,
                "serving development certificates from {}: for development only; trust {} to call the webhook",
                opts.dev_cert_dir.display(),
                dev.ca_path.display()
            );
            Ok(CertSource {
                cert: dev.cert_path,
                key: dev.key_path,
            })
        }
        _ => Err(StartError::HalfAPair),
    }
}

/// A bound server, ready to run. Binding is separate from running so start-up errors surface before
/// the process reports ready.
pub struct Server {
    opts: ServeOptions,
    state: Arc<AppState>,
    resolver: Arc<ReloadingCertResolver>,
    certs: CertSource,
    tls: Arc<rustls::ServerConfig>,
    /// One listener per address `--listen` resolves to, all on one port; the same for the admin.
    webhook: Vec<TcpListener>,
    admin: Vec<TcpListener>,
}

impl Server {
    /// Checks the certificates and binds both listeners.
    pub async fn bind(opts: ServeOptions, policy: Policy) -> Result<Server, StartError> {
        // A name that does not resolve stops the start before any certificate is made.
        opts.listen.resolve("--listen").await?;
        opts.admin_listen.resolve("--admin-listen").await?;
        let certs = cert_source(&opts)?;
        let loaded = crate::pem::load_certified_key(&certs.cert, &certs.key)?;
        let metrics = Metrics::new(&policy);
        metrics.set_cert_not_after(loaded.not_after_unix);
        let resolver = Arc::new(ReloadingCertResolver::new(loaded));
        let tls = tls::server_config(resolver.clone(), opts.client_ca_file.as_deref())?;

        let webhook = opts.listen.bind("--listen").await?;
        let admin = opts.admin_listen.bind("--admin-listen").await?;
        let state = Arc::new(AppState::new(policy, metrics, opts.max_body_bytes));
        Ok(Server {
            opts,
            state,
            resolver,
            certs,
            tls,
            webhook,
            admin,
        })
    }

    /// Serves until `shutdown` fires, then drains: `/readyz` is 503 and every answer carries
    /// `Connection: close` at once, new connections are still served for `shutdown_delay`, then the
    /// listener and the idle connections close, and the open ones get `shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Server {
            opts,
            state,
            resolver,
            certs,
            tls,
            webhook,
            admin,
        } = self;

        let watcher = {
            let state = state.clone();
            tokio::spawn(reload::watch_cert_files(
                resolver,
                certs.cert.clone(),
                certs.key.clone(),
                CERT_POLL_INTERVAL,
                move |event| match event {
                    ReloadEvent::Reloaded { not_after_unix } => {
                        state.metrics.tls_reload(true, Some(not_after_unix))
                    }
                    ReloadEvent::Failed { .. } => state.metrics.tls_reload(false, None),
                },
            ))
        };

        let (stop_admin_tx, stop_admin_rx) = watch::channel(false);
        let mut admin_tasks = Vec::new();
        for listener in admin {
            let address = listener.local_addr()?;
            let mut stop = stop_admin_rx.clone();
            admin_tasks.push(tokio::spawn(
                axum::serve(listener, http::admin_router(state.clone()))
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .into_future(),
            ));
            tracing::info!(listener = "admin", %address, "listening");
        }
        // Ready before the "listening" lines: whoever reads them (a test, an operator) may ask /readyz
        // at once, and both listeners are bound already (connections wait in the backlog until the
        // accept loop below takes them).
        state.ready.store(true, Ordering::SeqCst);
        for listener in &webhook {
            tracing::info!(listener = "webhook", address = %listener.local_addr()?, "listening");
        }

        let connections = Connections::new(
            opts.max_connections,
            phase::Limits {
                header_timeout: opts.header_timeout,
                idle_timeout: IDLE_TIMEOUT,
            },
        );
        let shared = Arc::new(connection::Shared::new(
            tokio_rustls::TlsAcceptor::from(tls),
            http::webhook_router(state.clone()),
            state.clone(),
            connections.clone(),
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(webhook, shared, stop_rx));

        shutdown.await;
        state.ready.store(false, Ordering::SeqCst);
        // Clients keep reusing their connections while endpoints drain; each answer from now on
        // tells its client to stop (and the connection closes once it is written), so clients
        // move to new connections, which other replicas take once endpoints have caught up.
        connections.begin_drain();
        tracing::info!(
            delay_s = opts.shutdown_delay.as_secs_f64(),
            "shutdown requested: readiness is off; answers carry Connection: close; still serving while endpoints drain"
        );
        tokio::time::sleep(opts.shutdown_delay).await;

        let _ = stop_tx.send(true);
        if let Err(e) = accept_task.await {
            tracing::error!(error = %e, "accept loop failed");
        }
        // What is left open: connections accepted but not yet asked (they get their request
        // answered, with Connection: close), requests in flight (finished), and connections nobody
        // used during the whole delay. Only those idle ones are closed, gracefully. HTTP/1.1 cannot
        // refuse a request politely (it has no GOAWAY), so a request a client writes on a
        // connection after it was closed, before the close_notify reached it, is lost: nothing a
        // server does prevents that. What keeps it from happening: connections in use were told by
        // their last answer, so they are not among those closed here; these have been idle for the
        // whole delay; and each is closed by its own task after reading whatever had arrived on it
        // (see `connection::serve`), so a request already received is answered, not dropped.
        connections.close_idle();
        tracing::info!(
            grace_s = opts.shutdown_grace.as_secs_f64(),
            open = connections.open_count(),
            "no longer accepting; idle connections closed; answering requests on open connections"
        );
        if tokio::time::timeout(opts.shutdown_grace, connections.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.open_count(),
                "shutdown grace period over; closing remaining connections"
            );
        }
        watcher.abort();
        let _ = stop_admin_tx.send(true);
        for task in admin_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The HTTP/1.1 connection settings of the webhook listener: keep-alive. hyper's header-read timer
/// stays off: it also runs while a connection idles between requests, so it cannot be both the short
/// header deadline and the long idle timeout; [`connection::serve`] keeps both.
pub fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    builder
}

/// Accepts TLS connections until told to stop. At `--max-connections`, the connection idle longest
/// makes room for the newcomer, so a client holding idle or slow connections cannot lock others
/// out; only when every connection is serving a request does a newcomer wait.
async fn accept_loop(
    listeners: Vec<TcpListener>,
    shared: Arc<connection::Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = accept_any(&listeners) => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let registered = tokio::select! {
            _ = stopped(&mut stop) => break,
            registered = shared.connections.admit() => registered,
        };
        tokio::spawn(connection::serve(shared.clone(), tcp, peer, registered));
    }
}

/// The next connection on any of the listeners.
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for listener in listeners {
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
    .await
}

/// Resolves once the flag turns true (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// SIGTERM and SIGINT, caught from the moment [`ShutdownSignals::install`] returns. Installing them
/// before the listeners are bound matters: a signal that arrives between "listening" and the first
/// poll of a lazily registered handler would otherwise kill the process without a drain.
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Registers the handlers; needs a running Tokio runtime.
    pub fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }

    /// Resolves on the first signal; a second one exits the process at once.
    pub async fn first(mut self) {
        self.next().await;
        tokio::spawn(async move {
            self.next().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        });
    }
}
