//! The suite's shared control plane and, per scenario, one stage-guard installed in front of it.
//!
//! Webhook configurations are cluster-wide, so scenarios run one at a time: each starts the built
//! `stage-guard serve` with certificates from `stage-guard certs`, registers it with the project's own
//! configurations from `deploy/base` (rendered by the real `kubectl kustomize`, only `clientConfig`
//! rewritten to a loopback `url:` with the CA bundle), waits until the API server calls it, and works
//! in a namespace of its own. Dropping the installation deletes the configurations and stops the
//! process.

use crate::support::fixtures::ConfigSpec;
use crate::support::process::Webhook;
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, Cli, CliOutput, ControlPlane, Options, Process, webhooks};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::support::fixtures::{
    HISTORY, LABEL_RESUBMITTED_FROM as RESUBMITTED_FROM, OVERRIDE, PR_APPROVED, PR_CREATED,
    READY_FOR_QA, STAGE_LABEL,
};

/// How long registration may take to reach the API server's admission chain.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every scenario shares: one control plane, started on first use (so a filtered run that
/// selects none of these scenarios starts nothing), and Argo's controller, started on first use.
pub struct Suite {
    control_plane: OnceLock<Result<ControlPlane, String>>,
    workflow_controller: Mutex<Option<Process>>,
    /// The webhook address the API server presents its client certificate to (mutual TLS).
    pub mtls_port: u16,
    namespaces: AtomicUsize,
}

impl Suite {
    pub fn new() -> Suite {
        Suite {
            control_plane: OnceLock::new(),
            workflow_controller: Mutex::new(None),
            mtls_port: stage_guard_testenv::process::free_port().unwrap_or(19443),
            namespaces: AtomicUsize::new(0),
        }
    }

    pub fn control_plane(&self) -> Result<&ControlPlane> {
        self.control_plane
            .get_or_init(|| {
                ControlPlane::start(Options {
                    webhook_client_cert_for: vec![format!("127.0.0.1:{}", self.mtls_port)],
                    ..Options::default()
                })
                .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the control plane did not start: {e}"))
    }

    /// Starts Argo's workflow-controller once; later calls find it running.
    pub fn ensure_workflow_controller(&self) -> Result<()> {
        let cp = self.control_plane()?;
        let mut slot = self
            .workflow_controller
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.as_mut()
            && running.exited().is_none()
        {
            return Ok(());
        }
        *slot = Some(cp.start_workflow_controller()?);
        Ok(())
    }

    /// The workflow-controller's log so far.
    pub fn workflow_controller_log(&self) -> String {
        self.workflow_controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Process::log)
            .unwrap_or_default()
    }

    /// A namespace no other scenario uses.
    pub fn fresh_namespace(&self, scenario: &str) -> Result<String> {
        let n = self.namespaces.fetch_add(1, Ordering::SeqCst);
        let short: String = scenario
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let ns = format!("e2e-{n}-{}", short.trim_matches('-'));
        self.control_plane()?
            .kubectl(ADMIN)?
            .args(["create", "namespace", &ns])
            .ok()?;
        Ok(ns)
    }

    /// Starts stage-guard and registers it. `scenario` names the namespace.
    pub fn install(&self, scenario: &str, setup: Setup) -> Result<Install<'_>> {
        let cp = self.control_plane()?;
        let certs = tempfile::tempdir()?;
        let tls = match setup.tls {
            Some(tls) => tls,
            None => Tls {
                ca_bundle: issue_serving_cert(certs.path())?,
                cert_file: certs.path().join("tls.crt"),
                key_file: certs.path().join("tls.key"),
            },
        };
        let mut builder = Webhook::builder()
            .listen(&setup.listen)
            .arg("--tls-cert-file")
            .arg(&tls.cert_file.to_string_lossy())
            .arg("--tls-key-file")
            .arg(&tls.key_file.to_string_lossy())
            // The API server's timeout is 5 s; drain fast so a scenario's restart does not wait.
            .args(&["--shutdown-delay", "0", "--shutdown-grace", "2"]);
        if let Some(yaml) = &setup.config {
            builder = builder.config(yaml);
        }
        for arg in &setup.args {
            builder = builder.arg(arg);
        }
        let webhook = builder.start();
        let install = Install {
            suite: self,
            cp,
            ns: match setup.namespace {
                Some(ns) => ns,
                None => self.fresh_namespace(scenario)?,
            },
            webhook,
            certs,
        };
        if setup.register {
            install.register(&tls.ca_bundle)?;
            if setup.wait_until_called {
                install.wait_until_called()?;
            }
        }
        Ok(install)
    }
}

/// How to start stage-guard for a scenario.
pub struct Setup {
    pub config: Option<String>,
    pub listen: String,
    pub args: Vec<String>,
    /// The serving certificate; by default a fresh one from `stage-guard certs`.
    pub tls: Option<Tls>,
    /// Register `deploy/base`'s configurations (off where the scenario registers it another way).
    pub register: bool,
    /// Wait until the API server calls the new webhook (off for scenarios where it cannot).
    pub wait_until_called: bool,
    /// Work in this namespace (Argo's controller manages `argo`) instead of a fresh one.
    pub namespace: Option<String>,
}

/// Serving certificate files and the base64 CA bundle that verifies them.
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_bundle: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: None,
            listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
            tls: None,
            register: true,
            wait_until_called: true,
            namespace: None,
        }
    }
}

impl Setup {
    pub fn config(spec: ConfigSpec) -> Setup {
        Setup {
            config: Some(spec.yaml()),
            ..Setup::default()
        }
    }
}

/// `stage-guard certs` into `dir` for a loopback webhook; returns the base64 CA bundle.
pub fn issue_serving_cert(dir: &Path) -> Result<String> {
    webhooks::issue_serving_cert(&crate::support::process::stage_guard_bin(), dir)
}

/// The two webhook configurations of `deploy/base` (rendered once per run).
pub fn rendered_webhook_configurations() -> Result<Vec<Value>> {
    static RENDERED: OnceLock<Result<Vec<Value>, String>> = OnceLock::new();
    RENDERED
        .get_or_init(|| webhooks::rendered().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The rendered configurations pointing at `https://127.0.0.1:PORT<path>`.
pub fn webhook_configurations_for(port: u16, ca_bundle: &str) -> Result<Vec<Value>> {
    webhooks::pointed_at(rendered_webhook_configurations()?, port, ca_bundle)
}

pub struct Install<'s> {
    pub suite: &'s Suite,
    pub cp: &'s ControlPlane,
    pub ns: String,
    pub webhook: Webhook,
    pub certs: tempfile::TempDir,
}

impl Drop for Install<'_> {
    fn drop(&mut self) {
        let _ = self.cp.unregister_stage_guard();
    }
}

impl Install<'_> {
    pub fn port(&self) -> u16 {
        self.webhook.webhook_addr.port()
    }

    /// Points the cluster's webhook configurations at this process with `ca_bundle`.
    pub fn register(&self, ca_bundle: &str) -> Result<()> {
        self.cp
            .apply(webhook_configurations_for(self.port(), ca_bundle)?)
    }

    /// Waits until a server-side dry-run CREATE reaches both webhooks of this process: the API
    /// server picks up new configurations asynchronously. The probe carries the stage label, or the
    /// objectSelector would not send it (whether its stage is one of this scenario's is no matter:
    /// both webhooks are called either way).
    pub fn wait_until_called(&self) -> Result<()> {
        let probe = workflow("registration-probe", &[(STAGE_LABEL, PR_CREATED)], &[]);
        let deadline = Instant::now() + ACTIVE_TIMEOUT;
        loop {
            let _ = self
                .kubectl(ADMIN)?
                .args(["create", "--dry-run=server", "-f", "-"])
                .stdin(probe.to_string())
                .run()?;
            let metrics = self.metrics()?;
            if requests(&metrics, "mutate") > 0.0 && requests(&metrics, "validate") > 0.0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the API server did not call stage-guard on 127.0.0.1:{} within {ACTIVE_TIMEOUT:?}",
                    self.port()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// kubectl as `user`, in this scenario's namespace.
    pub fn kubectl(&self, user: &str) -> Result<Cli> {
        Ok(self.cp.kubectl(user)?.args(["-n", &self.ns]))
    }

    /// `kubectl create -f -` of `object` as `user`.
    pub fn create(&self, user: &str, object: &Value) -> Result<CliOutput> {
        self.kubectl(user)?
            .args(["create", "-o", "json", "-f", "-"])
            .stdin(object.to_string())
            .run()
    }

    /// Creates a Workflow that must be admitted and returns the stored object.
    pub fn create_ok(&self, user: &str, object: &Value) -> Result<Value> {
        let out = self.create(user, object)?.ok()?;
        serde_json::from_str(&out).context("kubectl create -o json")
    }

    /// The stored Workflow.
    pub fn get(&self, name: &str) -> Result<Value> {
        self.kubectl(ADMIN)?
            .args(["get", "workflow", name, "-o", "json"])
            .json()
    }

    /// `kubectl patch workflow NAME --type TYPE -p PATCH` as `user`, printing the object as JSON.
    pub fn patch(&self, user: &str, name: &str, kind: &str, patch: &Value) -> Result<CliOutput> {
        self.kubectl(user)?
            .args([
                "patch", "workflow", name, "--type", kind, "-o", "json", "-p",
            ])
            .arg(patch.to_string())
            .run()
    }

    /// A merge patch of the stage label (a workflow step's `kubectl patch`).
    pub fn move_to(&self, user: &str, name: &str, stage: &str) -> Result<CliOutput> {
        self.patch(
            user,
            name,
            "merge",
            &json!({"metadata": {"labels": {STAGE_LABEL: stage}}}),
        )
    }

    /// The admin port's `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        http_get(self.webhook.admin_addr, "/metrics")
    }

    pub fn requests(&self, webhook: &str) -> Result<f64> {
        Ok(requests(&self.metrics()?, webhook))
    }

    /// The audit events of this scenario's namespace.
    pub fn audit_events(&self) -> Result<Vec<Value>> {
        Ok(self
            .cp
            .audit_events()?
            .into_iter()
            .filter(|e| e["objectRef"]["namespace"] == self.ns.as_str())
            .collect())
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.certs.path().to_path_buf()
    }
}

/// Polls `done` every 200 ms until it holds, for at most `timeout`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `stage_guard_admission_requests_total` of one webhook, every operation and decision.
pub fn requests(metrics: &str, webhook: &str) -> f64 {
    crate::support::checks::metric_sum(
        metrics,
        "stage_guard_admission_requests_total",
        &[("webhook", webhook)],
    )
}

/// A minimal Argo Workflow: one suspend step, so nothing would need a Pod.
pub fn workflow(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
    let mut metadata = json!({"name": name});
    if !labels.is_empty() {
        metadata["labels"] = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
    }
    if !annotations.is_empty() {
        metadata["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "suspend": {}}]},
    })
}

/// A Workflow at `stage` (or unlabelled).
pub fn workflow_at(name: &str, stage: Option<&str>) -> Value {
    match stage {
        Some(s) => workflow(name, &[(STAGE_LABEL, s)], &[]),
        None => workflow(name, &[], &[]),
    }
}

pub fn stage_of(object: &Value) -> Option<String> {
    object["metadata"]["labels"][STAGE_LABEL]
        .as_str()
        .map(str::to_string)
}

/// The stored history, parsed; empty when there is none.
pub fn history_of(object: &Value) -> Result<Vec<Value>> {
    match object["metadata"]["annotations"][HISTORY].as_str() {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).with_context(|| format!("history {text}")),
    }
}

/// One history entry's `(from, to, by)`.
pub type Move = (Option<String>, Option<String>, String);

/// `(from, to, by)` of each history entry.
pub fn moves(object: &Value) -> Result<Vec<Move>> {
    Ok(history_of(object)?
        .iter()
        .map(|e| {
            (
                e["from"].as_str().map(str::to_string),
                e["to"].as_str().map(str::to_string),
                e["by"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// One expected history step.
pub fn step(
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
) -> (Option<String>, Option<String>, String) {
    (
        from.map(str::to_string),
        to.map(str::to_string),
        by.to_string(),
    )
}

/// What kubectl prints when the validating webhook denies a write (SPEC 4.1).
pub fn denied_by_stage_guard(message: &str) -> String {
    format!(
        "Error from server (Forbidden): admission webhook \"validate.stage-guard.io\" denied the request: {message}"
    )
}

/// What `kubectl create -f -` prints when the validating webhook denies the create.
pub fn create_denied_by_stage_guard(message: &str) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"validate.stage-guard.io\" denied the request: {message}"
    )
}

/// Fails unless the command failed with exactly `expected` on stderr (one line).
pub fn expect_error(out: &CliOutput, expected: &str) -> Result<()> {
    ensure!(
        !out.success(),
        "`{}` succeeded; expected: {expected}\nstdout: {}",
        out.command,
        out.stdout
    );
    ensure!(
        out.stderr.trim_end() == expected,
        "`{}` printed\n  {}\nexpected\n  {expected}",
        out.command,
        out.stderr.trim_end()
    );
    Ok(())
}

/// A plain HTTP GET on loopback (the admin listener), returning the body of a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0, so the body comes unchunked and the server closes the connection after it.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    ensure!(
        head.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {head}"
    );
    Ok(body.to_string())
}
