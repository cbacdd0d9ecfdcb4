//! Lock-out: can one client keep everyone else out? It holds 1,023 idle and 200 slow-header TLS
//! connections (more than `--max-connections`' default of 1,024 together), reopening each one a
//! second after the server closes it, while a well-behaved client sends the benchmark's small
//! reviews at a fixed rate over new keep-alive connections, with the API server's 5 s budget per
//! request. Measured: the share of its requests answered and its latency, against the same client
//! on the same server before the attack (the quiet p99).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::load::{self, Prepared, Stats, Target};
use crate::{Build, Opts, closes, fixtures, procs};

/// The attack of the report: idle connections (TLS up, nothing sent) and slow ones (a request head
/// at one byte a second, never finished).
const IDLE_CONNECTIONS: usize = 1023;
const SLOW_CONNECTIONS: usize = 200;
/// The attacker's own bound on connecting (TCP and TLS); then it tries again.
const ATTACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the attack is given to take hold before the well-behaved client starts.
const ATTACK_SETTLE: Duration = Duration::from_secs(5);
/// The well-behaved client: keep-alive connections, as the API server keeps them.
const CLIENT_CONNECTIONS: usize = 16;
/// Its budget per request, from when it was due: the webhook configurations' `timeoutSeconds`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests due in the first second (new connections being set up) count as sent and answered,
/// but not in the latency percentiles.
const WARMUP: Duration = Duration::from_secs(1);

/// What the well-behaved client saw in one phase.
struct Phase {
    sent: u64,
    answered: u64,
    /// Latencies of the requests due after the warm-up.
    stats: Stats,
}

impl Phase {
    fn p(&self, q: f64) -> f64 {
        self.stats.percentile_ms(q)
    }
}

/// One round: a fresh server, quiet, then attacked.
struct Round {
    quiet: Phase,
    attacked: Phase,
    /// Attacker connections with TLS up, sampled through the attacked window: mean, min.
    held_mean: f64,
    held_min: usize,
    /// Attacker connections reopened after the server closed them, during the attacked window.
    reopened: u64,
    /// The server's closes during the attack, by reason (`None`: the build has no such metric).
    closes: Option<BTreeMap<String, f64>>,
    /// The server's CPU use (cores) in the quiet and in the attacked phase.
    cpu_quiet: f64,
    cpu_attacked: f64,
}

pub async fn run(opts: &Opts, builds: &[Build], ca_pem: &[u8]) -> anyhow::Result<String> {
    let prepared = load::prepare(&fixtures::templates(fixtures::SMALL_OBJECT_BYTES));
    let started_at = std::time::SystemTime::now();
    let load_before = crate::markdown::loadavg();
    let mut rounds: Vec<(usize, usize, Round)> = Vec::new();
    for round in 0..opts.rounds {
        for (b, build) in builds.iter().enumerate() {
            eprintln!(
                "lockout round {}/{}: {}",
                round + 1,
                opts.rounds,
                build.name
            );
            let r = one_round(opts, build, ca_pem, &prepared).await?;
            eprintln!(
                "  quiet {}/{} answered, p99 {:.3} ms; attacked {}/{} answered, p99 {:.3} ms; attacker held {:.0} (min {}), reopened {}; server CPU {:.2} / {:.2} cores",
                r.quiet.answered,
                r.quiet.sent,
                r.quiet.p(99.0),
                r.attacked.answered,
                r.attacked.sent,
                r.attacked.p(99.0),
                r.held_mean,
                r.held_min,
                r.reopened,
                r.cpu_quiet,
                r.cpu_attacked
            );
            rounds.push((b, round, r));
        }
    }
    Ok(render(opts, builds, &rounds, started_at, &load_before))
}

async fn one_round(
    opts: &Opts,
    build: &Build,
    ca_pem: &[u8],
    prepared: &Arc<Vec<Prepared>>,
) -> anyhow::Result<Round> {
    let mut server = procs::start(&build.setup, procs::Kind::StageGuard)?;
    let target = Arc::new(Target::new(server.webhook, ca_pem, true)?);
    let window = Duration::from_secs_f64(opts.seconds);

    let stat = format!("/proc/{}/stat", server.pid);
    let cpu = || procs::cpu_time_of(&stat);
    let (c0, t0) = (cpu()?, Instant::now());
    let quiet = steady_client(&target, prepared, opts.rate, window).await;
    let cpu_quiet = (cpu()? - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    server.check_alive()?;

    let before = closes(server.admin);
    let attack = Attack::start(&target, Duration::from_secs_f64(opts.reopen_after));
    tokio::time::sleep(ATTACK_SETTLE).await;
    let reopened_before = attack.reopened.load(Ordering::Relaxed);
    let sampler = tokio::spawn(sample_held(attack.held.clone(), window + WARMUP));
    let (c0, t0) = (cpu()?, Instant::now());
    let attacked = steady_client(&target, prepared, opts.rate, window).await;
    let cpu_attacked = (cpu()?.saturating_sub(c0)).as_secs_f64() / t0.elapsed().as_secs_f64();
    let (held_mean, held_min) = sampler.await?;
    let reopened = attack.reopened.load(Ordering::Relaxed) - reopened_before;
    let after = closes(server.admin);
    attack.stop().await;
    server.check_alive()?;
    let closes = match (before, after) {
        (Some(b), Some(a)) => Some(
            a.into_iter()
                .map(|(k, v)| {
                    let was = b.get(&k).copied().unwrap_or(0.0);
                    (k, v - was)
                })
                .collect(),
        ),
        _ => None,
    };
    Ok(Round {
        quiet,
        attacked,
        held_mean,
        held_min,
        reopened,
        closes,
        cpu_quiet,
        cpu_attacked,
    })
}

/// Mean and minimum of the attacker's open connections, sampled every 100 ms.
async fn sample_held(held: Arc<AtomicUsize>, length: Duration) -> (f64, usize) {
    let end = Instant::now() + length;
    let (mut sum, mut n, mut min) = (0usize, 0usize, usize::MAX);
    while Instant::now() < end {
        let h = held.load(Ordering::Relaxed);
        sum += h;
        n += 1;
        min = min.min(h);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sum as f64 / n.max(1) as f64, if n == 0 { 0 } else { min })
}

// === the well-behaved client ===

/// Open loop at `rate` over [`CLIENT_CONNECTIONS`] new keep-alive connections for `window`: request
/// `i` is due at `start + i/rate` on connection `i mod n`. A request counts as answered when a 200
/// echoing its uid arrives within [`REQUEST_TIMEOUT`] of when it was due; its latency counts from
/// when it was due if its connection was still busy, else from when it was sent.
async fn steady_client(
    target: &Arc<Target>,
    prepared: &Arc<Vec<Prepared>>,
    rate: f64,
    window: Duration,
) -> Phase {
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + window;
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut workers = Vec::new();
    for w in 0..CLIENT_CONNECTIONS {
        let (target, prepared) = (target.clone(), prepared.clone());
        workers.push(tokio::spawn(async move {
            let mut phase = Phase {
                sent: 0,
                answered: 0,
                stats: Stats::new(),
            };
            let mut sender: Option<load::Sender> = None;
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
                let sent = Instant::now();
                let template = &prepared[i % prepared.len()];
                let outcome = tokio::time::timeout_at(
                    due + REQUEST_TIMEOUT,
                    exchange(&mut sender, &target, template),
                )
                .await
                .unwrap_or_else(|_| Err("no answer within 5 s".into()));
                if outcome.is_err() {
                    // A connection that failed or stalled is not reused.
                    sender = None;
                }
                let done = Instant::now();
                phase.sent += 1;
                phase.answered += u64::from(outcome.is_ok());
                if due >= measure_from {
                    phase
                        .stats
                        .book(outcome, done - if late { due } else { sent });
                } else if let Err(kind) = outcome {
                    phase.stats.error(kind);
                }
                free_at = done;
                i += CLIENT_CONNECTIONS;
            }
            phase
        }));
    }
    let mut total = Phase {
        sent: 0,
        answered: 0,
        stats: Stats::new(),
    };
    for w in workers {
        if let Ok(p) = w.await {
            total.sent += p.sent;
            total.answered += p.answered;
            total.stats.merge(p.stats);
        }
    }
    total
}

/// One review on the worker's connection, opening one first if it has none.
async fn exchange(
    sender: &mut Option<load::Sender>,
    target: &Target,
    template: &Prepared,
) -> Result<(), String> {
    let connection = match sender {
        Some(s) => s,
        None => sender.insert(
            load::connect(target)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        ),
    };
    connection
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let (request, uid) = load::review_request(template);
    let response = connection
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    match load::answer_error(target, status, &body, &uid) {
        Some(kind) => Err(kind),
        None => Ok(()),
    }
}

// === the attacker ===

struct Attack {
    stop: watch::Sender<bool>,
    /// Connections with TLS up right now.
    held: Arc<AtomicUsize>,
    reopened: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Clone, Copy)]
enum Hold {
    /// Says nothing after the handshake.
    Idle,
    /// Sends a request head one byte a second, never finishing it.
    SlowHeaders,
}

impl Attack {
    /// The attacker runs on a thread and runtime of its own: its TLS handshakes come in bursts,
    /// and on the client's runtime they would delay the client's own requests, which is not what
    /// is measured (the server's share of the machine is). For the same reason the thread runs at
    /// the lowest CPU priority: in a cluster the attacker's side of each handshake is paid by
    /// another machine, and on two shared cores it would otherwise take turns with the client and
    /// the server. The attack's pressure is what the server sees, reported as connections held
    /// and reopened.
    fn start(target: &Arc<Target>, reopen_after: Duration) -> Attack {
        let (stop, stopped) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let reopened = Arc::new(AtomicU64::new(0));
        let (target, counters) = (target.clone(), (held.clone(), reopened.clone()));
        let thread = std::thread::spawn(move || {
            lowest_priority_for_this_thread();
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("the attacker's runtime did not start");
                return;
            };
            runtime.block_on(async move {
                let kinds = std::iter::repeat_n(Hold::Idle, IDLE_CONNECTIONS)
                    .chain(std::iter::repeat_n(Hold::SlowHeaders, SLOW_CONNECTIONS));
                let tasks: Vec<_> = kinds
                    .map(|kind| {
                        tokio::spawn(hold(
                            target.clone(),
                            kind,
                            reopen_after,
                            stopped.clone(),
                            counters.0.clone(),
                            counters.1.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
        });
        Attack {
            stop,
            held,
            reopened,
            thread,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Linux keeps a nice value per thread: `renice` of this thread's id lowers only the attacker.
/// Without `renice` the attack runs at normal priority, and the report says so.
fn lowest_priority_for_this_thread() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let lowered = tid.is_some_and(|tid| {
        std::process::Command::new("renice")
            .args(["-n", "19", "-p", &tid])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !lowered {
        eprintln!("the attacker's thread could not be reniced; it runs at normal priority");
    }
}

/// Resolves once the attack is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Holds one connection of `kind` until told to stop, reopening it after the server closes it.
async fn hold(
    target: Arc<Target>,
    kind: Hold,
    reopen_after: Duration,
    mut stop: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
    reopened: Arc<AtomicU64>,
) {
    let head = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(reopen_after) => {}
            }
            reopened.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let connected = tokio::select! {
            _ = stopped(&mut stop) => return,
            c = tokio::time::timeout(ATTACK_CONNECT_TIMEOUT, load::tls_connect(&target)) => c,
        };
        let Ok(Ok(mut tls)) = connected else {
            continue;
        };
        held.fetch_add(1, Ordering::Relaxed);
        let mut sent = 0usize;
        let mut buf = [0u8; 512];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => {
                    held.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                // Whatever the server does (close, reset, an error answer), this connection is over.
                _ = tls.read(&mut buf) => break,
                _ = tick.tick(), if matches!(kind, Hold::SlowHeaders) => {
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    sent += 1;
                    if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        held.fetch_sub(1, Ordering::Relaxed);
    }
}

// === the report ===

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn render(
    opts: &Opts,
    builds: &[Build],
    rounds: &[(usize, usize, Round)],
    started_at: std::time::SystemTime,
    load_before: &str,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "- Command: `{}`", crate::command_line());
    let _ = writeln!(
        o,
        "- Date: {}",
        humantime::format_rfc3339_seconds(started_at)
    );
    let _ = writeln!(o, "- Machine: {}", crate::markdown::machine());
    let _ = writeln!(
        o,
        "- Load average: {load_before} before, {} after",
        crate::markdown::loadavg()
    );
    let _ = writeln!(
        o,
        "- Method: per round a fresh server with the default `--max-connections` (1,024); the client sends small \
         reviews (~10 KiB) at {} req/s over {CLIENT_CONNECTIONS} new keep-alive connections for {} s after a \
         {} s warm-up, quiet, then again on new connections once the attack has held for {} s. The attack: \
         {IDLE_CONNECTIONS} idle and {SLOW_CONNECTIONS} slow-header TLS connections from the same machine (a thread of \
         its own at nice 19, standing in for another machine), each reopened {} s after the server closes it. Answered: a 200 echoing the uid within {} s of when the \
         request was due; latency percentiles over the requests due after the warm-up. {} rounds.",
        opts.rate,
        opts.seconds,
        WARMUP.as_secs(),
        ATTACK_SETTLE.as_secs(),
        opts.reopen_after,
        REQUEST_TIMEOUT.as_secs(),
        opts.rounds
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| build | round | quiet: answered / sent | quiet p50 / p99 ms | attacked: answered / sent | attacked p50 / p99 / max ms | p99 attacked / quiet | attacker connections up: mean (min) | reopened | server closes (evicted, header timeout) | server CPU, cores: quiet / attacked |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for (b, round, r) in rounds {
        let closes = match &r.closes {
            Some(c) => format!(
                "{:.0}, {:.0}",
                c.get("evicted").copied().unwrap_or(0.0),
                c.get("header_timeout").copied().unwrap_or(0.0)
            ),
            None => "(no metric)".into(),
        };
        let attacked = if r.attacked.stats.hist.is_empty() {
            "none answered".to_string()
        } else {
            format!(
                "{:.3} / {:.3} / {:.1}",
                r.attacked.p(50.0),
                r.attacked.p(99.0),
                r.attacked.stats.hist.max() as f64 / 1000.0
            )
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} / {} | {:.3} / {:.3} | {} / {} | {attacked} | {} | {:.0} ({}) | {} | {closes} | {:.2} / {:.2} |",
            builds[*b].name,
            round + 1,
            r.quiet.answered,
            r.quiet.sent,
            r.quiet.p(50.0),
            r.quiet.p(99.0),
            r.attacked.answered,
            r.attacked.sent,
            if r.attacked.stats.hist.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", r.attacked.p(99.0) / r.quiet.p(99.0))
            },
            r.held_mean,
            r.held_min,
            r.reopened,
            r.cpu_quiet,
            r.cpu_attacked,
        );
    }
    let _ = writeln!(o);
    for (b, build) in builds.iter().enumerate() {
        let of: Vec<&Round> = rounds
            .iter()
            .filter(|(x, _, _)| *x == b)
            .map(|(_, _, r)| r)
            .collect();
        let answered: u64 = of.iter().map(|r| r.attacked.answered).sum();
        let sent: u64 = of.iter().map(|r| r.attacked.sent).sum();
        let quiet_p99 = median(of.iter().map(|r| r.quiet.p(99.0)).collect());
        let attacked_p99 = median(
            of.iter()
                .filter(|r| !r.attacked.stats.hist.is_empty())
                .map(|r| r.attacked.p(99.0))
                .collect(),
        );
        let every = answered == sent;
        let within = attacked_p99 <= 2.0 * quiet_p99;
        let _ = writeln!(
            o,
            "- {}: under attack {answered} of {sent} requests answered ({}); p99 {} against {:.3} ms quiet (median over \
             the rounds): {}.",
            build.name,
            if every { "all" } else { "**not all**" },
            if attacked_p99.is_nan() {
                "none".to_string()
            } else {
                format!("{attacked_p99:.3} ms")
            },
            quiet_p99,
            if every && within {
                "**target met** (every request answered, p99 within 2x of quiet)"
            } else {
                "**target missed**"
            }
        );
    }
    let errors: BTreeMap<String, u64> = rounds
        .iter()
        .flat_map(|(b, _, r)| {
            r.attacked
                .stats
                .error_kinds
                .iter()
                .map(move |(k, n)| (format!("{}: {k}", builds[*b].name), *n))
        })
        .fold(BTreeMap::new(), |mut m, (k, n)| {
            *m.entry(k).or_default() += n;
            m
        });
    if !errors.is_empty() {
        let _ = writeln!(o, "- Failed requests under attack, by kind:");
        for (kind, n) in errors {
            let _ = writeln!(o, "  - {kind}: {n}");
        }
    }
    o
}
