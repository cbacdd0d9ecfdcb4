//! `set` against a concurrent writer. A second mutating webhook (the recorder, with something to do
//! before it answers) writes the same Workflow as the admin while the API server is admitting
//! alice's move: mutating admission runs before the resourceVersion check, so the move loses that
//! race every time the writer writes (apiserver-contract 3), deterministically. `set` must read the
//! Workflow again and retry, see when someone else already moved it where it was going, and give up
//! with one line after a bounded number of lost races.

use super::*;
use crate::recorder::Recorder;
use anyhow::{Result, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, ALICE, ARGO_WORKFLOW, ControlPlane};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MEDDLER: &str = "steer-meddler";

/// Deletes the meddler's configuration when dropped.
struct Registered<'a>(&'a ControlPlane);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(ADMIN).and_then(|k| {
            k.args([
                "delete",
                "mutatingwebhookconfiguration",
                MEDDLER,
                "--ignore-not-found",
            ])
            .ok()
        });
    }
}

/// What the concurrent writer does, and how many more times.
#[derive(Default)]
struct Writer {
    /// Races left to make alice lose.
    budget: AtomicUsize,
    /// Calls for alice's writes of the Workflow.
    calls: AtomicUsize,
    /// The admin's write: a kubectl command line after `kubectl -n NS`, `{n}` replaced by a counter.
    write: Mutex<Vec<String>>,
}

fn meddler_configuration(port: u16, ca_bundle: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MEDDLER},
        "webhooks": [{
            "name": "meddle.steer.test",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca_bundle},
            "rules": [{"apiGroups": ["argoproj.io"], "apiVersions": ["v1alpha1"],
                       "resources": ["workflows"], "operations": ["UPDATE"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 15,
            "failurePolicy": "Fail",
        }],
    })
}

pub fn a_conflict_is_read_again_and_a_losing_streak_ends_the_move(suite: &Suite) -> Result<()> {
    let t = suite.install(
        "steer-conflicts",
        Setup {
            config: Some(LOOP_CONFIG.into()),
            ..Setup::default()
        },
    )?;
    let config = ConfigFile::new(LOOP_CONFIG)?;
    let ns = t.ns.clone();
    t.create_ok(ARGO_WORKFLOW, &workflow_at("raced", Some(PR_CREATED)))?;

    let writer = Arc::new(Writer::default());
    let admin = t.kubectl(ADMIN)?;
    let hook = {
        let writer = writer.clone();
        move |review: &Value| {
            let request = &review["request"];
            if request["userInfo"]["username"] != "alice" || request["operation"] != "UPDATE" {
                return;
            }
            let n = writer.calls.fetch_add(1, Ordering::SeqCst);
            if request["dryRun"] == true {
                return;
            }
            let take = writer
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1));
            if take.is_err() {
                return;
            }
            let words: Vec<String> = writer
                .write
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|w| w.replace("{n}", &n.to_string()))
                .collect();
            let _ = admin.clone().args(words).run();
        }
    };
    let certs = tempfile::tempdir()?;
    let bundle = issue_serving_cert(certs.path())?;
    let meddler = Recorder::start_with(certs.path(), Arc::new(hook))?;
    t.cp.apply(vec![meddler_configuration(
        meddler.addr.port(),
        &bundle,
        &ns,
    )])?;
    let _registered = Registered(t.cp);
    // Registration reaches the admission chain asynchronously: until a dry run by alice is seen.
    wait_until(Duration::from_secs(30), "the meddler is called", || {
        t.kubectl(ALICE)?
            .args([
                "annotate",
                "workflow",
                "raced",
                "probe=1",
                "--overwrite",
                "--dry-run=server",
            ])
            .run()?;
        Ok(writer.calls.load(Ordering::SeqCst) > 0)
    })?;

    let set = |name: &str, stage: &str| sg(&t, ALICE, &config, &["set", name, stage])?.run();
    let conflicts = |stderr: &str| {
        stderr
            .lines()
            .filter(|l| l.starts_with(&format!("conflict: {ns}/")))
            .count()
    };

    // One lost race: read again, retried, moved.
    *writer.write.lock().unwrap_or_else(|e| e.into_inner()) = [
        "annotate",
        "workflow",
        "raced",
        "--overwrite",
        "meddled={n}",
    ]
    .map(String::from)
    .to_vec();
    writer.budget.store(1, Ordering::SeqCst);
    let out = set("raced", READY_FOR_QA)?;
    expect_exit(&out, 0)?;
    ensure!(
        conflicts(&out.stderr) == 1
            && out.stderr.starts_with(&format!(
                "conflict: {ns}/raced changed since it was read (resourceVersion "
            ))
            && out
                .stderr
                .trim_end()
                .ends_with("reading it again (1 of 5 attempts used)"),
        "one lost race printed:\n{}",
        out.stderr
    );
    let stored = t.get("raced")?;
    ensure!(
        stage_of(&stored).as_deref() == Some(READY_FOR_QA)
            && stored["metadata"]["annotations"]["meddled"].is_string()
            && history_of(&stored)?.len() == 2,
        "after one lost race: {}",
        stored["metadata"]
    );
    ensure!(
        out.stdout.contains(": admitted, recorded by alice at "),
        "{}",
        out.stdout
    );

    // The concurrent writer moves it where alice was moving it: read again, nothing left to do.
    *writer.write.lock().unwrap_or_else(|e| e.into_inner()) = [
        "label",
        "workflow",
        "raced",
        "--overwrite",
        "current-stage=waiting-pr-approved",
    ]
    .map(String::from)
    .to_vec();
    writer.budget.store(1, Ordering::SeqCst);
    let out = set("raced", PR_APPROVED)?;
    expect_exit(&out, 0)?;
    let last = last_entry(&t, "raced")?;
    ensure!(
        conflicts(&out.stderr) == 1
            && out.stdout
                == format!(
                    "{ns}/raced is already at \"{PR_APPROVED}\" (moved there by admin at {}): nothing to change\n",
                    last["at"].as_str().unwrap_or_default()
                ),
        "moved by the other writer:\n{}{}",
        out.stdout,
        out.stderr
    );

    // A writer that always wins: five lost races, then one line and exit 2; nothing moved.
    t.create_ok(ARGO_WORKFLOW, &workflow_at("contested", Some(PR_CREATED)))?;
    *writer.write.lock().unwrap_or_else(|e| e.into_inner()) = [
        "annotate",
        "workflow",
        "contested",
        "--overwrite",
        "meddled={n}",
    ]
    .map(String::from)
    .to_vec();
    writer.budget.store(usize::MAX, Ordering::SeqCst);
    let out = set("contested", READY_FOR_QA)?;
    writer.budget.store(0, Ordering::SeqCst);
    expect_exit(&out, 2)?;
    ensure!(
        conflicts(&out.stderr) == 5
            && out.stderr.lines().last()
                == Some(&*format!(
                    "stage-guard: workflow {ns}/contested kept changing while it was moved: 5 writes in a row lost to a concurrent writer (409 Conflict); try again"
                ))
            && out.stdout.is_empty(),
        "a losing streak printed:\n{}{}",
        out.stdout,
        out.stderr
    );
    let stored = t.get("contested")?;
    ensure!(
        stage_of(&stored).as_deref() == Some(PR_CREATED) && history_of(&stored)?.len() == 1,
        "the contested Workflow moved: {}",
        stored["metadata"]
    );
    Ok(())
}
