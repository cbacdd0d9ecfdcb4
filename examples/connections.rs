//! Connection handling under attack and under shutdown, measured against the release build (and,
//! with `--against-bin`, another stage-guard build beside it, in the same run). The figures go to
//! `RELIABILITY.md` (sections "Lock-out" and "Drain") with `--write`.
//!
//! ```text
//! cargo run --release --example connections -- lockout [--rounds 3] [--rate 1000] [--seconds 10] [--reopen-after 1]
//! cargo run --release --example connections -- drain [--runs 20]
//! ```
//!
//! Common options: `--against-bin PATH` (another stage-guard binary, measured the same way, for
//! example the build of an older commit), `--no-build` (use the binaries already built), `--write`
//! (replace the section's figures in `RELIABILITY.md`).
//!
//! - `lockout` (`examples/connections/lockout.rs`): one client holds 1,023 idle and 200 slow-header
//!   TLS connections, reopening each a second after the server closes it, while a well-behaved
//!   client sends small reviews at a fixed rate over new keep-alive connections: how many of its
//!   requests are answered, and its p99 against its own on a quiet server.
//! - `drain` (`examples/connections/drain.rs`): 50 clients send small reviews back to back on
//!   kept-alive connections and the server gets SIGTERM: how many requests written after the
//!   signal get no answer.

#[allow(dead_code)]
#[path = "connections/drain.rs"]
mod drain;
#[path = "bench/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "bench/load.rs"]
mod load;
#[path = "connections/lockout.rs"]
mod lockout;
#[allow(dead_code)]
#[path = "bench/markdown.rs"]
mod markdown;
#[path = "bench/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// One build under test.
#[derive(Clone)]
pub struct Build {
    /// `this build` or the path given to `--against-bin`.
    pub name: String,
    pub setup: std::sync::Arc<procs::Setup>,
}

pub struct Opts {
    pub mode: String,
    pub against: Option<PathBuf>,
    pub build: bool,
    pub write: bool,
    pub rounds: usize,
    pub runs: usize,
    pub rate: f64,
    pub seconds: f64,
    pub reopen_after: f64,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mode = args
        .next()
        .context("usage: connections lockout|drain [options] (see examples/connections.rs)")?;
    if !["lockout", "drain"].contains(&mode.as_str()) {
        bail!("the mode is lockout or drain, not {mode:?}");
    }
    let mut opts = Opts {
        mode,
        against: None,
        build: true,
        write: false,
        rounds: 3,
        runs: 20,
        rate: 1000.0,
        seconds: 10.0,
        reopen_after: 1.0,
    };
    fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> anyhow::Result<T> {
        value
            .with_context(|| format!("{flag} takes a value"))?
            .parse()
            .map_err(|_| anyhow::anyhow!("{flag} takes a number"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--against-bin" => {
                opts.against = Some(PathBuf::from(args.next().context("--against-bin PATH")?))
            }
            "--no-build" => opts.build = false,
            "--write" => opts.write = true,
            "--rounds" => opts.rounds = number("--rounds", args.next())?,
            "--runs" => opts.runs = number("--runs", args.next())?,
            "--rate" => opts.rate = number("--rate", args.next())?,
            "--seconds" => opts.seconds = number("--seconds", args.next())?,
            "--reopen-after" => opts.reopen_after = number("--reopen-after", args.next())?,
            other => bail!("unknown argument {other:?} (see the top of examples/connections.rs)"),
        }
    }
    if !(0.0..=600.0).contains(&opts.reopen_after) {
        bail!("--reopen-after must be in [0, 600] seconds");
    }
    if opts.rounds == 0 || opts.runs == 0 {
        bail!("--rounds and --runs must be at least 1");
    }
    let rate_ok = opts.rate > 0.0 && opts.rate <= 100_000.0;
    let seconds_ok = (1.0..=600.0).contains(&opts.seconds);
    if !rate_ok || !seconds_ok {
        bail!("--rate must be in (0, 100000] and --seconds in [1, 600]");
    }
    Ok(opts)
}

/// Builds the release binary with the cargo that runs this example.
fn build(manifest_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building stage-guard (release)…");
    let status = Command::new(cargo)
        .current_dir(manifest_dir)
        .args(["build", "--release", "--bin", "stage-guard"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(())
}

/// The command line as run, for the report.
pub fn command_line() -> String {
    std::iter::once("cargo run --release --example connections --".to_owned())
        .chain(std::env::args().skip(1).filter(|a| a != "--bench"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    let opts = parse_opts()?;
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if opts.build {
        build(&manifest_dir)?;
    }
    // This binary is target/<profile>/examples/connections; the server sits beside `examples/`.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("target profile directory")?
        .to_path_buf();
    let work = tempfile::Builder::new()
        .prefix("stage-guard-connections")
        .tempdir()?;
    let this = profile_dir.join("stage-guard");
    let mut builds = vec![(String::from("this build"), this)];
    if let Some(other) = &opts.against {
        builds.push((other.display().to_string(), other.clone()));
    }
    let builds: Vec<Build> = builds
        .into_iter()
        .map(|(name, bin)| {
            if !bin.exists() {
                bail!("{} is missing: build it or drop --no-build", bin.display());
            }
            Ok(Build {
                name,
                setup: std::sync::Arc::new(procs::Setup {
                    stage_guard_bin: bin.clone(),
                    baseline_bin: bin,
                    baseline_is_stage_guard: true,
                    cert_dir: work.path().join("certs"),
                }),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    // The first start writes the development certificates every server then uses.
    drop(procs::start(&builds[0].setup, procs::Kind::StageGuard)?);
    let ca_pem = std::fs::read(work.path().join("certs").join("ca.crt"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (section, markdown) = match opts.mode.as_str() {
        "lockout" => (
            "lockout",
            runtime.block_on(lockout::run(&opts, &builds, &ca_pem))?,
        ),
        _ => (
            "drain",
            runtime.block_on(drain::run(&opts, &builds, &ca_pem))?,
        ),
    };
    println!("{markdown}");
    if opts.write {
        let path = manifest_dir.join("RELIABILITY.md");
        markdown::replace_block(
            &path,
            &format!(
                "<!-- {section}:begin (generated by `cargo run --release --example connections -- {section}`) -->"
            ),
            &format!("<!-- {section}:end -->"),
            &markdown,
        )?;
        eprintln!("wrote the {section} figures into {}", path.display());
    }
    Ok(())
}

/// The server's `stage_guard_connections_closed_total` for each reason, from its admin port (`None`
/// for a build without that metric).
pub fn closes(admin: std::net::SocketAddr) -> Option<std::collections::BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let prefix = "stage_guard_connections_closed_total{reason=\"";
    let found: std::collections::BTreeMap<String, f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.trim().parse().ok()?))
        })
        .collect();
    (!found.is_empty()).then_some(found)
}
