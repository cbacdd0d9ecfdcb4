//! Real Argo in front of stage-guard: the `argo` CLI (v3.7, built from its Go module) and the
//! workflow-controller running against the same API server. With no nodes, the pipeline's steps
//! are suspend nodes; the stage moves are made with the `kubectl patch` the example pipeline's
//! steps run.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use stage_guard_testenv::{ADMIN, ALICE, ARGO_WORKFLOW};
use std::path::PathBuf;
use std::time::Duration;

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "a_pipeline_submitted_from_its_template_moves_through_its_stages",
        run: a_pipeline_submitted_from_its_template_moves_through_its_stages,
    },
    Scenario {
        name: "submit_suspend_resume_and_stop_never_wait_for_the_webhook",
        run: submit_suspend_resume_and_stop_never_wait_for_the_webhook,
    },
    Scenario {
        name: "argo_resubmit_starts_the_new_run_from_the_beginning",
        run: argo_resubmit_starts_the_new_run_from_the_beginning,
    },
];

const ARGO_NS: &str = "argo";
const CONTROLLER_USER: &str = "system:serviceaccount:argo:argo";
/// How long the controller may take to act on a Workflow (it requeues every 10 s at most).
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e_apiserver/fixtures")
        .join(name)
}

fn installed<'s>(suite: &'s Suite, scenario: &str) -> Result<Install<'s>> {
    let t = suite.install(
        scenario,
        Setup {
            namespace: Some(ARGO_NS.to_string()),
            ..Setup::default()
        },
    )?;
    suite.ensure_workflow_controller()?;
    Ok(t)
}

fn argo(t: &Install<'_>, user: &str) -> Result<stage_guard_testenv::Cli> {
    Ok(t.cp.argo(user)?.args(["-n", ARGO_NS]))
}

fn total_requests(t: &Install<'_>) -> Result<f64> {
    let m = t.metrics()?;
    Ok(requests(&m, "mutate") + requests(&m, "validate"))
}

/// The phase of the named node (by display name), if the controller has created it.
fn node_phase(workflow: &Value, display_name: &str) -> Option<String> {
    workflow["status"]["nodes"]
        .as_object()?
        .values()
        .find(|n| n["displayName"] == display_name)
        .and_then(|n| n["phase"].as_str())
        .map(str::to_string)
}

fn wait_for_node(t: &Install<'_>, name: &str, node: &str, phase: &str) -> Result<()> {
    wait_until(
        CONTROLLER_TIMEOUT,
        &format!("{name}: node {node} {phase}"),
        || Ok(node_phase(&t.get(name)?, node).as_deref() == Some(phase)),
    )
    .with_context(|| {
        format!(
            "controller log tail:\n{}",
            t.suite
                .workflow_controller_log()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn wait_for_phase(t: &Install<'_>, name: &str, phase: &str) -> Result<()> {
    wait_until(
        CONTROLLER_TIMEOUT,
        &format!("{name}: phase {phase}"),
        || Ok(t.get(name)?["status"]["phase"] == phase),
    )
}

/// UPDATEs and PATCHes of `name` by the workflow-controller that the API server admitted.
fn controller_writes(t: &Install<'_>, name: &str) -> Result<usize> {
    Ok(t.audit_events()?
        .iter()
        .filter(|e| {
            e["user"]["username"] == CONTROLLER_USER
                && e["objectRef"]["name"] == name
                && e["objectRef"]["resource"] == "workflows"
                && matches!(e["verb"].as_str(), Some("update" | "patch"))
                && e["responseStatus"]["code"] == 200
        })
        .count())
}

fn submitted_name(out: String) -> Result<String> {
    let name = out
        .trim()
        .trim_start_matches("workflow.argoproj.io/")
        .to_string();
    ensure!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "argo submit printed {out:?}"
    );
    Ok(name)
}

fn a_pipeline_submitted_from_its_template_moves_through_its_stages(suite: &Suite) -> Result<()> {
    let t = installed(suite, "argo-pipeline")?;
    t.kubectl(ALICE)?
        .args(["apply", "-f"])
        .arg(fixture("pr-pipeline-suspend.yaml"))
        .ok()?;
    let before = total_requests(&t)?;
    let name = submitted_name(
        argo(&t, ALICE)?
            .args(["submit", "--from", "workflowtemplate/pr-pipeline-suspend"])
            .args([
                "--labels",
                &format!("{STAGE_LABEL}={PR_CREATED}"),
                "-o",
                "name",
            ])
            .ok()?,
    )?;
    wait_for_node(&t, &name, "wait-pr-created", "Running")?;
    // The CREATE was judged (one call to each webhook); the controller's status writes were not.
    let after_submit = total_requests(&t)?;
    ensure!(
        after_submit == before + 2.0,
        "requests {before} -> {after_submit} for one CREATE"
    );
    let stored = t.get(&name)?;
    ensure!(moves(&stored)? == vec![step(None, Some(PR_CREATED), "alice")]);
    ensure!(
        stored["metadata"]["labels"]["workflows.argoproj.io/workflow-template"]
            == "pr-pipeline-suspend"
    );

    // The example pipeline's own moves: a merge patch of the label, then `argo resume`.
    t.move_to(ARGO_WORKFLOW, &name, READY_FOR_QA)?.ok()?;
    argo(&t, ALICE)?.args(["resume", &name]).ok()?;
    wait_for_node(&t, &name, "wait-ready-for-qa", "Running")?;

    // An illegal move is refused with stage-guard's message and leaves the Workflow running.
    let out = t.move_to(ARGO_WORKFLOW, &name, PR_CREATED)?;
    expect_error(
        &out,
        &denied_by_stage_guard(&format!(
            "stage change \"{READY_FOR_QA}\" -> \"{PR_CREATED}\" on {ARGO_NS}/{name} denied (regression): moves back from \"{READY_FOR_QA}\" to \"{PR_CREATED}\"; allowed next: \"{PR_APPROVED}\""
        )),
    )?;
    t.move_to(ARGO_WORKFLOW, &name, PR_APPROVED)?.ok()?;
    argo(&t, ALICE)?.args(["resume", &name]).ok()?;
    wait_for_node(&t, &name, "wait-pr-approved", "Running")?;
    argo(&t, ALICE)?.args(["resume", &name]).ok()?;
    wait_for_phase(&t, &name, "Succeeded")?;

    let done = t.get(&name)?;
    let sa = "system:serviceaccount:argo:argo-workflow";
    ensure!(
        moves(&done)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(Some(PR_CREATED), Some(READY_FOR_QA), sa),
                step(Some(READY_FOR_QA), Some(PR_APPROVED), sa),
            ],
        "history {:?}",
        moves(&done)?
    );
    // Only the three label patches reached the webhooks (two calls each), whatever the controller
    // and `argo resume` wrote.
    let writes = controller_writes(&t, &name)?;
    let total = total_requests(&t)?;
    ensure!(writes >= 4, "only {writes} controller writes audited");
    ensure!(
        total == after_submit + 6.0,
        "requests {after_submit} -> {total} for three label patches"
    );
    eprintln!("    {name}: {writes} controller writes admitted without a webhook call");
    Ok(())
}

fn submit_suspend_resume_and_stop_never_wait_for_the_webhook(suite: &Suite) -> Result<()> {
    let t = installed(suite, "argo-lifecycle")?;
    let before = total_requests(&t)?;
    let name = submitted_name(
        argo(&t, ALICE)?
            .arg("submit")
            .arg(fixture("two-suspend-workflow.yaml"))
            .args([
                "--labels",
                &format!("{STAGE_LABEL}={PR_CREATED}"),
                "-o",
                "name",
            ])
            .ok()?,
    )?;
    wait_for_node(&t, &name, "first", "Running")?;
    let after_submit = total_requests(&t)?;
    ensure!(
        after_submit == before + 2.0,
        "requests {before} -> {after_submit}"
    );

    argo(&t, ALICE)?.args(["suspend", &name]).ok()?;
    ensure!(t.get(&name)?["spec"]["suspend"] == true);
    argo(&t, ALICE)?.args(["resume", &name]).ok()?;
    argo(&t, ALICE)?.args(["stop", &name]).ok()?;
    wait_for_phase(&t, &name, "Failed")?;
    ensure!(
        total_requests(&t)? == after_submit,
        "argo suspend/resume/stop or the controller reached the webhook"
    );
    let stored = t.get(&name)?;
    ensure!(stage_of(&stored).as_deref() == Some(PR_CREATED));
    ensure!(moves(&stored)? == vec![step(None, Some(PR_CREATED), "alice")]);
    Ok(())
}

fn argo_resubmit_starts_the_new_run_from_the_beginning(suite: &Suite) -> Result<()> {
    let t = installed(suite, "argo-resubmit")?;
    let name = submitted_name(
        argo(&t, ALICE)?
            .arg("submit")
            .arg(fixture("two-suspend-workflow.yaml"))
            .args([
                "--labels",
                &format!("{STAGE_LABEL}={PR_CREATED}"),
                "-o",
                "name",
            ])
            .ok()?,
    )?;
    t.move_to(ARGO_WORKFLOW, &name, READY_FOR_QA)?.ok()?;
    argo(&t, ALICE)?.args(["stop", &name]).ok()?;
    wait_for_phase(&t, &name, "Failed")?;

    let copy = submitted_name(
        argo(&t, ALICE)?
            .args(["resubmit", &name, "-o", "name"])
            .ok()?,
    )?;
    let created = t.get(&copy)?;
    ensure!(created["metadata"]["labels"][RESUBMITTED_FROM] == name.as_str());
    ensure!(
        stage_of(&created).is_none(),
        "resubmit: reset kept the stage: {}",
        created["metadata"]
    );
    ensure!(
        created["metadata"]["annotations"][HISTORY].is_null(),
        "resubmit: reset kept the history: {}",
        created["metadata"]
    );
    // The old run keeps its stage and history.
    ensure!(moves(&t.get(&name)?)?.len() == 2);
    // And the new run enters the pipeline at the beginning.
    t.move_to(ARGO_WORKFLOW, &copy, PR_CREATED)?.ok()?;
    ensure!(
        moves(&t.get(&copy)?)?
            == vec![step(
                None,
                Some(PR_CREATED),
                "system:serviceaccount:argo:argo-workflow"
            )]
    );
    t.cp.kubectl(ADMIN)?
        .args(["-n", ARGO_NS, "delete", "workflow", &name, &copy])
        .ok()?;
    Ok(())
}
