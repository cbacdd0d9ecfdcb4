//! The soak: two stage-guard replicas behind a Service-like balancer, 1,000 small reviews per second for
//! ten minutes, the serving certificate rotated every minute the way kubelet updates a mounted Secret,
//! and one replica sent SIGTERM half-way through (and started again once it has exited, as a
//! Deployment replaces a pod). Prints a line per interval (requests, errors, p50/p99/max latency, each
//! replica's resident memory) and a summary; RELIABILITY.md ("Soak") has a real run.
//!
//! ```text
//! cargo run --release --example soak                 # 10 minutes
//! cargo run --release --example soak -- --minutes 2  # a short one
//! ```
//!
//! Options: `--minutes M` (default 10), `--rate R` (reviews/s, default 1000), `--report-every S`
//! (default 30), `--rotate-every S` (default 60), `--sigterm-at S` (default: half-way, between two
//! rotations), `--no-build`. Exit code 1 when a request failed outside the SIGTERM window or a replica
//! died; failures inside the window (from the signal until 5 s after the replica exited) are reported
//! apart, since they are what the drain has to remove.

#[path = "soak/certs.rs"]
mod certs;
#[path = "bench/fixtures.rs"]
mod fixtures;
#[path = "bench/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "soak/servers.rs"]
mod servers;
#[path = "soak/traffic.rs"]
mod traffic;

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use servers::Replica;
use traffic::{Endpoint, Endpoints, Tally, with_tally};

/// Kept-alive connections the traffic is spread over (the API server keeps a pool per webhook).
const CONNECTIONS: usize = 16;
/// How often the "kubelet" probes readiness; a replica that fails it leaves the Service at once.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Errors this long after the terminated replica exited still count as the SIGTERM's.
const SIGTERM_TAIL: Duration = Duration::from_secs(5);

struct Opts {
    minutes: f64,
    rate: f64,
    report_every: Duration,
    rotate_every: Duration,
    sigterm_at: Option<Duration>,
    build: bool,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        minutes: 10.0,
        rate: 1000.0,
        report_every: Duration::from_secs(30),
        rotate_every: Duration::from_secs(60),
        sigterm_at: None,
        build: true,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> anyhow::Result<f64> {
        let v: f64 = v
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a number"))?;
        if !(v > 0.0 && v < 100_000.0) {
            bail!("{flag} must be above 0 and below 100000");
        }
        Ok(v)
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => o.minutes = number(it.next(), "--minutes")?,
            "--rate" => o.rate = number(it.next(), "--rate")?,
            "--report-every" => {
                o.report_every = Duration::from_secs_f64(number(it.next(), "--report-every")?)
            }
            "--rotate-every" => {
                o.rotate_every = Duration::from_secs_f64(number(it.next(), "--rotate-every")?)
            }
            "--sigterm-at" => {
                o.sigterm_at = Some(Duration::from_secs_f64(number(it.next(), "--sigterm-at")?))
            }
            "--no-build" => o.build = false,
            "--bench" => {}
            other => bail!("unknown argument {other:?} (see the top of examples/soak.rs)"),
        }
    }
    Ok(o)
}

fn build() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building stage-guard (release)…");
    let status = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--release", "--bin", "stage-guard"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let opts = parse_opts()?;
    if opts.build {
        build()?;
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .context("target directory")?
        .join("stage-guard");
    if !bin.exists() {
        bail!("{} is missing: build it or drop --no-build", bin.display());
    }
    let work = tempfile::Builder::new()
        .prefix("stage-guard-soak")
        .tempdir()?;
    let mut volume = certs::SecretVolume::new(&bin, work.path())?;
    let ca = volume.ca_pem()?;
    let log = |name: &str| work.path().join(format!("{name}.log"));

    let length = Duration::from_secs_f64(opts.minutes * 60.0);
    // Half-way, and away from a rotation, so the two events are told apart.
    let sigterm_at = opts
        .sigterm_at
        .unwrap_or(length / 2 + opts.rotate_every / 4)
        .min(length);
    let load_before = loadavg();
    let started_at = SystemTime::now();
    println!(
        "soak: 2 replicas, {} reviews/s over {CONNECTIONS} connections for {:.1} min; certificate rotated every {} s; SIGTERM to replica b at {} s",
        opts.rate,
        opts.minutes,
        opts.rotate_every.as_secs_f64(),
        sigterm_at.as_secs_f64()
    );

    let mut replicas = vec![
        servers::start("a", &bin, &volume.cert(), &volume.key(), &log("a"))?,
        servers::start("b", &bin, &volume.cert(), &volume.key(), &log("b"))?,
    ];
    let endpoints = Arc::new(Endpoints::default());
    for r in &replicas {
        endpoints.add(endpoint(r, &ca)?);
    }
    let tally = traffic::shared_tally();
    let templates = load::prepare(&fixtures::templates(fixtures::SMALL_OBJECT_BYTES));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let start = Instant::now();
    let traffic = runtime.spawn(traffic::run(
        endpoints.clone(),
        templates,
        tally.clone(),
        opts.rate,
        CONNECTIONS,
        tokio::time::Instant::from_std(start + length),
    ));

    let mut report = Report::new();
    let mut next_report = opts.report_every;
    let mut next_rotation = opts.rotate_every;
    let mut next_probe = PROBE_EVERY;
    let mut rotations = 0;
    let mut terminated: Option<(Replica, Instant)> = None;
    let mut sigterm_sent = false;
    let mut sigterm_window_closes: Option<Instant> = None;
    let mut events: Vec<String> = Vec::new();
    let mut restarts = 0;
    let mut failure: Option<String> = None;
    while start.elapsed() < length {
        std::thread::sleep(Duration::from_millis(50));
        let t = start.elapsed();
        if t >= next_rotation {
            next_rotation += opts.rotate_every;
            volume.rotate()?;
            rotations += 1;
            events.push(format!("rotation {rotations}"));
        }
        if !sigterm_sent && t >= sigterm_at {
            sigterm_sent = true;
            let b = replicas.remove(1);
            with_tally(&tally, |t| t.sigterm_window_open = true);
            b.sigterm()?;
            events.push(format!("SIGTERM to {} (pid {})", b.name, b.pid));
            terminated = Some((b, Instant::now()));
        }
        if let Some((b, signalled)) = terminated.as_mut() {
            if !b.alive() {
                let code = b.wait_exit(Duration::from_secs(1))?;
                events.push(format!(
                    "{} exited ({code:?}) {:.1} s after SIGTERM",
                    b.name,
                    signalled.elapsed().as_secs_f64()
                ));
                endpoints.remove(&b.name);
                sigterm_window_closes = Some(Instant::now() + SIGTERM_TAIL);
                restarts += 1;
                let name = format!("b{restarts}");
                let fresh =
                    servers::start(&name, &bin, &volume.cert(), &volume.key(), &log(&name))?;
                endpoints.add(endpoint(&fresh, &ca)?);
                events.push(format!("{name} started and ready"));
                replicas.push(fresh);
                terminated = None;
            } else if signalled.elapsed() > Duration::from_secs(40) {
                failure = Some(format!("{} did not exit within 40 s of SIGTERM", b.name));
                break;
            }
        }
        if sigterm_window_closes.is_some_and(|at| Instant::now() >= at) {
            sigterm_window_closes = None;
            with_tally(&tally, |t| t.sigterm_window_open = false);
        }
        if t >= next_probe {
            next_probe += PROBE_EVERY;
            for r in replicas.iter_mut() {
                if !r.alive() {
                    failure = Some(format!("replica {} died", r.name));
                }
                endpoints.set_in_service(&r.name, servers::ready(r.admin));
            }
            if let Some((b, _)) = &terminated {
                endpoints.set_in_service(&b.name, servers::ready(b.admin));
            }
            if failure.is_some() {
                break;
            }
        }
        if t >= next_report {
            next_report += opts.report_every;
            let stretch = with_tally(&tally, Tally::take_interval);
            let running: Vec<&Replica> = replicas
                .iter()
                .chain(terminated.as_ref().map(|(b, _)| b))
                .collect();
            report.line(t, &stretch, &running, &std::mem::take(&mut events));
        }
    }
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(30), traffic).await;
    });
    // A rotation near the end is picked up at the replicas' next poll of the files (every 2 s).
    std::thread::sleep(Duration::from_secs(3));
    let stretch = with_tally(&tally, Tally::take_interval);
    if stretch.ok + stretch.error_count() > 0 || !events.is_empty() {
        let running: Vec<&Replica> = replicas.iter().collect();
        report.line(start.elapsed(), &stretch, &running, &events);
    }
    let reloads: Vec<String> = replicas
        .iter()
        .map(|r| {
            let count = |result: &str| {
                r.metric(&format!(
                    "stage_guard_tls_reloads_total{{result=\"{result}\"}}"
                ))
                .map_or_else(|| "?".to_owned(), |n| format!("{n:.0}"))
            };
            format!(
                "{} {} reloaded, {} refused",
                r.name,
                count("success"),
                count("failure")
            )
        })
        .collect();
    let summary = with_tally(&tally, |t| {
        summary(t, &opts, rotations, &reloads, &load_before, started_at)
    });
    println!("{}", report.text);
    println!("{summary}");
    if let Some(f) = failure {
        bail!("{f}");
    }
    let (other, at_sigterm) = with_tally(&tally, |t| {
        (
            t.errors_other.values().sum::<u64>(),
            t.errors_at_sigterm.values().sum::<u64>(),
        )
    });
    if other > 0 {
        bail!("{other} requests failed outside the SIGTERM window");
    }
    if at_sigterm > 0 {
        eprintln!("{at_sigterm} requests failed around the SIGTERM (see the summary)");
    }
    Ok(())
}

fn endpoint(r: &Replica, ca: &[u8]) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        name: r.name.clone(),
        target: Arc::new(load::Target::new(r.webhook, ca, true)?),
        in_service: true,
    })
}

/// The lines printed as the soak goes, kept to print again at the end as one table.
struct Report {
    text: String,
}

impl Report {
    fn new() -> Report {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "| t, s | requests | errors | p50, ms | p99, ms | max, ms | RSS per replica, MiB | events |"
        );
        let _ = writeln!(text, "|---:|---:|---:|---:|---:|---:|---|---|");
        Report { text }
    }

    fn line(
        &mut self,
        t: Duration,
        s: &traffic::Stretch,
        replicas: &[&Replica],
        events: &[String],
    ) {
        let rss: Vec<String> = replicas
            .iter()
            .map(|r| match r.rss_mib() {
                Some(m) => format!("{} {m:.1}", r.name),
                None => format!("{} -", r.name),
            })
            .collect();
        let line = format!(
            "| {:.0} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} |",
            t.as_secs_f64(),
            s.ok + s.error_count(),
            s.error_count(),
            s.ms(0.5),
            s.ms(0.99),
            s.hist.max() as f64 / 1000.0,
            rss.join(", "),
            events.join("; ")
        );
        eprintln!("{line}");
        let _ = writeln!(self.text, "{line}");
    }
}

fn summary(
    t: &Tally,
    opts: &Opts,
    rotations: usize,
    reloads: &[String],
    load_before: &str,
    started_at: SystemTime,
) -> String {
    let total = &t.total;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "- Run: {} (UTC), {:.1} min at {} reviews/s, {} connections, 2 replicas",
        humantime::format_rfc3339_seconds(started_at),
        opts.minutes,
        opts.rate,
        CONNECTIONS
    );
    let _ = writeln!(
        o,
        "- Machine: {} cores; load average before {load_before}, after {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let _ = writeln!(
        o,
        "- Requests: {} answered, {} failed; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms",
        total.ok,
        total.error_count(),
        total.ms(0.5),
        total.ms(0.99),
        total.ms(0.999),
        total.hist.max() as f64 / 1000.0
    );
    let kinds = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, n)| format!("{n} × {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(
        o,
        "- Failed around the SIGTERM (from the signal to {} s after the replica exited): {}",
        SIGTERM_TAIL.as_secs(),
        kinds(&t.errors_at_sigterm)
    );
    let _ = writeln!(o, "- Failed at other times: {}", kinds(&t.errors_other));
    let _ = writeln!(
        o,
        "- Certificate rotations: {rotations}; reloads counted by the replicas running at the end: {}",
        reloads.join("; ")
    );
    o
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
