//! Starting the two servers as child processes, waiting until they are ready, and reading their CPU
//! time and memory from `/proc`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    /// Development certificates (`ca.crt`, `tls.crt`, `tls.key`), written by stage-guard on first start.
    pub cert_dir: PathBuf,
    /// Where server logs go.
    pub work_dir: PathBuf,
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub pid: u32,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
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
pub fn start(setup: &Setup, kind: Kind, tag: &str) -> anyhow::Result<Server> {
    // A port picked here may be taken before the server binds it; try again with others.
    let mut last = None;
    for _ in 0..3 {
        match try_start(setup, kind, tag) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{} did not start", kind.name())))
}

fn try_start(setup: &Setup, kind: Kind, tag: &str) -> anyhow::Result<Server> {
    let (webhook, admin) = (free_port()?, free_port()?);
    let log = setup.work_dir.join(format!("{}-{tag}.log", kind.name()));
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = match kind {
        Kind::StageGuard => {
            let mut c = Command::new(&setup.stage_guard_bin);
            c.arg("serve").arg("--dev-cert-dir").arg(&setup.cert_dir);
            c.args(["--log-format", "json", "--shutdown-delay", "0", "--shutdown-grace", "1"]);
            c
        }
        Kind::Baseline => {
            let mut c = Command::new(&setup.baseline_bin);
            c.arg("--tls-cert-file").arg(setup.cert_dir.join("tls.crt"));
            c.arg("--tls-key-file").arg(setup.cert_dir.join("tls.key"));
            c
        }
    };
    cmd.arg("--listen").arg(webhook.to_string());
    cmd.arg("--admin-listen").arg(admin.to_string());
    cmd.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);

    let spawned = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {}", kind.name()))?;
    let deadline = spawned + Duration::from_secs(10);
    loop {
        if ready(admin) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("{} exited with {status} before it was ready:\n{}", kind.name(), tail(&log));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} not ready within 10 s:\n{}", kind.name(), tail(&log));
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
    if s
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
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

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Server {
    /// Fails when the server has died (a crash under load must not pass as a slow run).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}:\n{}", self.kind.name(), tail(&self.log));
        }
        Ok(())
    }

    /// User + system CPU time of the whole process (all threads, finished ones included).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(&format!("/proc/{}/stat", self.pid))
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

pub fn cpu_time_of(stat_path: &str) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(stat_path)?;
    // The command name may hold spaces; fields after it are plain numbers.
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    Ok(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}
