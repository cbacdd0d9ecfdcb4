//! Writes that must not depend on stage-guard (SPEC 4.1, 10): the Argo controller's status writes
//! are filtered out by the configurations' matchConditions inside the API server, so they never
//! reach the webhook; and server-side dry-run, which the webhooks judge without storing anything.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, ALICE, ARGO_CONTROLLER};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "controller_style_writes_never_reach_the_webhook",
        run: controller_style_writes_never_reach_the_webhook,
    },
    Scenario {
        name: "a_workflow_illegal_before_install_stays_updatable",
        run: a_workflow_illegal_before_install_stays_updatable,
    },
    Scenario {
        name: "server_side_dry_run_is_judged_and_stores_nothing",
        run: server_side_dry_run_is_judged_and_stores_nothing,
    },
];

/// A full PUT of `stored` with its status replaced, as the workflow-controller persists (Update with
/// the informer copy's resourceVersion).
fn status_put(t: &Install<'_>, user: &str, stored: &Value, phase: &str) -> Result<Value> {
    let mut next = stored.clone();
    next["status"] = json!({
        "phase": phase,
        "startedAt": "2026-12-01T10:00:00Z",
        "nodes": {"n1": {"id": "n1", "name": "main", "type": "Suspend", "phase": phase}},
    });
    next["metadata"]["labels"]["workflows.argoproj.io/phase"] = phase.into();
    let out = t
        .kubectl(user)?
        .args(["replace", "-o", "json", "-f", "-"])
        .stdin(next.to_string())
        .ok()?;
    serde_json::from_str(&out).context("kubectl replace -o json")
}

fn total_requests(t: &Install<'_>) -> Result<f64> {
    let metrics = t.metrics()?;
    Ok(requests(&metrics, "mutate") + requests(&metrics, "validate"))
}

fn controller_style_writes_never_reach_the_webhook(suite: &Suite) -> Result<()> {
    let t = suite.install("controller-writes", Setup::default())?;
    let mut stored = t.create_ok(ALICE, &workflow_at("busy", Some(PR_CREATED)))?;
    let before = total_requests(&t)?;
    let writes = 10;
    for i in 0..writes {
        let phase = if i % 2 == 0 { "Running" } else { "Pending" };
        stored = status_put(&t, ARGO_CONTROLLER, &stored, phase)?;
    }
    // `argo stop`: a merge patch of spec.shutdown; the archiving label, set by merge patch too.
    t.patch(
        ARGO_CONTROLLER,
        "busy",
        "merge",
        &json!({"spec": {"shutdown": "Stop"}}),
    )?
    .ok()?;
    t.patch(
        ARGO_CONTROLLER,
        "busy",
        "merge",
        &json!({"metadata": {"labels": {"workflows.argoproj.io/workflow-archiving-status": "Pending"}}}),
    )?
    .ok()?;
    let after = total_requests(&t)?;
    ensure!(
        after == before,
        "controller-style writes reached the webhook: {before} -> {after} requests"
    );
    // They did happen: the audit log has every one of them, admitted.
    let updates = t
        .audit_events()?
        .into_iter()
        .filter(|e| {
            e["user"]["username"] == "system:serviceaccount:argo:argo"
                && matches!(e["verb"].as_str(), Some("update" | "patch"))
                && e["responseStatus"]["code"] == 200
        })
        .count();
    ensure!(
        updates == writes + 2,
        "{updates} controller writes audited, want {}",
        writes + 2
    );
    let last = t.get("busy")?;
    ensure!(stage_of(&last).as_deref() == Some(PR_CREATED));
    ensure!(moves(&last)? == vec![step(None, Some(PR_CREATED), "alice")]);
    Ok(())
}

fn a_workflow_illegal_before_install_stays_updatable(suite: &Suite) -> Result<()> {
    // Before stage-guard: a Workflow at a stage the configuration does not know.
    let cp = suite.control_plane()?;
    let ns = suite.fresh_namespace("legacy")?;
    cp.kubectl(ADMIN)?
        .args(["-n", &ns, "create", "-f", "-"])
        .stdin(workflow_at("legacy", Some("stage-from-last-year")).to_string())
        .ok()?;

    let t = suite.install("legacy-installed", Setup::default())?;
    let seen_at_install = total_requests(&t)?;
    let stored = cp
        .kubectl(ADMIN)?
        .args(["-n", &ns, "get", "workflow", "legacy", "-o", "json"])
        .json()?;
    let mut next = stored.clone();
    next["status"] = json!({"phase": "Running"});
    cp.kubectl(ARGO_CONTROLLER)?
        .args(["-n", &ns, "replace", "-f", "-"])
        .stdin(next.to_string())
        .ok()
        .context("a status write to a Workflow at an unknown stage")?;
    ensure!(
        total_requests(&t)? == seen_at_install,
        "a status write reached the webhook"
    );
    // A write that the webhooks do see (an empty override annotation is no override request), and
    // that leaves the stage alone, is admitted too.
    cp.kubectl(ALICE)?
        .args(["-n", &ns, "annotate", "workflow", "legacy"])
        .arg(format!("{OVERRIDE}="))
        .ok()?;
    ensure!(
        total_requests(&t)? > seen_at_install,
        "the annotate did not reach the webhook"
    );
    // Moving it is judged: from an unknown stage only a permitted override may go anywhere.
    let out = cp
        .kubectl(ALICE)?
        .args(["-n", &ns, "label", "workflow", "legacy", "--overwrite"])
        .arg(format!("{STAGE_LABEL}={READY_FOR_QA}"))
        .run()?;
    expect_error(
        &out,
        &denied_by_stage_guard(&format!(
            "stage change \"stage-from-last-year\" -> \"{READY_FOR_QA}\" on {ns}/legacy denied (unknown-stage): the stored stage \"stage-from-last-year\" is not a known stage; allowed next: none from an unknown stage (a permitted override can set a known one)"
        )),
    )?;
    drop(t);
    Ok(())
}

fn server_side_dry_run_is_judged_and_stores_nothing(suite: &Suite) -> Result<()> {
    let t = suite.install("dry-run", Setup::default())?;
    let stored = t.create_ok(ALICE, &workflow_at("dry", Some(PR_CREATED)))?;
    let out = t
        .kubectl(ALICE)?
        .args([
            "patch",
            "workflow",
            "dry",
            "--dry-run=server",
            "--type",
            "merge",
            "-o",
            "json",
        ])
        .arg("-p")
        .arg(json!({"metadata": {"labels": {STAGE_LABEL: READY_FOR_QA}}}).to_string())
        .ok()?;
    let answered: Value = serde_json::from_str(&out)?;
    ensure!(
        moves(&answered)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(Some(PR_CREATED), Some(READY_FOR_QA), "alice"),
            ],
        "dry-run answer {:?}",
        moves(&answered)?
    );
    let after = t.get("dry")?;
    ensure!(
        after["metadata"] == stored["metadata"],
        "a dry run changed the stored object"
    );
    let out = t
        .kubectl(ALICE)?
        .args([
            "patch",
            "workflow",
            "dry",
            "--dry-run=server",
            "--type",
            "merge",
        ])
        .arg("-p")
        .arg(json!({"metadata": {"labels": {STAGE_LABEL: PR_APPROVED}}}).to_string())
        .run()?;
    expect_error(
        &out,
        &denied_by_stage_guard(&format!(
            "stage change \"{PR_CREATED}\" -> \"{PR_APPROVED}\" on {}/dry denied (skip): skips \"{READY_FOR_QA}\"; allowed next: \"{READY_FOR_QA}\"",
            t.ns
        )),
    )?;
    Ok(())
}
