//! When stage-guard cannot answer (SPEC 10: `failurePolicy: Fail`): a stopped webhook fails stage
//! changes closed at once, a hung one after the configuration's `timeoutSeconds`; neither lets a
//! change through, and the writes the objectSelector and matchConditions filter out (unlabelled
//! Workflows, the controller's status writes) go on regardless.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, ensure};
use serde_json::json;
use stage_guard_testenv::{ALICE, ARGO_CONTROLLER};
use std::time::{Duration, Instant};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "a_stopped_webhook_fails_stage_changes_closed",
        run: a_stopped_webhook_fails_stage_changes_closed,
    },
    Scenario {
        name: "a_hung_webhook_fails_after_the_timeout",
        run: a_hung_webhook_fails_after_the_timeout,
    },
];

/// The configurations' `timeoutSeconds` (deploy/base/webhooks.yaml).
fn configured_timeout() -> Result<Duration> {
    let seconds = rendered_webhook_configurations()?[0]["webhooks"][0]["timeoutSeconds"]
        .as_u64()
        .context("timeoutSeconds")?;
    Ok(Duration::from_secs(seconds))
}

fn a_stopped_webhook_fails_stage_changes_closed(suite: &Suite) -> Result<()> {
    let mut t = suite.install("stopped", Setup::default())?;
    let stored = t.create_ok(ALICE, &workflow_at("orphan", Some(PR_CREATED)))?;
    let port = t.port();
    t.webhook.signal("KILL");
    ensure!(
        t.webhook.wait_exit(Duration::from_secs(10)).is_some(),
        "stage-guard did not exit"
    );

    let out = t.move_to(ALICE, "orphan", READY_FOR_QA)?;
    expect_error(
        &out,
        &format!(
            "Error from server (InternalError): Internal error occurred: failed calling webhook \"mutate.stage-guard.io\": failed to call webhook: Post \"https://127.0.0.1:{port}/mutate?timeout={}s\": dial tcp 127.0.0.1:{port}: connect: connection refused",
            configured_timeout()?.as_secs()
        ),
    )?;
    ensure!(
        t.get("orphan")?["metadata"] == stored["metadata"],
        "the object changed"
    );

    // Unlabelled Workflows never need it (objectSelector): an ordinary `argo submit` and its updates
    // go on while stage-guard is down; a labelled CREATE fails closed like the stage change above.
    let plain = t.create_ok(ALICE, &workflow_at("ordinary", None))?;
    ensure!(plain["metadata"]["name"] == "ordinary");
    t.patch(
        ALICE,
        "ordinary",
        "merge",
        &json!({"metadata": {"labels": {"team": "qa"}, "annotations": {"note": "x"}}}),
    )?
    .ok()
    .context("an unlabelled Workflow's update while stage-guard is down")?;
    let labelled = t.create(ALICE, &workflow_at("labelled", Some(PR_CREATED)))?;
    ensure!(
        !labelled.success() && labelled.stderr.contains("connection refused"),
        "a labelled CREATE while stage-guard is down: {}",
        labelled.stderr
    );

    // The controller's status writes never needed the webhook.
    let mut status = t.get("orphan")?;
    status["status"] = json!({"phase": "Running"});
    t.kubectl(ARGO_CONTROLLER)?
        .args(["replace", "-f", "-"])
        .stdin(status.to_string())
        .ok()
        .context("a status write while stage-guard is down")?;
    Ok(())
}

fn a_hung_webhook_fails_after_the_timeout(suite: &Suite) -> Result<()> {
    let t = suite.install("hung", Setup::default())?;
    let stored = t.create_ok(ALICE, &workflow_at("stuck", Some(PR_CREATED)))?;
    let port = t.port();
    // Stopped, not dead: connections are accepted by the kernel and never answered.
    t.webhook.signal("STOP");
    let started = Instant::now();
    let out = t.move_to(ALICE, "stuck", READY_FOR_QA);
    let waited = started.elapsed();
    t.webhook.signal("CONT");
    let out = out?;
    let timeout = configured_timeout()?;
    ensure!(
        !out.success(),
        "a write succeeded while stage-guard was stopped"
    );
    let prefix = format!(
        "Error from server (InternalError): Internal error occurred: failed calling webhook \"mutate.stage-guard.io\": failed to call webhook: Post \"https://127.0.0.1:{port}/mutate?timeout={}s\": ",
        timeout.as_secs()
    );
    ensure!(
        out.stderr.starts_with(&prefix) && out.stderr.contains("context deadline exceeded"),
        "kubectl printed: {}",
        out.stderr
    );
    ensure!(
        waited >= timeout,
        "the API server gave up after {waited:?}, before timeoutSeconds ({timeout:?})"
    );
    ensure!(
        t.get("stuck")?["metadata"] == stored["metadata"],
        "the object changed"
    );

    // Resumed, it judges again.
    t.move_to(ALICE, "stuck", READY_FOR_QA)?.ok()?;
    ensure!(stage_of(&t.get("stuck")?).as_deref() == Some(READY_FOR_QA));
    Ok(())
}
