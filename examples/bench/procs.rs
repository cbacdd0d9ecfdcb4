//! Starting the two servers as child processes, waiting until they are ready, and reading their CPU
//! time and memory from `/proc`.
//!
//! Shared with `examples/connections.rs` (through `#[path]`), which uses other parts of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    StageGuard,
    Baseline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::StageGuard => "stage-guard",
            Kind::Baseline => "baseline",
        }
    }
}

/// Paths the servers need.
pub struct Setup {
    pub stage_guard_bin: PathBuf,
    pub baseline_bin: PathBuf,
    /// A/B of two stage-guard builds: `baseline_bin` is another stage-guard, started like one.
    pub baseline_is_stage_guard: bool,
    /// Development certificates (`ca.crt`, `tls.crt`, `tls.key`), written by stage-guard on first start.
    pub cert_dir: PathBuf,
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub pid: u32,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    log: LogTail,
    /// From spawn to the first 200 on `/readyz`.
    pub start_to_ready: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port: bound, read, released. The server binds it a moment later.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Spawns `kind` and polls `/readyz` every millisecond until it answers 200.
pub fn start(setup: &Setup, kind: Kind) -> anyhow::Result<Server> {
    start_with(setup, kind, &[])
}

/// As [`start`], with more flags for a stage-guard; a flag given here replaces the default of the
/// same name (`--shutdown-delay`, `--shutdown-grace`).
pub fn start_with(setup: &Setup, kind: Kind, extra: &[&str]) -> anyhow::Result<Server> {
    // A port picked here may be taken before the server binds it; try again with others.
    let mut last = None;
    for _ in 0..3 {
        match try_start(setup, kind, extra) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{} did not start", kind.name())))
}

fn try_start(setup: &Setup, kind: Kind, extra: &[&str]) -> anyhow::Result<Server> {
    let (webhook, admin) = (free_port()?, free_port()?);
    let stage_guard_like = kind == Kind::StageGuard || setup.baseline_is_stage_guard;
    let mut cmd = match kind {
        _ if stage_guard_like => {
            let bin = if kind == Kind::StageGuard {
                &setup.stage_guard_bin
            } else {
                &setup.baseline_bin
            };
            let mut c = Command::new(bin);
            c.arg("serve").arg("--dev-cert-dir").arg(&setup.cert_dir);
            c.args(["--log-format", "json"]);
            for (flag, default) in [("--shutdown-delay", "0"), ("--shutdown-grace", "1")] {
                if !extra.contains(&flag) {
                    c.args([flag, default]);
                }
            }
            c.args(extra);
            c
        }
        _ => {
            let mut c = Command::new(&setup.baseline_bin);
            c.arg("--tls-cert-file").arg(setup.cert_dir.join("tls.crt"));
            c.arg("--tls-key-file").arg(setup.cert_dir.join("tls.key"));
            c
        }
    };
    cmd.arg("--listen").arg(webhook.to_string());
    cmd.arg("--admin-listen").arg(admin.to_string());
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let spawned = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", kind.name()))?;
    let log = LogTail::drain(&mut child);
    let deadline = spawned + Duration::from_secs(10);
    loop {
        if ready(admin) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited with {status} before it was ready:\n{}",
                kind.name(),
                log.text()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} not ready within 10 s:\n{}", kind.name(), log.text());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let start_to_ready = spawned.elapsed();
    Ok(Server {
        kind,
        pid: child.id(),
        child,
        webhook,
        admin,
        log,
        start_to_ready,
    })
}

/// `GET /readyz` answered 200.
fn ready(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.1 200")
}

/// A server's stderr, drained by a thread as a container runtime drains it (a log file on disk would
/// add the file system's stalls to the server's latency); the last lines are kept for error messages.
#[derive(Clone)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn drain(child: &mut Child) -> LogTail {
        let tail = LogTail(Arc::new(Mutex::new(VecDeque::new())));
        if let Some(stderr) = child.stderr.take() {
            let lines = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut kept = lines.0.lock().unwrap_or_else(PoisonError::into_inner);
                    if kept.len() == 10 {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        tail
    }

    fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Server {
    /// Fails when the server has died (a crash under load must not pass as a slow run).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}:\n{}",
                self.kind.name(),
                self.log.text()
            );
        }
        Ok(())
    }

    /// Sends a signal (`TERM`, `INT`) with the system's `kill`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed: {status}", self.pid);
        }
        Ok(())
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.log.text()
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        status_kib(self.pid, field)
    }

    /// Number of threads right now.
    pub fn threads(&self) -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        text.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .context("Threads in /proc/PID/status")
    }
}

/// Linux reports utime and stime in clock ticks of 1/100 s (USER_HZ) on every common architecture.
const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time of a process (all threads, finished ones included) from its `stat` file.
pub fn cpu_time_of(stat_path: &str) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(stat_path)?;
    // The command name may hold spaces; fields after it are plain numbers.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .context("utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .context("stime")?;
    Ok(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}
