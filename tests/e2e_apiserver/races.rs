//! SPEC 4.6 through the real API server: it runs mutating admission before its resourceVersion
//! check and validating admission after it, and re-runs both when a write races another.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Result, ensure};
use serde_json::Value;
use stage_guard_testenv::{ALICE, ARGO_WORKFLOW, CliOutput};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "twenty_racing_writers_make_one_history_entry",
        run: twenty_racing_writers_make_one_history_entry,
    },
    Scenario {
        name: "twenty_racing_jumps_are_all_denied",
        run: twenty_racing_jumps_are_all_denied,
    },
    Scenario {
        name: "twenty_stale_puts_give_one_success_and_conflicts",
        run: twenty_stale_puts_give_one_success_and_conflicts,
    },
];

const RACERS: usize = 20;

/// Starts every command before waiting for any, so they reach the API server together.
fn race(commands: Vec<stage_guard_testenv::Cli>) -> Result<Vec<CliOutput>> {
    let running = commands
        .iter()
        .map(|c| c.spawn())
        .collect::<Result<Vec<_>>>()?;
    running.into_iter().map(|r| r.wait()).collect()
}

fn racing_moves(t: &Install<'_>, name: &str, stage: &str) -> Result<Vec<CliOutput>> {
    let patch = serde_json::json!({"metadata": {"labels": {STAGE_LABEL: stage}}}).to_string();
    race(
        (0..RACERS)
            .map(|_| {
                t.kubectl(ARGO_WORKFLOW)
                    .map(|k| k.args(["patch", "workflow", name, "--type", "merge", "-p", &patch]))
            })
            .collect::<Result<_>>()?,
    )
}

fn twenty_racing_writers_make_one_history_entry(suite: &Suite) -> Result<()> {
    let t = suite.install("race-writers", Setup::default())?;
    t.create_ok(ALICE, &workflow_at("raced", Some(PR_CREATED)))?;
    let outs = racing_moves(&t, "raced", READY_FOR_QA)?;
    let failed: Vec<_> = outs.iter().filter(|o| !o.success()).collect();
    ensure!(failed.is_empty(), "racing legal moves failed: {failed:?}");
    let stored = t.get("raced")?;
    ensure!(stage_of(&stored).as_deref() == Some(READY_FOR_QA));
    ensure!(
        moves(&stored)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(
                    Some(PR_CREATED),
                    Some(READY_FOR_QA),
                    "system:serviceaccount:argo:argo-workflow"
                ),
            ],
        "history after {RACERS} racing writers: {:?}",
        moves(&stored)?
    );
    Ok(())
}

fn twenty_racing_jumps_are_all_denied(suite: &Suite) -> Result<()> {
    let t = suite.install("race-jumps", Setup::default())?;
    let created = t.create_ok(ALICE, &workflow_at("jumped", Some(PR_CREATED)))?;
    let outs = racing_moves(&t, "jumped", PR_APPROVED)?;
    let expected = denied_by_stage_guard(&format!(
        "stage change \"{PR_CREATED}\" -> \"{PR_APPROVED}\" on {}/jumped denied (skip): skips \"{READY_FOR_QA}\"; allowed next: \"{READY_FOR_QA}\"",
        t.ns
    ));
    for out in &outs {
        expect_error(out, &expected)?;
    }
    ensure!(t.get("jumped")?["metadata"] == created["metadata"]);
    Ok(())
}

fn twenty_stale_puts_give_one_success_and_conflicts(suite: &Suite) -> Result<()> {
    let t = suite.install("stale-puts", Setup::default())?;
    let read: Value = t.create_ok(ALICE, &workflow_at("stale", Some(PR_CREATED)))?;
    // Every writer read the same resourceVersion and PUTs the whole object back with a new stage.
    let mut body = read.clone();
    body["metadata"]["labels"][STAGE_LABEL] = READY_FOR_QA.into();
    let outs = race(
        (0..RACERS)
            .map(|_| {
                t.kubectl(ARGO_WORKFLOW)
                    .map(|k| k.args(["replace", "-f", "-"]).stdin(body.to_string()))
            })
            .collect::<Result<_>>()?,
    )?;
    let winners = outs.iter().filter(|o| o.success()).count();
    ensure!(winners == 1, "{winners} of {RACERS} stale PUTs succeeded");
    let conflict = "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be fulfilled on workflows.argoproj.io \"stale\": the object has been modified; please apply your changes to the latest version and try again";
    for out in outs.iter().filter(|o| !o.success()) {
        expect_error(out, conflict)?;
    }
    let stored = t.get("stale")?;
    ensure!(
        moves(&stored)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(
                    Some(PR_CREATED),
                    Some(READY_FOR_QA),
                    "system:serviceaccount:argo:argo-workflow"
                ),
            ],
        "history {:?}",
        moves(&stored)?
    );
    Ok(())
}
