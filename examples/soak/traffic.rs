//! Open-loop traffic at a fixed rate over keep-alive connections to the replicas "in the Service": a
//! new connection goes to the next replica whose readiness probe passed, as kube-proxy balances
//! connections; a kept-alive connection stays with its replica until that closes it. A request is sent
//! again only when its connection was closed before it could be written, as the API server's client
//! does; a request written and not answered is never retried (the API server does not retry a webhook
//! call): every failed request counts, filed under the SIGTERM window when it fails while that is open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::load::{self, Outcome, Prepared, Sender, Target};

/// A replica as the Service sees it.
pub struct Endpoint {
    pub name: String,
    pub target: Arc<Target>,
    pub in_service: bool,
}

#[derive(Default)]
pub struct Endpoints {
    list: Mutex<Vec<Endpoint>>,
    next: AtomicUsize,
}

impl Endpoints {
    pub fn add(&self, e: Endpoint) {
        lock(&self.list).push(e);
    }

    pub fn set_in_service(&self, name: &str, in_service: bool) {
        for e in lock(&self.list).iter_mut().filter(|e| e.name == name) {
            e.in_service = in_service;
        }
    }

    pub fn remove(&self, name: &str) {
        lock(&self.list).retain(|e| e.name != name);
    }

    /// The next replica in service, round robin.
    fn pick(&self) -> Option<Arc<Target>> {
        let list = lock(&self.list);
        let live: Vec<_> = list.iter().filter(|e| e.in_service).collect();
        if live.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(live[n % live.len()].target.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Requests of one stretch of time.
pub struct Stretch {
    /// Latency of each answered request, microseconds.
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Stretch {
    fn new() -> Stretch {
        Stretch {
            // Valid bounds (1 µs to 60 s, 3 digits): this cannot fail.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!()),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.hist.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Everything the traffic saw, shared with the reporter.
pub struct Tally {
    /// Since the last report line.
    pub interval: Stretch,
    pub total: Stretch,
    /// Errors while the SIGTERM window was open (from the signal until a few seconds after the
    /// replica exited), and all others.
    pub errors_at_sigterm: BTreeMap<String, u64>,
    pub errors_other: BTreeMap<String, u64>,
    pub sigterm_window_open: bool,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            interval: Stretch::new(),
            total: Stretch::new(),
            errors_at_sigterm: BTreeMap::new(),
            errors_other: BTreeMap::new(),
            sigterm_window_open: false,
        }
    }

    /// The stretch since the last call, and a fresh one in its place.
    pub fn take_interval(&mut self) -> Stretch {
        std::mem::replace(&mut self.interval, Stretch::new())
    }

    fn book(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(latency) => {
                let us = (latency.as_micros() as u64).max(1);
                for s in [&mut self.interval, &mut self.total] {
                    s.ok += 1;
                    let _ = s.hist.record(us);
                }
            }
            Err(kind) => {
                for s in [&mut self.interval, &mut self.total] {
                    *s.errors.entry(kind.clone()).or_default() += 1;
                }
                let by_window = if self.sigterm_window_open {
                    &mut self.errors_at_sigterm
                } else {
                    &mut self.errors_other
                };
                *by_window.entry(kind).or_default() += 1;
            }
        }
    }
}

pub fn shared_tally() -> Arc<Mutex<Tally>> {
    Arc::new(Mutex::new(Tally::new()))
}

pub fn with_tally<R>(tally: &Mutex<Tally>, f: impl FnOnce(&mut Tally) -> R) -> R {
    f(&mut lock(tally))
}

/// Sends `rate` reviews per second until `end` over `connections` workers; request `i` is due at
/// `start + i / rate` on worker `i mod connections`. The latency of a request that had to wait for its
/// connection counts from when it was due (no coordinated omission).
pub async fn run(
    endpoints: Arc<Endpoints>,
    templates: Arc<Vec<Prepared>>,
    tally: Arc<Mutex<Tally>>,
    rate: f64,
    connections: usize,
    end: Instant,
) {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut workers = Vec::new();
    for w in 0..connections {
        let (endpoints, templates, tally) = (endpoints.clone(), templates.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let mut conn: Option<(Arc<Target>, Sender)> = None;
            let mut i = w;
            let mut free_at = start;
            loop {
                let due = start + period.mul_f64(i as f64);
                if due >= end {
                    break;
                }
                let late = free_at > due;
                if !late {
                    tokio::time::sleep_until(due).await;
                }
                let t = &templates[i % templates.len()];
                let sent = Instant::now();
                let result = exchange(&endpoints, &mut conn, t).await;
                let done = Instant::now();
                let latency = done - if late { due } else { sent };
                with_tally(&tally, |tally| tally.book(result.map(|()| latency)));
                free_at = done;
                i += connections;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// One request on the worker's connection, connecting first (to a replica in service) when it has
/// none; a broken connection is dropped, and the next request connects anew. A request the
/// connection was already closed for (a draining replica answered the last one with `Connection:
/// close`) is sent again once on a new connection, as the API server's client does: it never left.
async fn exchange(
    endpoints: &Endpoints,
    conn: &mut Option<(Arc<Target>, Sender)>,
    t: &Prepared,
) -> Result<(), String> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if conn.is_none() {
            let target = endpoints.pick().ok_or("no replica in service")?;
            let sender = tokio::time::timeout(Duration::from_secs(5), load::connect(&target))
                .await
                .map_err(|_| "connect: timed out".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
            *conn = Some((target, sender));
        }
        let Some((target, sender)) = conn.as_mut() else {
            return Err("no connection".into());
        };
        match load::send(sender, target, t).await {
            Outcome::Ok => return Ok(()),
            Outcome::Error(kind) => return Err(kind),
            Outcome::NotSent(kind) if attempts > 1 => {
                *conn = None;
                return Err(kind);
            }
            Outcome::NotSent(_) => *conn = None,
            Outcome::Broken(kind) => {
                *conn = None;
                return Err(kind);
            }
        }
    }
}
