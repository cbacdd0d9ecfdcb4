//! The `serve` command: a TLS webhook listener and a plain admin listener, certificate reload, and the
//! drain-then-stop shutdown of SPEC 9.

pub mod handshake;
pub mod http;
pub mod listen;
pub mod reload;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::certs;
use crate::core::Policy;
use crate::metrics::Metrics;
use http::AppState;
use listen::{ListenAddr, ListenError};
use reload::{ReloadEvent, ReloadingCertResolver};

/// The API server keeps idle connections for up to 90 s; closing ours earlier would make it redial.
/// hyper's header-read timer also runs while a keep-alive connection waits for its next request, so it
/// doubles as the idle timeout and must be longer than that.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
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
    /// Bound on concurrent webhook connections; past it, new connections wait in the listen backlog.
    pub max_connections: usize,
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

    /// Serves until `shutdown` fires, then drains: `/readyz` is 503 at once, requests are still served
    /// for `shutdown_delay`, then the listener closes and in-flight requests get `shutdown_grace`.
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

        let (stop_tx, stop_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(
            webhook,
            tls,
            state.clone(),
            opts.max_connections,
            stop_rx,
        ));

        shutdown.await;
        state.ready.store(false, Ordering::SeqCst);
        tracing::info!(
            delay_s = opts.shutdown_delay.as_secs_f64(),
            "shutdown requested: readiness is off; still serving while endpoints drain"
        );
        tokio::time::sleep(opts.shutdown_delay).await;

        let _ = stop_tx.send(true);
        let graceful = match accept_task.await {
            Ok(graceful) => graceful,
            Err(e) => {
                tracing::error!(error = %e, "accept loop failed");
                GracefulShutdown::new()
            }
        };
        tracing::info!(
            grace_s = opts.shutdown_grace.as_secs_f64(),
            "no longer accepting; finishing in-flight requests"
        );
        if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing remaining connections");
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

/// The HTTP/1.1 connection settings of the webhook listener: keep-alive, with hyper's header-read timer
/// (which also runs while a connection idles between requests) set to [`IDLE_TIMEOUT`].
pub fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(IDLE_TIMEOUT);
    builder
}

/// Accepts TLS connections until told to stop; returns the watcher that can drain them.
async fn accept_loop(
    listeners: Vec<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = http::webhook_router(state.clone());
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let refusals = Arc::new(handshake::LogLimiter::new(handshake::LOG_WINDOW));
    loop {
        // Wait for a free slot before accepting: under overload, clients queue in the kernel backlog
        // instead of the process running out of memory or file descriptors.
        let permit = tokio::select! {
            _ = stopped(&mut stop) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let (state, refusals) = (state.clone(), refusals.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tls::accept_with_timeout(&acceptor, tcp, HANDSHAKE_TIMEOUT).await {
                Ok(s) => s,
                Err(e) => {
                    let reason = handshake::classify(&e);
                    state.metrics.tls_handshake_failed(reason);
                    if let Some(suppressed) = refusals.admit(reason, Instant::now()) {
                        tracing::warn!(
                            peer = %peer,
                            reason = reason.as_str(),
                            error = %e,
                            hint = handshake::hint(reason),
                            suppressed,
                            "TLS handshake refused"
                        );
                    }
                    return;
                }
            };
            let conn = http1_builder().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    graceful
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
