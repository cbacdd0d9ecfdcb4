//! The stage-guard benchmark: stage-guard against a bare TLS server on the same stack, alternately, in one
//! run, on this machine. Writes the table to `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release --example bench              # full run, about 3 minutes
//! cargo run --release --example bench -- --quick   # about 1 minute, fewer samples
//! ```
//!
//! Options: `--quick`, `--rounds N` (A B rounds per scenario, default 3), `--only small|large|memory|start`
//! (repeatable; a partial run prints its table and leaves `BENCHMARKS.md` alone), `--seconds S` (length of
//! each throughput and latency window), `--out FILE`, `--no-build` (use the binaries already built),
//! `--against-bin PATH` (A/B of two stage-guard builds: PATH, another stage-guard binary, takes the
//! baseline's place; `BENCHMARKS.md` is left alone).
//!
//! `--replay DIR --to ADDR --ca FILE [--seconds S]` sends every file of DIR (a fuzz corpus) as a body over 64
//! connections for S seconds, to a server started by hand, to see what it keeps afterwards.
//!
//! `--send N --to ADDR --ca FILE [--large] [--baseline]` only sends N reviews of the benchmark's mix over one
//! connection to a server started by hand (for example under `valgrind --tool=callgrind`) and exits:
//! see "Where the time goes" in BENCHMARKS.md.

#[path = "bench/fixtures.rs"]
mod fixtures;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/markdown.rs"]
mod markdown;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use procs::{Kind, Setup};
use report::{MemorySample, RoundResult, Scenario};

/// The rate for the latency runs. Small reviews: SPEC 11's 1,000/s. Large reviews carry 1 MiB each, so the
/// rate is one a 2-core machine can sustain with room to spare (the target is only for small reviews).
const SMALL_RATE: f64 = 1000.0;
const LARGE_RATE: f64 = 100.0;
/// Connections for the throughput runs and for the latency runs.
const THROUGHPUT_CONNECTIONS: usize = 16;
const LATENCY_CONNECTIONS: usize = 16;
/// SPEC 11: memory "with 64 concurrent 1 MiB reviews".
const MEMORY_CONNECTIONS: usize = 64;
/// When resident memory is read again after the memory burst (from the moment its connections closed):
/// SPEC 11's idle target holds for a server that has just served a burst, not only for a fresh one.
pub const AFTER_BURST: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

struct Opts {
    quick: bool,
    rounds: usize,
    only: Vec<String>,
    out: PathBuf,
    build: bool,
    /// Overrides the length of the throughput and latency windows.
    seconds: Option<f64>,
    /// Another stage-guard build in the baseline's place (A/B of a change).
    against: Option<PathBuf>,
}

/// How long each phase runs.
pub struct Plan {
    warmup: Duration,
    throughput: Duration,
    latency_warmup: Duration,
    latency: Duration,
    memory: Duration,
    starts: usize,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut opts = Opts {
        quick: false,
        rounds: 3,
        only: Vec::new(),
        out: manifest_dir.join("BENCHMARKS.md"),
        build: true,
        seconds: None,
        against: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--no-build" => opts.build = false,
            "--rounds" => {
                opts.rounds = it
                    .next()
                    .context("--rounds N")?
                    .parse()
                    .context("--rounds N")?
            }
            "--only" => {
                let what = it.next().context("--only small|large|memory|start")?;
                if !["small", "large", "memory", "start"].contains(&what.as_str()) {
                    bail!("--only takes small, large, memory or start, not {what:?}");
                }
                opts.only.push(what);
            }
            "--seconds" => {
                let v: f64 = it
                    .next()
                    .context("--seconds S")?
                    .parse()
                    .context("--seconds S")?;
                if !(v > 0.0 && v < 3600.0) {
                    bail!("--seconds must be between 0 and 3600");
                }
                opts.seconds = Some(v);
            }
            "--against-bin" => {
                opts.against = Some(PathBuf::from(it.next().context("--against-bin PATH")?))
            }
            "--out" => opts.out = PathBuf::from(it.next().context("--out FILE")?),
            "--bench" => {} // `cargo bench` passes this to every target
            other => bail!("unknown argument {other:?} (see the top of examples/bench.rs)"),
        }
    }
    if opts.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    Ok(opts)
}

impl Opts {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == part)
    }

    fn plan(&self) -> Plan {
        let mut plan = self.base_plan();
        if let Some(s) = self.seconds {
            plan.throughput = Duration::from_secs_f64(s);
            plan.latency = Duration::from_secs_f64(s);
        }
        plan
    }

    fn base_plan(&self) -> Plan {
        if self.quick {
            Plan {
                warmup: Duration::from_millis(300),
                throughput: Duration::from_millis(1500),
                latency_warmup: Duration::from_millis(300),
                latency: Duration::from_millis(1500),
                memory: Duration::from_millis(1500),
                starts: 5,
            }
        } else {
            Plan {
                warmup: Duration::from_secs(1),
                throughput: Duration::from_secs(5),
                latency_warmup: Duration::from_millis(500),
                latency: Duration::from_secs(5),
                memory: Duration::from_secs(4),
                starts: 10,
            }
        }
    }
}

/// Builds the two servers with the cargo that runs this benchmark.
fn build(manifest_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building stage-guard and the baseline (release)…");
    let status = Command::new(cargo)
        .current_dir(manifest_dir)
        .args([
            "build",
            "--release",
            "--bin",
            "stage-guard",
            "--example",
            "bare_server",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(())
}

/// `--replay DIR --to ADDR --ca FILE [--seconds S]`: every file of DIR (a fuzz corpus) as a body, to
/// `/validate` and `/mutate` in turn, over 64 connections for S seconds (default 60), as a long fuzz run
/// against a server started by hand; prints the answers by status. RELIABILITY.md ("Memory").
fn replay(args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .with_context(|| format!("{flag} is required with --replay"))
    };
    let dir = PathBuf::from(value("--replay")?);
    let addr: std::net::SocketAddr = value("--to")?.parse().context("--to ADDR (ip:port)")?;
    let ca = std::fs::read(value("--ca")?).context("--ca FILE")?;
    let seconds: f64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args.get(i + 1).context("--seconds S")?.parse()?,
        None => 60.0,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut bodies = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = if i % 2 == 0 { "/validate" } else { "/mutate" };
        bodies.push(load::Prepared::raw(path, std::fs::read(f)?));
    }
    if bodies.is_empty() {
        bail!("{} holds no files", dir.display());
    }
    let bodies = Arc::new(bodies);
    let target = Arc::new(load::Target::new(addr, &ca, true)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stats = runtime.block_on(async {
        let senders = load::connect_all(&target, MEMORY_CONNECTIONS).await?;
        let window = load::Window::starting_now(Duration::ZERO, Duration::from_secs_f64(seconds));
        load::closed_loop(target.clone(), bodies.clone(), senders, window).await
    })?;
    println!(
        "{} bodies from {} files in {seconds} s: {} answered 200, others: {:?}",
        stats.ok + stats.errors,
        files.len(),
        stats.ok,
        stats.error_kinds
    );
    Ok(())
}

/// `--send N --to ADDR --ca FILE [--large] [--baseline]`: a fixed amount of work for a profiler, nothing measured.
fn send_only(args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .with_context(|| format!("{flag} is required with --send"))
    };
    let count: usize = value("--send")?.parse().context("--send N")?;
    let addr: std::net::SocketAddr = value("--to")?.parse().context("--to ADDR (ip:port)")?;
    let ca = std::fs::read(value("--ca")?).context("--ca FILE")?;
    let bytes = if args.iter().any(|a| a == "--large") {
        fixtures::LARGE_OBJECT_BYTES
    } else {
        fixtures::SMALL_OBJECT_BYTES
    };
    let prepared = load::prepare(&fixtures::templates(bytes));
    // The baseline answers a constant, so only stage-guard's uid echo is checked.
    let baseline = args.iter().any(|a| a == "--baseline");
    let target = load::Target::new(addr, &ca, !baseline)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ok = runtime.block_on(load::send_count(&target, &prepared, count))?;
    eprintln!("{ok} of {count} reviews answered");
    if ok != count {
        bail!("{} reviews were not answered as expected", count - ok);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--send") {
        return send_only(&args);
    }
    if args.iter().any(|a| a == "--replay") {
        return replay(&args);
    }
    let opts = parse_opts()?;
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if opts.build {
        build(&manifest_dir)?;
    }
    // This binary is target/<profile>/examples/bench; the servers sit next to it.
    let exe = std::env::current_exe()?;
    let examples_dir = exe
        .parent()
        .context("bench binary directory")?
        .to_path_buf();
    let profile_dir = examples_dir
        .parent()
        .context("target profile directory")?
        .to_path_buf();
    let work = tempfile::Builder::new()
        .prefix("stage-guard-bench")
        .tempdir()?;
    let setup = Setup {
        stage_guard_bin: profile_dir.join("stage-guard"),
        baseline_bin: opts
            .against
            .clone()
            .unwrap_or_else(|| examples_dir.join("bare_server")),
        baseline_is_stage_guard: opts.against.is_some(),
        cert_dir: work.path().join("certs"),
    };
    for bin in [&setup.stage_guard_bin, &setup.baseline_bin] {
        if !bin.exists() {
            bail!("{} is missing: build it or drop --no-build", bin.display());
        }
    }
    let plan = opts.plan();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // The first start writes the development certificates both servers then use.
    drop(procs::start(&setup, Kind::StageGuard)?);
    let ca_pem = std::fs::read(setup.cert_dir.join("ca.crt"))?;

    let machine_before = report::MachineCpu::now()?;
    let started_at = std::time::SystemTime::now();
    let load_before = report::loadavg();
    let mut results = report::Results::default();

    let scenarios = [
        (Scenario::Small, fixtures::SMALL_OBJECT_BYTES, SMALL_RATE),
        (Scenario::Large, fixtures::LARGE_OBJECT_BYTES, LARGE_RATE),
    ];
    for (scenario, object_bytes, rate) in scenarios {
        if !opts.wants(scenario.key()) {
            continue;
        }
        let templates = fixtures::templates(object_bytes);
        results
            .sizes
            .push((scenario, object_bytes, templates[0].len_with_uid()));
        let prepared = load::prepare(&templates);
        for round in 0..opts.rounds {
            for kind in [Kind::StageGuard, Kind::Baseline] {
                eprintln!(
                    "{} round {}/{}: {}",
                    scenario.key(),
                    round + 1,
                    opts.rounds,
                    kind.name()
                );
                let r =
                    runtime.block_on(run_round(&setup, &ca_pem, kind, &prepared, rate, &plan))?;
                eprintln!(
                    "  {:.0} req/s, {:.0} µs CPU/req, p50 {:.3} ms, p99 {:.3} ms at {rate}/s, errors {}",
                    r.throughput,
                    r.cpu_us_per_request,
                    r.latency_p50_ms,
                    r.latency_p99_ms,
                    r.errors
                );
                results.rounds.push((scenario, kind, r));
            }
        }
    }

    if opts.wants("memory") {
        let prepared = load::prepare(&fixtures::templates(fixtures::LARGE_OBJECT_BYTES));
        let varied = load::prepare(&fixtures::varied_templates());
        for round in 0..opts.rounds {
            for kind in [Kind::StageGuard, Kind::Baseline] {
                eprintln!(
                    "memory round {}/{}: {}",
                    round + 1,
                    opts.rounds,
                    kind.name()
                );
                let m = runtime
                    .block_on(run_memory(&setup, &ca_pem, kind, &prepared, &varied, &plan))?;
                eprintln!(
                    "  idle {:.1} MiB, peak {:.1} MiB under {MEMORY_CONNECTIONS} connections, after: {}",
                    m.idle_kib as f64 / 1024.0,
                    m.peak_kib as f64 / 1024.0,
                    m.after_kib
                        .iter()
                        .zip(AFTER_BURST)
                        .map(|(k, d)| format!(
                            "{:.1} MiB at {} s",
                            *k as f64 / 1024.0,
                            d.as_secs_f64()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                eprintln!(
                    "  after {} varied and broken bodies: {}",
                    m.varied_requests,
                    m.varied_after_kib
                        .iter()
                        .zip(AFTER_BURST)
                        .map(|(k, d)| format!(
                            "{:.1} MiB at {} s",
                            *k as f64 / 1024.0,
                            d.as_secs_f64()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                results.memory.push((kind, m));
            }
        }
    }

    if opts.wants("start") {
        for _ in 0..plan.starts {
            for kind in [Kind::StageGuard, Kind::Baseline] {
                let s = procs::start(&setup, kind)?;
                results.starts.push((kind, s.start_to_ready));
            }
        }
    }

    let machine_after = report::MachineCpu::now()?;
    let run = report::RunInfo {
        command: std::iter::once("cargo run --release --example bench".to_owned())
            .chain(std::env::args().skip(1).filter(|a| a != "--bench"))
            .collect::<Vec<_>>()
            .join(" "),
        started_at,
        load_before,
        load_after: report::loadavg(),
        other_cpu_cores: machine_after.other_cores_since(&machine_before),
        quick: opts.quick,
        rounds: opts.rounds,
        plan_text: report::plan_text(&plan),
        throughput_connections: THROUGHPUT_CONNECTIONS,
        latency_connections: LATENCY_CONNECTIONS,
        memory_connections: MEMORY_CONNECTIONS,
        small_rate: SMALL_RATE,
        large_rate: LARGE_RATE,
        against: opts.against.as_ref().map(|p| p.display().to_string()),
    };
    let table = report::render(&run, &results);
    println!("{table}");
    if opts.only.is_empty() && opts.against.is_none() {
        report::write_benchmarks_md(&opts.out, &table)?;
        eprintln!("wrote {}", opts.out.display());
    } else {
        eprintln!("partial or A/B run: {} left unchanged", opts.out.display());
    }
    Ok(())
}

/// One server, one scenario, one round: a closed-loop throughput run, then an open-loop latency run.
async fn run_round(
    setup: &Setup,
    ca_pem: &[u8],
    kind: Kind,
    prepared: &Arc<Vec<load::Prepared>>,
    rate: f64,
    plan: &Plan,
) -> anyhow::Result<RoundResult> {
    let mut server = procs::start(setup, kind)?;
    let target = Arc::new(load::Target::new(
        server.webhook,
        ca_pem,
        kind == Kind::StageGuard || setup.baseline_is_stage_guard,
    )?);

    let senders = load::connect_all(&target, THROUGHPUT_CONNECTIONS).await?;
    let window = load::Window::starting_now(plan.warmup, plan.throughput);
    let sampler = tokio::spawn(sample_cpu(server.pid, window));
    let closed = load::closed_loop(target.clone(), prepared.clone(), senders, window).await?;
    let (server_cpu, client_cpu) = sampler.await??;
    server.check_alive()?;

    let senders = load::connect_all(&target, LATENCY_CONNECTIONS).await?;
    let window = load::Window::starting_now(plan.latency_warmup, plan.latency);
    let open = load::open_loop(target.clone(), prepared.clone(), senders, rate, window).await?;
    server.check_alive()?;

    let secs = plan.throughput.as_secs_f64();
    let requests = closed.ok + closed.errors;
    Ok(RoundResult {
        throughput: closed.ok as f64 / secs,
        cpu_us_per_request: server_cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        server_cores: server_cpu.as_secs_f64() / secs,
        client_cores: client_cpu.as_secs_f64() / secs,
        closed_p50_ms: closed.percentile_ms(50.0),
        closed_p99_ms: closed.percentile_ms(99.0),
        latency_p50_ms: open.percentile_ms(50.0),
        latency_p99_ms: open.percentile_ms(99.0),
        latency_p999_ms: open.percentile_ms(99.9),
        latency_max_ms: open.hist.max() as f64 / 1000.0,
        latency_requests: open.ok + open.errors,
        latency_late: open.late,
        errors: closed.errors + open.errors,
        error_kinds: {
            let mut k = closed.error_kinds;
            for (e, n) in open.error_kinds {
                *k.entry(e).or_default() += n;
            }
            k
        },
        start_to_ready: server.start_to_ready,
    })
}

/// CPU time of the server and of this process inside the measured window.
async fn sample_cpu(pid: u32, window: load::Window) -> anyhow::Result<(Duration, Duration)> {
    let server = format!("/proc/{pid}/stat");
    let me = "/proc/self/stat";
    tokio::time::sleep_until(window.measure_from).await;
    let (s0, c0) = (procs::cpu_time_of(&server)?, procs::cpu_time_of(me)?);
    tokio::time::sleep_until(window.end).await;
    let (s1, c1) = (procs::cpu_time_of(&server)?, procs::cpu_time_of(me)?);
    Ok((s1.saturating_sub(s0), c1.saturating_sub(c0)))
}

/// VmRSS at each of [`AFTER_BURST`] from now (the burst's connections just closed).
async fn rss_after_burst(server: &procs::Server) -> anyhow::Result<Vec<u64>> {
    let burst_end = tokio::time::Instant::now();
    let mut kib = Vec::new();
    for after in AFTER_BURST {
        tokio::time::sleep_until(burst_end + after).await;
        kib.push(server.status_kib("VmRSS")?);
    }
    Ok(kib)
}

/// Resident memory of a fresh server idle, then its peak with 64 connections sending large reviews,
/// and what it keeps after that burst and after a second one of varied and broken bodies.
async fn run_memory(
    setup: &Setup,
    ca_pem: &[u8],
    kind: Kind,
    prepared: &Arc<Vec<load::Prepared>>,
    varied: &Arc<Vec<load::Prepared>>,
    plan: &Plan,
) -> anyhow::Result<MemorySample> {
    let mut server = procs::start(setup, kind)?;
    // Let start-up finish settling (the certificate watcher's first poll, lazy statics).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = server.status_kib("VmRSS")?;
    let target = Arc::new(load::Target::new(
        server.webhook,
        ca_pem,
        kind == Kind::StageGuard || setup.baseline_is_stage_guard,
    )?);
    let senders = load::connect_all(&target, MEMORY_CONNECTIONS).await?;
    let window = load::Window::starting_now(Duration::ZERO, plan.memory);
    let stats = load::closed_loop(target.clone(), prepared.clone(), senders, window).await?;
    server.check_alive()?;
    let peak_kib = server.status_kib("VmHWM")?;
    let threads = server.threads()?;
    let after_kib = rss_after_burst(&server).await?;
    // Then a longer burst as a fuzzer makes one: many sizes, half of them broken.
    let senders = load::connect_all(&target, MEMORY_CONNECTIONS).await?;
    let window = load::Window::starting_now(Duration::ZERO, plan.memory * 2);
    let varied = load::closed_loop(target, varied.clone(), senders, window).await?;
    server.check_alive()?;
    let varied_after_kib = rss_after_burst(&server).await?;
    Ok(MemorySample {
        idle_kib,
        peak_kib,
        after_kib,
        varied_after_kib,
        varied_requests: varied.ok + varied.errors,
        threads,
        requests: stats.ok,
        errors: stats.errors,
    })
}
