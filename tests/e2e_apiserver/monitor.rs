//! `stage-guard monitor` against the real API server, as the shipped ServiceAccount: the RBAC of
//! `deploy/monitor` (rendered by the real `kubectl kustomize`) applied, a token for the account from
//! the API server's TokenRequest, and the built binary started with a kubeconfig holding that token.
//! Without the binding it is refused and stays unready; with it, it lists, watches and counts.
//!
//! Workflows are created and moved through stage-guard's webhooks (registered as everywhere in this
//! suite), and the monitor's gauges are read after each step: Workflows per pipeline and stage, the
//! oldest one's time there, the stuck ones (`stuck_after: 1s` at one stage), the findings for
//! planted inconsistent Workflows, and the last sync time. The webhook's own histogram of the time at a
//! stage is read after each move.

use crate::Scenario;
use crate::harness::*;
use crate::install::{copy_dir, repo_root};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, ARGO_WORKFLOW, Cli, ControlPlane, Process};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "counts_stages_stuck_and_findings_as_the_shipped_service_account",
    run: counts_stages_stuck_and_findings_as_the_shipped_service_account,
}];

/// The default stages, of which only `waiting-ready-for-qa` may get stuck, after a second; and a
/// second pipeline for the Workflows labelled `track: docs`, counted apart.
const CONFIG: &str = "label: current-stage
stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]
stuck_after: {waiting-ready-for-qa: 1s}
pipelines:
  - name: docs
    match: {labels: {track: docs}}
    stages: [draft, published]
override:
  groups: [system:masters]
";
const DOCS: &str = "docs";
const ACCOUNT_NS: &str = "stage-guard";
const ACCOUNT: &str = "stage-guard-monitor";
/// How long a change may take to show in the gauges: the watch event, then a recompute (at most one
/// a second, and one every `--refresh-interval 1`).
const SHOWS_WITHIN: Duration = Duration::from_secs(20);

fn counts_stages_stuck_and_findings_as_the_shipped_service_account(suite: &Suite) -> Result<()> {
    // The webhooks are registered only once the unknown-stage Workflow is planted: with them,
    // nothing could write it.
    let t = suite.install(
        "monitor",
        Setup {
            config: Some(CONFIG.to_string()),
            register: false,
            ..Setup::default()
        },
    )?;
    t.create_ok(
        ADMIN,
        &workflow_at("planted-unknown", Some("waiting-for-merge")),
    )?;
    let ca_bundle = std::fs::read_to_string(t.certs_dir().join("ca-bundle"))?;
    t.register(ca_bundle.trim())?;
    t.wait_until_called()?;
    // An unlabelled Workflow is never sent to the webhooks: its history can say anything.
    let forged = json!([
        {"from": null, "to": PR_CREATED, "at": "2026-11-26T09:22:46Z", "by": "bob"},
        {"from": PR_CREATED, "to": PR_APPROVED, "at": "2026-11-26T09:30:00Z", "by": "bob"},
    ])
    .to_string();
    t.create_ok(
        ADMIN,
        &workflow("planted-forged", &[], &[(HISTORY, forged.as_str())]),
    )?;

    let rbac = Rbac::shipped(t.cp)?;
    let result = with_rbac(&t, &rbac);
    let cleanup = rbac.delete(t.cp);
    result.and(cleanup)
}

fn with_rbac(t: &Install<'_>, rbac: &Rbac) -> Result<()> {
    let sa = format!("system:serviceaccount:{ACCOUNT_NS}:{ACCOUNT}");
    ensure!(
        !can(t.cp, &sa, "list", &t.ns)?,
        "{sa} may list Workflows before the binding"
    );
    let dir = tempfile::tempdir()?;
    let kubeconfig = service_account_kubeconfig(t.cp, dir.path())?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG)?;

    // Refused: it says so and is not ready.
    let mut monitor = Monitor::start(&kubeconfig, &config, &t.ns, dir.path())?;
    monitor
        .process
        .wait_for_log(Duration::from_secs(30), |log| log.contains("forbidden"))?;
    ensure!(
        status(monitor.admin, "/readyz")? == 503,
        "ready without being allowed to list"
    );
    ensure!(status(monitor.admin, "/livez")? == 200, "not live");

    // Allowed: the watcher's next attempt (with backoff) lists, and the first count makes it ready.
    rbac.bind(t.cp)?;
    wait_until(Duration::from_secs(60), "the monitor ready", || {
        Ok(status(monitor.admin, "/readyz")? == 200)
    })?;
    for verb in ["list", "watch"] {
        ensure!(
            can(t.cp, &sa, verb, &t.ns)?,
            "{sa} may not {verb} Workflows"
        );
        ensure!(
            can(t.cp, &sa, verb, "--all-namespaces")?,
            "{sa} may not {verb} Workflows in every namespace"
        );
    }
    for verb in ["get", "create", "update", "patch", "delete"] {
        ensure!(!can(t.cp, &sa, verb, &t.ns)?, "{sa} may {verb} Workflows");
    }
    ensure!(
        !t.cp
            .kubectl(ADMIN)?
            .args(["auth", "can-i", "list", "pods", "-A", "--as", &sa])
            .run()?
            .success(),
        "{sa} may list pods"
    );

    // The planted Workflows: one at an unknown stage, one unlabelled with a forged history.
    let started = unix_now();
    monitor.wait_for(
        "the planted Workflows",
        &[
            (workflows("unknown"), 1.0),
            (workflows(PR_CREATED), 0.0),
            (workflows(READY_FOR_QA), 0.0),
            (workflows(PR_APPROVED), 0.0),
            (in_pipeline(DOCS, "stage_guard_workflows", "draft"), 0.0),
            (in_pipeline(DOCS, "stage_guard_workflows", "unknown"), 0.0),
            (finding("unknown-stage"), 1.0),
            (finding("label-disagrees"), 2.0),
            (finding("history-not-a-path"), 1.0),
            (finding("history-unreadable"), 0.0),
            (finding("stuck"), 0.0),
        ],
    )?;
    let synced = monitor.value(LAST_SYNC)?;
    ensure!(
        synced > started - 60.0 && synced <= unix_now() + 1.0,
        "last sync {synced}, now {}",
        unix_now()
    );

    // Two Workflows enter the pipeline through the webhooks (each gets its first history entry).
    let created = Instant::now();
    for name in ["w1", "w2"] {
        t.create_ok(ARGO_WORKFLOW, &workflow_at(name, Some(PR_CREATED)))?;
    }
    monitor.wait_for("two created", &[(workflows(PR_CREATED), 2.0)])?;
    ensure!(monitor.value(&finding("label-disagrees"))? == 2.0);

    // One moves on. The webhook records how long it was at the stage it left.
    let first_move = Instant::now();
    t.move_to(ARGO_WORKFLOW, "w1", READY_FOR_QA)?.ok()?;
    let first_moved = Instant::now();
    monitor.wait_for(
        "w1 at QA",
        &[(workflows(PR_CREATED), 1.0), (workflows(READY_FOR_QA), 1.0)],
    )?;
    let (count, sum) = time_at_stage(t, PR_CREATED)?;
    ensure!(count == 1.0, "{count} observations leaving {PR_CREATED}");
    // History times are whole seconds: a stay reads up to a second short or long.
    let longest = first_moved.duration_since(created).as_secs_f64() + 1.0;
    ensure!(
        (0.0..=longest).contains(&sum),
        "{sum} s at {PR_CREATED}, at most {longest} s possible"
    );

    // A second later it is stuck at QA (stuck_after: 1s); waiting at the entry stage never is.
    monitor.wait_for(
        "w1 stuck",
        &[
            (stuck(READY_FOR_QA), 1.0),
            (finding("stuck"), 1.0),
            (stuck(PR_CREATED), 0.0),
        ],
    )?;
    let oldest_at_qa = monitor.value(&oldest(READY_FOR_QA))?;
    let at_qa = first_move.elapsed().as_secs_f64();
    ensure!(
        oldest_at_qa >= 1.0 && oldest_at_qa <= at_qa + 1.0,
        "oldest at QA {oldest_at_qa} s after {at_qa} s there"
    );
    let oldest_created = monitor.value(&oldest(PR_CREATED))?;
    ensure!(
        oldest_created >= 1.0 && oldest_created <= created.elapsed().as_secs_f64() + 1.0,
        "oldest at {PR_CREATED}: {oldest_created} s"
    );

    // It moves on to the final stage: no longer stuck, and its time at QA is recorded.
    let second_move = Instant::now();
    t.move_to(ARGO_WORKFLOW, "w1", PR_APPROVED)?.ok()?;
    let second_moved = Instant::now();
    monitor.wait_for(
        "w1 approved",
        &[
            (workflows(READY_FOR_QA), 0.0),
            (workflows(PR_APPROVED), 1.0),
            (stuck(READY_FOR_QA), 0.0),
            (finding("stuck"), 0.0),
            (oldest(READY_FOR_QA), 0.0),
        ],
    )?;
    let (count, sum) = time_at_stage(t, READY_FOR_QA)?;
    let (shortest, longest) = (
        second_move.duration_since(first_moved).as_secs_f64() - 1.0,
        second_moved.duration_since(first_move).as_secs_f64() + 1.0,
    );
    ensure!(count == 1.0, "{count} observations leaving {READY_FOR_QA}");
    ensure!(
        sum >= shortest && sum <= longest,
        "{sum} s at {READY_FOR_QA}, between {shortest} and {longest} s measured"
    );

    // A denied skip changes nothing, and is no stay.
    let out = t.move_to(ARGO_WORKFLOW, "w2", PR_APPROVED)?;
    ensure!(!out.success(), "the skip was admitted");
    ensure!(time_at_stage(t, PR_CREATED)?.0 == 1.0);
    ensure!(monitor.value(&workflows(PR_CREATED))? == 1.0);

    // A deleted Workflow leaves its stage.
    t.kubectl(ADMIN)?
        .args(["delete", "workflow", "w2", "--wait=false"])
        .ok()?;
    monitor.wait_for("w2 deleted", &[(workflows(PR_CREATED), 0.0)])?;

    // A Workflow of the other pipeline is counted there, and its move observed there; the default
    // pipeline's counts do not change.
    let docs_created = Instant::now();
    t.create_ok(
        ARGO_WORKFLOW,
        &workflow("d1", &[(STAGE_LABEL, "draft"), ("track", DOCS)], &[]),
    )?;
    monitor.wait_for(
        "d1 in draft",
        &[
            (in_pipeline(DOCS, "stage_guard_workflows", "draft"), 1.0),
            (in_pipeline(DOCS, "stage_guard_workflows", "published"), 0.0),
            (workflows(PR_CREATED), 0.0),
            (workflows(PR_APPROVED), 1.0),
        ],
    )?;
    t.move_to(ARGO_WORKFLOW, "d1", "published")?.ok()?;
    let docs_moved = Instant::now();
    monitor.wait_for(
        "d1 published",
        &[
            (in_pipeline(DOCS, "stage_guard_workflows", "draft"), 0.0),
            (in_pipeline(DOCS, "stage_guard_workflows", "published"), 1.0),
            (workflows(PR_APPROVED), 1.0),
        ],
    )?;
    let (count, sum) = time_at(t, DOCS, "draft")?;
    let longest = docs_moved.duration_since(docs_created).as_secs_f64() + 1.0;
    ensure!(count == 1.0, "{count} observations leaving {DOCS}/draft");
    ensure!(
        (0.0..=longest).contains(&sum),
        "{sum} s at {DOCS}/draft, at most {longest} s possible"
    );
    ensure!(time_at_stage(t, PR_CREATED)?.0 == 1.0);

    // The sync time moves on while the watch is healthy, with nothing changing.
    let before = monitor.value(LAST_SYNC)?;
    wait_until(SHOWS_WITHIN, "a later sync", || {
        Ok(monitor.value(LAST_SYNC)? > before)
    })?;
    ensure!(monitor.value(LAST_SYNC)? <= unix_now() + 1.0);

    // Every namespace (the ClusterRole allows it): at least this scenario's Workflows.
    let all = Monitor::start(&kubeconfig, &config, "all", dir.path())?;
    wait_until(SHOWS_WITHIN, "the all-namespaces monitor ready", || {
        Ok(status(all.admin, "/readyz")? == 200)
    })?;
    ensure!(all.value(&workflows(PR_APPROVED))? >= 1.0);
    ensure!(all.value(&workflows("unknown"))? >= 1.0);
    drop(all);

    // SIGTERM: a clean stop.
    let exit = monitor.process.stop(Duration::from_secs(10));
    ensure!(
        exit.is_some_and(|s| s.success()),
        "the monitor exited with {exit:?}:\n{}",
        monitor.process.log_tail(20)
    );
    Ok(())
}

// === the monitor's gauges ===

const LAST_SYNC: &str = "stage_guard_monitor_last_sync_timestamp_seconds";

fn in_pipeline(pipeline: &str, name: &str, stage: &str) -> String {
    format!("{name}{{pipeline=\"{pipeline}\",stage=\"{stage}\"}}")
}

fn stage_series(name: &str, stage: &str) -> String {
    in_pipeline("default", name, stage)
}

fn workflows(stage: &str) -> String {
    stage_series("stage_guard_workflows", stage)
}

fn stuck(stage: &str) -> String {
    stage_series("stage_guard_workflows_stuck", stage)
}

fn oldest(stage: &str) -> String {
    stage_series("stage_guard_stage_oldest_seconds", stage)
}

fn finding(kind: &str) -> String {
    format!("stage_guard_audit_findings{{kind=\"{kind}\"}}")
}

/// The value of one series in a metrics text; an error when it is not there.
fn value_in(metrics: &str, series: &str) -> Result<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .with_context(|| format!("no {series} in:\n{metrics}"))?
        .trim()
        .parse()
        .with_context(|| format!("{series} is not a number"))
}

/// The webhook's `stage_guard_stage_duration_seconds` leaving `stage` of the default pipeline:
/// (count, sum).
fn time_at_stage(t: &Install<'_>, stage: &str) -> Result<(f64, f64)> {
    time_at(t, "default", stage)
}

fn time_at(t: &Install<'_>, pipeline: &str, stage: &str) -> Result<(f64, f64)> {
    let metrics = t.metrics()?;
    let name = "stage_guard_stage_duration_seconds";
    Ok((
        value_in(
            &metrics,
            &in_pipeline(pipeline, &format!("{name}_count"), stage),
        )?,
        value_in(
            &metrics,
            &in_pipeline(pipeline, &format!("{name}_sum"), stage),
        )?,
    ))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The built `stage-guard monitor`, stopped by PID when dropped.
struct Monitor {
    process: Process,
    admin: SocketAddr,
}

impl Monitor {
    /// Starts it with a free admin port (learned from its `listening` log line).
    fn start(kubeconfig: &Path, config: &Path, namespace: &str, dir: &Path) -> Result<Monitor> {
        let mut cmd = crate::support::process::command();
        cmd.arg("monitor")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--config")
            .arg(config)
            .args(["--namespace", namespace, "--admin-listen", "127.0.0.1:0"])
            .args(["--refresh-interval", "1", "--log-format", "json"]);
        let log = dir.join(format!("monitor-{namespace}.log"));
        let mut process = Process::spawn("stage-guard monitor", cmd, &log)?;
        process.wait_for_log(Duration::from_secs(20), |log| admin_address(log).is_some())?;
        let admin = admin_address(&process.log()).context("the admin address")?;
        Ok(Monitor { process, admin })
    }

    fn metrics(&self) -> Result<String> {
        http_get(self.admin, "/metrics")
    }

    fn value(&self, series: &str) -> Result<f64> {
        value_in(&self.metrics()?, series)
    }

    /// Waits until every series has its value.
    fn wait_for(&self, what: &str, expected: &[(String, f64)]) -> Result<()> {
        let deadline = Instant::now() + SHOWS_WITHIN;
        loop {
            let metrics = self.metrics()?;
            let wrong: Vec<String> = expected
                .iter()
                .filter_map(|(series, want)| match value_in(&metrics, series) {
                    Ok(got) if got == *want => None,
                    Ok(got) => Some(format!("{series} = {got}, expected {want}")),
                    Err(e) => Some(format!("{e:#}")),
                })
                .collect();
            if wrong.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not within {SHOWS_WITHIN:?}:\n{}\nmonitor log:\n{}",
                    wrong.join("\n"),
                    self.process.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The address of the admin listener, from the JSON `listening` log line.
fn admin_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "listening" && v["fields"]["listener"] == "admin")
        .and_then(|v| v["fields"]["address"].as_str()?.parse().ok())
}

/// The HTTP status of a GET on the admin port.
fn status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")
}

// === the shipped RBAC ===

/// The monitor's ServiceAccount, ClusterRole and ClusterRoleBinding as `deploy/monitor` ships them.
struct Rbac {
    account: Value,
    bindings: Vec<Value>,
}

impl Rbac {
    /// Renders the base with the monitor Component and applies the ServiceAccount (the binding
    /// comes later, see [`Rbac::bind`]).
    fn shipped(cp: &ControlPlane) -> Result<Rbac> {
        let copy = tempfile::tempdir()?;
        copy_dir(&repo_root().join("deploy"), &copy.path().join("deploy"))?;
        let overlay = copy.path().join("deploy/with-monitor");
        std::fs::create_dir_all(&overlay)?;
        std::fs::write(
            overlay.join("kustomization.yaml"),
            "resources: [../base]\ncomponents: [../monitor]\n",
        )?;
        let yaml = Cli::new(stage_guard_testenv::tools::kubectl()?)
            .arg("kustomize")
            .arg(&overlay)
            .ok()?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&yaml).context("parse kustomize output")?;
        let pick = |kind: &str| -> Result<Value> {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == ACCOUNT)
                .cloned()
                .with_context(|| format!("deploy/monitor renders no {kind} {ACCOUNT}"))
        };
        let rbac = Rbac {
            account: pick("ServiceAccount")?,
            bindings: vec![pick("ClusterRole")?, pick("ClusterRoleBinding")?],
        };
        // The namespace may be there from another scenario (namespaces are never finalised here).
        let ns = cp
            .kubectl(ADMIN)?
            .args(["create", "namespace", ACCOUNT_NS])
            .run()?;
        ensure!(
            ns.success() || ns.stderr.contains("AlreadyExists"),
            "create namespace {ACCOUNT_NS}: {}",
            ns.stderr
        );
        apply(cp, std::slice::from_ref(&rbac.account))?;
        Ok(rbac)
    }

    fn bind(&self, cp: &ControlPlane) -> Result<()> {
        apply(cp, &self.bindings)
    }

    fn delete(&self, cp: &ControlPlane) -> Result<()> {
        let mut all = self.bindings.clone();
        all.push(self.account.clone());
        let file = tempfile::NamedTempFile::new()?;
        let list = json!({"apiVersion": "v1", "kind": "List", "items": all});
        std::fs::write(file.path(), list.to_string())?;
        cp.kubectl(ADMIN)?
            .args(["delete", "--ignore-not-found", "--wait=false", "-f"])
            .arg(file.path())
            .ok()?;
        Ok(())
    }
}

fn apply(cp: &ControlPlane, objects: &[Value]) -> Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(file.path(), list.to_string())?;
    cp.kubectl(ADMIN)?
        .args(["apply", "-f"])
        .arg(file.path())
        .ok()?;
    Ok(())
}

/// `kubectl auth can-i VERB workflows.argoproj.io` as `user`, in a namespace or `--all-namespaces`.
fn can(cp: &ControlPlane, user: &str, verb: &str, namespace: &str) -> Result<bool> {
    let scope: Vec<&str> = if namespace == "--all-namespaces" {
        vec!["--all-namespaces"]
    } else {
        vec!["-n", namespace]
    };
    let out = cp
        .kubectl(ADMIN)?
        .args(["auth", "can-i", verb, "workflows.argoproj.io", "--as", user])
        .args(scope)
        .run()?;
    match out.stdout.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("kubectl auth can-i {verb}: {other:?} {}", out.stderr),
    }
}

/// A kubeconfig with a token the API server issues for the monitor's ServiceAccount (TokenRequest),
/// as kubelet would mount it into the pod.
fn service_account_kubeconfig(cp: &ControlPlane, dir: &Path) -> Result<PathBuf> {
    let token = cp
        .kubectl(ADMIN)?
        .args([
            "create",
            "token",
            ACCOUNT,
            "-n",
            ACCOUNT_NS,
            "--duration",
            "1h",
        ])
        .ok()?;
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cp.url(), "certificate-authority": cp.ca_file()}}],
        "users": [{"name": ACCOUNT, "user": {"token": token.trim()}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": "test", "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    });
    let path = dir.join("monitor-kubeconfig.yaml");
    std::fs::write(&path, kubeconfig.to_string())?;
    Ok(path)
}
