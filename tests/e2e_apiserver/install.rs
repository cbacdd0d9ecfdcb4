//! The documented kustomize install (README, "Install"): the server's objects first, the webhook
//! configurations once the server answers, so no Workflow write fails during the install, nor during
//! an upgrade (the same apply with changed objects). Shown with
//! the real `kubectl apply -l` on the rendered static-certs overlay, under a loop of ordinary Workflow
//! writes (creates with and without the stage label, legal stage moves).
//!
//! No pod runs here (there are no nodes): the local `stage-guard serve` plays the Deployment's pod,
//! and the webhooks' `clientConfig` is rewritten to reach it, as everywhere in this suite.

use crate::Scenario;
use crate::harness::*;
use crate::helm::{
    JUDGED_ROUNDS, MIN_WRITES, ROUND, Write, complete_rounds_since, wait_until_judging, write_loop,
};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, BOB, Cli};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "server_first_then_webhooks_then_an_upgrade_fail_no_write",
    run: server_first_then_webhooks_then_an_upgrade_fail_no_write,
}];

/// The selector of the first step: everything but the webhook configurations.
const SERVER_ONLY: &str = "app.kubernetes.io/component!=webhook-configuration";

/// `deploy/` copied with `certs` in the static-certs overlay's certs folder, rendered by the real
/// `kubectl kustomize`, the two webhook configurations pointed at the local server.
fn rendered_static_certs(certs: &Path, port: u16) -> Result<Vec<Value>> {
    let copy = tempfile::tempdir()?;
    copy_dir(&repo_root().join("deploy"), &copy.path().join("deploy"))?;
    let target = copy.path().join("deploy/overlays/static-certs/certs");
    std::fs::create_dir_all(&target)?;
    for file in ["ca.crt", "tls.crt", "tls.key", "ca-bundle"] {
        std::fs::copy(certs.join(file), target.join(file))
            .with_context(|| format!("copy {file} from {}", certs.display()))?;
    }
    let yaml = Cli::new(stage_guard_testenv::tools::kubectl()?)
        .arg("kustomize")
        .arg(copy.path().join("deploy/overlays/static-certs"))
        .ok()?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).context("parse kustomize output")?;
    let ca_bundle = std::fs::read_to_string(certs.join("ca-bundle"))?
        .trim()
        .to_string();
    let (hooks, rest): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(|d| {
        matches!(
            d["kind"].as_str(),
            Some("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration")
        )
    });
    let mut all = rest;
    all.extend(stage_guard_testenv::webhooks::pointed_at(
        hooks, port, &ca_bundle,
    )?);
    Ok(all)
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

pub(crate) fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl apply` of `objects` as the cluster admin, with an optional label selector, as the README
/// says (client-side apply, the operator's usual command).
fn apply(t: &Install<'_>, objects: &[Value], selector: Option<&str>) -> Result<String> {
    let file = tempfile::NamedTempFile::new()?;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(file.path(), list.to_string())?;
    let mut cmd = t.cp.kubectl(ADMIN)?.arg("apply").arg("-f").arg(file.path());
    if let Some(s) = selector {
        cmd = cmd.arg("-l").arg(s);
    }
    cmd.ok()
}

fn webhook_configuration_names(t: &Install<'_>) -> Result<String> {
    Ok(t.cp
        .kubectl(ADMIN)?
        .args([
            "get",
            "mutatingwebhookconfigurations,validatingwebhookconfigurations",
            "-o",
            "name",
        ])
        .ok()?
        .trim()
        .to_string())
}

fn server_first_then_webhooks_then_an_upgrade_fail_no_write(suite: &Suite) -> Result<()> {
    // The local server plays the Deployment's pod; nothing registers it but the procedure below.
    let t = suite.install(
        "kustomize-install",
        Setup {
            register: false,
            ..Setup::default()
        },
    )?;
    ensure!(
        webhook_configuration_names(&t)?.is_empty(),
        "webhook configurations exist before the install"
    );
    let objects = rendered_static_certs(&t.certs_dir(), t.port())?;
    t.create_ok(BOB, &workflow_at("probe", Some(PR_CREATED)))?;

    let stop = AtomicBool::new(false);
    let writes: Mutex<Vec<Write>> = Mutex::new(Vec::new());
    let count = || writes.lock().unwrap_or_else(|e| e.into_inner()).len();
    let (registered_at, judging_from) = std::thread::scope(|scope| {
        let looping = scope.spawn(|| write_loop(&t, &stop, &writes));
        let steps = || -> Result<(Instant, Instant)> {
            wait_until(Duration::from_secs(60), "a first round of writes", || {
                Ok(count() >= ROUND.len())
            })?;
            // Step 1: the server's objects only.
            let applied = apply(&t, &objects, Some(SERVER_ONLY))?;
            ensure!(
                applied.contains("deployment.apps/stage-guard")
                    && applied.contains("secret/stage-guard-tls")
                    && !applied.contains("webhookconfiguration"),
                "step 1 applied:\n{applied}"
            );
            ensure!(
                webhook_configuration_names(&t)?.is_empty(),
                "step 1 registered webhooks:\n{applied}"
            );
            // Step 2 (`kubectl rollout status` in a cluster): the server answers.
            wait_until(Duration::from_secs(30), "the server ready", || {
                Ok(http_get(t.webhook.admin_addr, "/readyz").is_ok_and(|b| b.contains("ok")))
            })?;
            wait_until(
                Duration::from_secs(60),
                "writes before the webhooks",
                || Ok(count() >= 2 * ROUND.len()),
            )?;
            // Step 3: everything, which adds the webhook configurations.
            let registered_at = Instant::now();
            let applied = apply(&t, &objects, None)?;
            ensure!(
                applied.contains("mutatingwebhookconfiguration.admissionregistration.k8s.io/stage-guard created")
                    && applied.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/stage-guard created"),
                "step 3 applied:\n{applied}"
            );
            wait_until_judging(&t, "probe")?;
            let judging_from = Instant::now();
            // An upgrade: the same apply with changed objects (here the webhooks' timeout) patches the
            // configurations in place; the loop goes on.
            let upgraded: Vec<Value> = objects
                .iter()
                .cloned()
                .map(|mut o| {
                    if o["kind"]
                        .as_str()
                        .is_some_and(|k| k.ends_with("WebhookConfiguration"))
                    {
                        o["webhooks"][0]["timeoutSeconds"] = json!(7);
                    }
                    o
                })
                .collect();
            let applied = apply(&t, &upgraded, None)?;
            ensure!(
                applied.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/stage-guard configured"),
                "the upgrade applied:\n{applied}"
            );
            wait_until(
                Duration::from_secs(120),
                "rounds of writes while judged",
                || {
                    let writes = writes.lock().unwrap_or_else(|e| e.into_inner());
                    Ok(complete_rounds_since(&writes, judging_from).len() >= JUDGED_ROUNDS)
                },
            )?;
            Ok((registered_at, judging_from))
        };
        let result = steps();
        stop.store(true, Ordering::SeqCst);
        let looped = looping
            .join()
            .map_err(|_| anyhow::anyhow!("the write loop panicked"))?;
        looped.context("the write loop")?;
        result
    })?;
    // The server's objects go again, so later scenarios find the namespace as before.
    let cleanup = apply_delete(&t, &objects);

    let writes = writes.into_inner().unwrap_or_else(|e| e.into_inner());
    let failed: Vec<String> = writes
        .iter()
        .filter(|w| !w.out.success())
        .map(|w| format!("{}: {}", w.what, w.out.stderr.trim()))
        .collect();
    eprintln!(
        "kustomize install: {} writes, {} failed ({} before the webhooks were applied)",
        writes.len(),
        failed.len(),
        writes.iter().filter(|w| w.started < registered_at).count()
    );
    ensure!(
        failed.is_empty(),
        "{} of {} writes failed:\n{}",
        failed.len(),
        writes.len(),
        failed.join("\n")
    );
    ensure!(writes.len() >= MIN_WRITES, "only {} writes", writes.len());
    let judged = complete_rounds_since(&writes, judging_from);
    ensure!(judged.len() >= JUDGED_ROUNDS, "judged rounds: {judged:?}");
    for round in &judged {
        let stored = t.get(&format!("loop-{round}"))?;
        ensure!(
            moves(&stored)?.len() == 3,
            "round {round} while judged: history {:?}",
            moves(&stored)?
        );
    }
    cleanup
}

/// Deletes what the install applied, the webhook configurations first, as an uninstall should. The
/// Namespace stays: without kube-controller-manager here nothing would finalize its deletion.
fn apply_delete(t: &Install<'_>, objects: &[Value]) -> Result<()> {
    let (hooks, rest): (Vec<&Value>, Vec<&Value>) = objects
        .iter()
        .filter(|o| o["kind"] != "Namespace")
        .partition(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        });
    for part in [hooks, rest] {
        let file = tempfile::NamedTempFile::new()?;
        let list = json!({"apiVersion": "v1", "kind": "List", "items": part});
        std::fs::write(file.path(), list.to_string())?;
        t.cp.kubectl(ADMIN)?
            .args(["delete", "--ignore-not-found", "--wait=false", "-f"])
            .arg(file.path())
            .ok()?;
    }
    Ok(())
}
