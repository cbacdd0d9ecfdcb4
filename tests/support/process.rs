//! The stage-guard binary as a child process: ports learned from its JSON `listening` log lines,
//! output drained in background threads (kept for assertions), killed on drop.

use super::apiserver::{ApiServer, Transport};
use super::client::{HttpsConn, HttpsPool, TlsOptions, connect, http_get, tls_config};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test: `STAGE_GUARD_BIN` when set, else the one Cargo built for this package.
pub fn stage_guard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("STAGE_GUARD_BIN") {
        return PathBuf::from(path);
    }
    match option_env!("CARGO_BIN_EXE_stage-guard") {
        Some(path) => PathBuf::from(path),
        None => panic!("set STAGE_GUARD_BIN to the stage-guard binary"),
    }
}

/// A command for the binary with the caller's STAGE_GUARD_* and RUST_LOG settings removed, so the
/// environment cannot change what a test configures.
pub fn command() -> Command {
    let mut cmd = Command::new(stage_guard_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STAGE_GUARD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Output {
    lines: Vec<(Stream, String)>,
    closed: usize,
}

#[derive(Default)]
struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn drain(shared: Arc<Shared>, stream: Stream, pipe: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    shared.lock().lines.push((stream, line));
                    shared.changed.notify_all();
                }
            }
        }
        shared.lock().closed += 1;
        shared.changed.notify_all();
    });
}

/// Every output line so far, both streams.
fn output_lines(shared: &Shared) -> Vec<String> {
    shared.lock().lines.iter().map(|(_, l)| l.clone()).collect()
}

/// Looks a field up in a tracing JSON line: in `fields` (the contract), else at the top level.
pub fn log_field<'a>(line: &'a Value, key: &str) -> Option<&'a Value> {
    line.get("fields")
        .and_then(|f| f.get(key))
        .or_else(|| line.get(key))
}

pub struct WebhookBuilder {
    config_yaml: Option<String>,
    listen: String,
    admin_listen: String,
    args: Vec<String>,
}

impl WebhookBuilder {
    /// Writes the YAML to a file and passes `--config`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config_yaml = Some(yaml.to_string());
        self
    }

    /// The webhook listener's address (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// The admin listener's address (default `127.0.0.1:0`).
    pub fn admin_listen(mut self, addr: &str) -> Self {
        self.admin_listen = addr.to_string();
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn start(self) -> Webhook {
        Webhook::spawn(self)
    }
}

pub struct Webhook {
    child: Child,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    pub fn builder() -> WebhookBuilder {
        WebhookBuilder {
            config_yaml: None,
            listen: "127.0.0.1:0".to_string(),
            admin_listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
        }
    }

    /// The default configuration.
    pub fn start() -> Webhook {
        Self::builder().start()
    }

    pub fn with_config(yaml: &str) -> Webhook {
        Self::builder().config(yaml).start()
    }

    fn spawn(b: WebhookBuilder) -> Webhook {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_dir = dir.path().join("certs");
        let mut cmd = command();
        cmd.arg("serve")
            .args(["--listen", &b.listen, "--admin-listen", &b.admin_listen])
            .args(["--log-format", "json"])
            .arg("--dev-cert-dir")
            .arg(&cert_dir);
        if let Some(yaml) = &b.config_yaml {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, yaml).expect("write config");
            cmd.arg("--config").arg(&path);
        }
        cmd.args(&b.args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", stage_guard_bin().display()));
        let shared = Arc::new(Shared::default());
        drain(
            shared.clone(),
            Stream::Stdout,
            child.stdout.take().expect("stdout"),
        );
        drain(
            shared.clone(),
            Stream::Stderr,
            child.stderr.take().expect("stderr"),
        );

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (mut webhook, mut admin) = (None, None);
        loop {
            {
                let out = shared.lock();
                for (stream, line) in &out.lines {
                    let Ok(v) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    if *stream != Stream::Stderr
                        || log_field(&v, "message").and_then(Value::as_str) != Some("listening")
                    {
                        continue;
                    }
                    let addr = log_field(&v, "address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    match log_field(&v, "listener").and_then(Value::as_str) {
                        Some("webhook") => webhook = addr,
                        Some("admin") => admin = addr,
                        _ => {}
                    }
                }
            }
            if let (Some(w), Some(a)) = (webhook, admin) {
                return Webhook {
                    child,
                    shared,
                    dir,
                    webhook_addr: w,
                    admin_addr: a,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the drain threads pick up the last lines before reporting.
                std::thread::sleep(Duration::from_millis(200));
                let out = output_lines(&shared);
                panic!(
                    "stage-guard exited with {status} before listening; output:\n{}",
                    out.join("\n")
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = output_lines(&shared);
                panic!(
                    "no `listening` lines for both listeners within {STARTUP_TIMEOUT:?}; output:\n{}",
                    out.join("\n")
                );
            }
            let guard = shared.lock();
            let _ = shared
                .changed
                .wait_timeout(guard, Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.cert_dir().join("ca.crt")
    }

    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every output line so far (stdout and stderr interleaved as read).
    pub fn lines(&self) -> Vec<String> {
        output_lines(&self.shared)
    }

    /// The stderr lines that parse as JSON.
    pub fn log_values(&self) -> Vec<Value> {
        self.shared
            .lock()
            .lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stderr)
            .filter_map(|(_, l)| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) for a JSON log line matching `pred`.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.log_values().into_iter().find(|v| pred(v)) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let guard = self.shared.lock();
            let _ = self
                .shared
                .changed
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(100)));
        }
    }

    /// Sends a signal to the child (by its pid) with the system `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Output lines that report a panic (the process must never panic on input).
    pub fn panic_lines(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains("panicked"))
            .collect()
    }

    /// Waits (bounded) for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn tls_options(&self, opts: &TlsOptions) -> Arc<rustls::ClientConfig> {
        tls_config(&self.ca_file(), opts).expect("client TLS config")
    }

    /// A pool of connections as the API server keeps them.
    pub fn pool(&self) -> Arc<HttpsPool> {
        let opts = TlsOptions::default();
        Arc::new(HttpsPool::new(
            self.webhook_addr,
            self.tls_options(&opts),
            &opts.server_name,
        ))
    }

    /// One new connection with the given TLS options.
    pub async fn connect_with(&self, opts: &TlsOptions) -> HttpsConn {
        connect(self.webhook_addr, self.tls_options(opts), &opts.server_name)
            .await
            .expect("connect to the webhook listener")
    }

    pub async fn connect(&self) -> HttpsConn {
        self.connect_with(&TlsOptions::default()).await
    }

    /// An API server whose admission calls go to this process.
    pub fn api_server(&self) -> ApiServer {
        ApiServer::new(Transport::Https(self.pool()))
    }

    pub async fn admin_get(&self, path: &str) -> super::client::RawResponse {
        http_get(self.admin_addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the admin listener: {e}"))
    }
}
