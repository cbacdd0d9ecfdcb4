//! `stage-guard monitor`: where the Workflows are, as Prometheus gauges. It watches Workflows'
//! metadata (`watch`), counts them per pipeline and stage with the audit's rules
//! (`core::census`), and serves `/metrics`, `/livez` and `/readyz` on its admin port (`metrics`).
//! The counts are recomputed when a Workflow's stage, labels or history change, and on a timer,
//! since the time at a stage grows without any event.

pub mod metrics;
mod sync;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch as signal};

use crate::cluster::client::{ConnectError, Connection};
use crate::core::Policy;
use crate::core::census::Census;
use crate::server::http::{Admin, admin_router};
use crate::server::listen::{ListenAddr, ListenError};
use metrics::MonitorMetrics;
pub use sync::{QUIET_AFTER_ERROR, SyncHealth};
use watch::Watched;

/// At most one recompute per this long, however many Workflows change.
const MIN_RECOMPUTE_GAP: Duration = Duration::from_secs(1);

/// Which Workflows to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    /// `all`, or a namespace.
    pub fn parse(given: &str) -> Scope {
        if given == "all" {
            Scope::All
        } else {
            Scope::Namespace(given.to_owned())
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all namespaces"),
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
        }
    }
}

/// Everything `monitor` needs, already parsed.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub admin_listen: ListenAddr,
    pub connection: Connection,
    pub scope: Scope,
    pub refresh_interval: Duration,
}

/// A start-up problem: no client, or an address that cannot be bound. The process exits 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// What the tasks share.
pub struct Shared {
    policy: Policy,
    metrics: MonitorMetrics,
    /// Set once the first list has been counted; cleared when shutdown begins.
    ready: AtomicBool,
    health: Mutex<SyncHealth>,
    /// Something the census reads has changed.
    changed: Notify,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, SyncHealth> {
        // The guarded value is plain data, always consistent: a panic elsewhere cannot spoil it.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Admin for Shared {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

/// A connected, bound monitor, ready to run.
pub struct Monitor {
    opts: MonitorOptions,
    shared: Arc<Shared>,
    client: kube::Client,
    admin: Vec<TcpListener>,
}

impl Monitor {
    /// Makes the client (nothing is requested yet) and binds the admin listener.
    pub async fn start(opts: MonitorOptions, policy: Policy) -> Result<Monitor, StartError> {
        let client = opts.connection.connect().await?.client;
        let admin = opts.admin_listen.bind("--admin-listen").await?;
        let shared = Arc::new(Shared {
            metrics: MonitorMetrics::new(&policy),
            policy,
            ready: AtomicBool::new(false),
            health: Mutex::new(SyncHealth::default()),
            changed: Notify::new(),
        });
        Ok(Monitor {
            opts,
            shared,
            client,
            admin,
        })
    }

    /// Watches and serves until `shutdown` fires.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Monitor {
            opts,
            shared,
            client,
            admin,
        } = self;
        let (stop_tx, stop_rx) = signal::channel(false);
        let mut tasks = Vec::new();
        for listener in admin {
            let address = listener.local_addr()?;
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(
                axum::serve(listener, admin_router(shared.clone()))
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .into_future(),
            ));
            tracing::info!(listener = "admin", %address, "listening");
        }
        let (reader, writer) = watch::store();
        tracing::info!(scope = %opts.scope, refresh_s = opts.refresh_interval.as_secs_f64(), "watching Workflows");
        let watching = tokio::spawn(watch::watch(
            watch::api(client, &opts.scope),
            writer,
            shared.clone(),
        ));
        let counting = tokio::spawn(recompute_loop(
            shared.clone(),
            reader,
            opts.refresh_interval,
            stop_rx.clone(),
        ));

        shutdown.await;
        shared.ready.store(false, Ordering::SeqCst);
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
        watching.abort();
        let _ = counting.await;
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Recomputes the gauges when told something changed and every `interval`, once the first list is
/// in; the first recompute makes the monitor ready.
async fn recompute_loop(
    shared: Arc<Shared>,
    reader: Store<Watched>,
    interval: Duration,
    mut stop: signal::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = shared.changed.notified() => {}
            _ = ticker.tick() => {}
        }
        if !shared.health().listed() {
            continue;
        }
        let now = SystemTime::now();
        let started = Instant::now();
        let census = census_of(&shared.policy, &reader, now);
        shared.metrics.publish(&census);
        tracing::debug!(
            workflows = reader.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "recomputed"
        );
        if shared.health().in_sync(Instant::now()) {
            shared.metrics.synced(now);
        }
        if !shared.ready.swap(true, Ordering::SeqCst) {
            tracing::info!("first counts published; ready");
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(MIN_RECOMPUTE_GAP) => {}
        }
    }
}

/// The census of the store's Workflows.
fn census_of(policy: &Policy, reader: &Store<Watched>, now: SystemTime) -> Census {
    let workflows = reader.state();
    Census::of(policy, workflows.iter().map(|w| &w.0), now)
}
