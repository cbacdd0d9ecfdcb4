//! The two stage-guard replicas: started on free loopback ports with the mounted certificate, asked
//! whether they are ready (as kubelet's readiness probe), sent SIGTERM, waited for, and killed by PID
//! when the soak ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Replica {
    pub name: String,
    child: Child,
    pub pid: u32,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts `stage-guard serve` with the pod's shutdown settings (5 s delay, 20 s grace) and waits until
/// `/readyz` answers 200 (at most 10 s). Its logs go to `log`.
pub fn start(
    name: &str,
    bin: &Path,
    cert: &Path,
    key: &Path,
    log: &Path,
) -> anyhow::Result<Replica> {
    let (webhook, admin) = (free_port()?, free_port()?);
    let log_file = std::fs::File::create(log)?;
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .args(["--listen", &webhook.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--shutdown-delay", "5", "--shutdown-grace", "20"])
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(admin) {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited with {status} before it was ready (log: {})",
                log.display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} not ready within 10 s (log: {})", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Replica {
        name: name.to_owned(),
        pid: child.id(),
        child,
        webhook,
        admin,
    })
}

fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// `GET /readyz` answers 200: the endpoint is in the Service.
pub fn ready(admin: SocketAddr) -> bool {
    admin_get(admin, "/readyz").is_some_and(|t| t.starts_with("HTTP/1.1 200"))
}

impl Replica {
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        Ok(())
    }

    /// Waits (bounded) for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {limit:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory in MiB, if the process still runs.
    pub fn rss_mib(&self) -> Option<f64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    }

    /// One sample of a Prometheus series (the exact series text, labels included).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = admin_get(self.admin, "/metrics")?;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}
