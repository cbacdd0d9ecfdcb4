//! SPEC 4.1-4.3 through the real API server: stage moves by every way kubectl writes a label,
//! every denial with kubectl's exact message and the object left as stored, overrides, warn mode,
//! and history the clients cannot write.

use crate::Scenario;
use crate::harness::*;
use crate::support::fixtures::ConfigSpec;
use anyhow::{Result, ensure};
use serde_json::json;
use stage_guard_testenv::{ALICE, ARGO_WORKFLOW, BOB};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "kubectl_label_overwrite_advances_and_stamps_history",
        run: kubectl_label_overwrite_advances_and_stamps_history,
    },
    Scenario {
        name: "merge_and_json_patches_advance",
        run: merge_and_json_patches_advance,
    },
    Scenario {
        name: "client_side_and_server_side_apply_advance",
        run: client_side_and_server_side_apply_advance,
    },
    Scenario {
        name: "every_denial_has_the_exact_message_and_leaves_the_object",
        run: every_denial_has_the_exact_message_and_leaves_the_object,
    },
    Scenario {
        name: "a_permitted_override_forces_a_change_and_records_the_reason",
        run: a_permitted_override_forces_a_change_and_records_the_reason,
    },
    Scenario {
        name: "warn_mode_admits_a_skip_with_a_warning",
        run: warn_mode_admits_a_skip_with_a_warning,
    },
    Scenario {
        name: "clients_cannot_write_the_history",
        run: clients_cannot_write_the_history,
    },
];

fn kubectl_label_overwrite_advances_and_stamps_history(suite: &Suite) -> Result<()> {
    let t = suite.install("label", Setup::default())?;
    t.create_ok(ALICE, &workflow_at("task-1", Some(PR_CREATED)))?;
    t.kubectl(ARGO_WORKFLOW)?
        .args(["label", "workflow", "task-1", "--overwrite"])
        .arg(format!("{STAGE_LABEL}={READY_FOR_QA}"))
        .ok()?;
    let stored = t.get("task-1")?;
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
        "history {:?}",
        moves(&stored)?
    );
    // Each entry is stamped by the API server's call to /mutate: RFC 3339 UTC with a Z.
    for entry in history_of(&stored)? {
        let at = entry["at"].as_str().unwrap_or_default();
        ensure!(at.ends_with('Z') && at.len() >= 20, "at = {at:?}");
    }
    Ok(())
}

fn merge_and_json_patches_advance(suite: &Suite) -> Result<()> {
    let t = suite.install("patches", Setup::default())?;
    t.create_ok(ALICE, &workflow_at("task-2", Some(PR_CREATED)))?;
    t.move_to(ARGO_WORKFLOW, "task-2", READY_FOR_QA)?.ok()?;
    let json_patch = json!([
        {"op": "replace", "path": "/metadata/labels/current-stage", "value": PR_APPROVED}
    ]);
    t.patch(BOB, "task-2", "json", &json_patch)?.ok()?;
    let stored = t.get("task-2")?;
    ensure!(stage_of(&stored).as_deref() == Some(PR_APPROVED));
    ensure!(
        moves(&stored)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(
                    Some(PR_CREATED),
                    Some(READY_FOR_QA),
                    "system:serviceaccount:argo:argo-workflow"
                ),
                step(Some(READY_FOR_QA), Some(PR_APPROVED), "bob"),
            ],
        "history {:?}",
        moves(&stored)?
    );
    Ok(())
}

fn client_side_and_server_side_apply_advance(suite: &Suite) -> Result<()> {
    let t = suite.install("apply", Setup::default())?;
    let apply = |name: &str, stage: &str, server_side: bool| -> Result<()> {
        let mut cli = t.kubectl(ALICE)?.arg("apply");
        if server_side {
            cli = cli.arg("--server-side");
        }
        cli.args(["-f", "-"])
            .stdin(workflow_at(name, Some(stage)).to_string())
            .ok()?;
        Ok(())
    };
    for (name, server_side) in [("client-side", false), ("server-side", true)] {
        apply(name, PR_CREATED, server_side)?;
        apply(name, READY_FOR_QA, server_side)?;
        let stored = t.get(name)?;
        ensure!(stage_of(&stored).as_deref() == Some(READY_FOR_QA), "{name}");
        ensure!(
            moves(&stored)?
                == vec![
                    step(None, Some(PR_CREATED), "alice"),
                    step(Some(PR_CREATED), Some(READY_FOR_QA), "alice"),
                ],
            "{name}: history {:?}",
            moves(&stored)?
        );
        // A skip by apply is refused like any other write.
        let mut cli = t.kubectl(ALICE)?.arg("apply");
        if server_side {
            cli = cli.arg("--server-side");
        }
        let out = cli
            .args(["-f", "-"])
            .stdin(workflow_at(name, Some(PR_CREATED)).to_string())
            .run()?;
        let message = format!(
            "stage change \"{READY_FOR_QA}\" -> \"{PR_CREATED}\" on {}/{name} denied (regression): moves back from \"{READY_FOR_QA}\" to \"{PR_CREATED}\"; allowed next: \"{PR_APPROVED}\"",
            t.ns
        );
        if server_side {
            expect_error(&out, &denied_by_stage_guard(&message))?;
        } else {
            // Client-side apply sends a PATCH and quotes it in its error: the patch body in the
            // middle is kubectl's, the first line and the webhook's part are exact.
            let tail = format!(
                "for: \"STDIN\": error when patching \"STDIN\": admission webhook \"validate.stage-guard.io\" denied the request: {message}"
            );
            ensure!(
                !out.success()
                    && out
                        .stderr
                        .starts_with("Error from server (Forbidden): error when applying patch:")
                    && out.stderr.trim_end().ends_with(&tail),
                "client-side apply of a regression printed:\n{}",
                out.stderr
            );
        }
        ensure!(stage_of(&t.get(name)?).as_deref() == Some(READY_FOR_QA));
    }
    Ok(())
}

fn every_denial_has_the_exact_message_and_leaves_the_object(suite: &Suite) -> Result<()> {
    let t = suite.install("denials", Setup::default())?;
    t.create_ok(ALICE, &workflow_at("task-3", Some(PR_CREATED)))?;
    t.move_to(ALICE, "task-3", READY_FOR_QA)?.ok()?;
    let before = t.get("task-3")?;
    let ns = &t.ns;
    let at = |change: &str, reason: &str, detail: &str, next: Option<&str>| {
        let mut m = format!("stage change {change} on {ns}/task-3 denied ({reason}): {detail}");
        if let Some(next) = next {
            m.push_str(&format!("; allowed next: \"{next}\""));
        }
        denied_by_stage_guard(&m)
    };
    let skip_from_created = {
        // A second Workflow at the entry stage, for the skip.
        t.create_ok(BOB, &workflow_at("task-4", Some(PR_CREATED)))?;
        t.move_to(BOB, "task-4", PR_APPROVED)?
    };
    expect_error(
        &skip_from_created,
        &denied_by_stage_guard(&format!(
            "stage change \"{PR_CREATED}\" -> \"{PR_APPROVED}\" on {ns}/task-4 denied (skip): skips \"{READY_FOR_QA}\"; allowed next: \"{READY_FOR_QA}\""
        )),
    )?;

    let cases = [
        (
            t.move_to(BOB, "task-3", PR_CREATED)?,
            at(
                &format!("\"{READY_FOR_QA}\" -> \"{PR_CREATED}\""),
                "regression",
                &format!("moves back from \"{READY_FOR_QA}\" to \"{PR_CREATED}\""),
                Some(PR_APPROVED),
            ),
        ),
        (
            t.move_to(BOB, "task-3", "waiting-for-godot")?,
            at(
                &format!("\"{READY_FOR_QA}\" -> \"waiting-for-godot\""),
                "unknown-stage",
                "\"waiting-for-godot\" is not a known stage",
                Some(PR_APPROVED),
            ),
        ),
        (
            t.kubectl(BOB)?
                .args(["label", "workflow", "task-3"])
                .arg(format!("{STAGE_LABEL}-"))
                .run()?,
            at(
                &format!("\"{READY_FOR_QA}\" -> none"),
                "label-removed",
                "removes the current-stage label",
                Some(PR_APPROVED),
            ),
        ),
        (
            t.patch(
                BOB,
                "task-3",
                "json",
                &json!([{"op": "remove", "path": "/metadata/labels/current-stage"}]),
            )?,
            at(
                &format!("\"{READY_FOR_QA}\" -> none"),
                "label-removed",
                "removes the current-stage label",
                Some(PR_APPROVED),
            ),
        ),
        (
            t.patch(
                BOB,
                "task-3",
                "merge",
                &json!({"metadata": {
                    "labels": {STAGE_LABEL: PR_APPROVED},
                    "annotations": {OVERRIDE: "I say so"}}}),
            )?,
            at(
                &format!("\"{READY_FOR_QA}\" -> \"{PR_APPROVED}\""),
                "override-not-permitted",
                "bob may not force stage changes (not listed under override.users or override.groups); remove the stage-guard.io/override-reason annotation",
                None,
            ),
        ),
    ];
    for (out, expected) in &cases {
        expect_error(out, expected)?;
    }
    let after = t.get("task-3")?;
    ensure!(
        after["metadata"] == before["metadata"],
        "a denied write changed the object:\nbefore {}\nafter  {}",
        before["metadata"],
        after["metadata"]
    );
    // Every denial is counted by reason and audited with the decision.
    let metrics = t.metrics()?;
    for (reason, n) in [
        ("skip", 1.0),
        ("regression", 1.0),
        ("unknown-stage", 1.0),
        ("label-removed", 2.0),
        ("override-not-permitted", 1.0),
    ] {
        let counted = crate::support::checks::metric_sum(
            &metrics,
            "stage_guard_denials_total",
            &[("reason", reason)],
        );
        ensure!(
            counted == n,
            "stage_guard_denials_total{{reason={reason}}} = {counted}, want {n}"
        );
    }
    let denied: Vec<_> = t
        .audit_events()?
        .into_iter()
        .filter(|e| e["annotations"]["validate.stage-guard.io/decision"] == "denied")
        .collect();
    ensure!(
        denied.len() == 6,
        "{} audit events with validate.stage-guard.io/decision=denied, want 6",
        denied.len()
    );
    ensure!(
        denied.iter().all(|e| e["responseStatus"]["code"] == 403
            && e["annotations"]["validate.stage-guard.io/reason"].is_string()),
        "denied events: {denied:?}"
    );
    Ok(())
}

fn a_permitted_override_forces_a_change_and_records_the_reason(suite: &Suite) -> Result<()> {
    let t = suite.install(
        "override",
        Setup::config(ConfigSpec {
            override_users: vec!["alice"],
            ..ConfigSpec::default()
        }),
    )?;
    t.create_ok(BOB, &workflow_at("task-5", Some(PR_CREATED)))?;
    let forced = t.patch(
        ALICE,
        "task-5",
        "merge",
        &json!({"metadata": {
            "labels": {STAGE_LABEL: PR_APPROVED},
            "annotations": {OVERRIDE: "approved in the review meeting"}}}),
    )?;
    let stderr = forced.stderr.clone();
    forced.ok()?;
    let ns = &t.ns;
    ensure!(
        stderr.trim_end()
            == format!(
                "Warning: forced: {ns}/task-5 \"{PR_CREATED}\" -> \"{PR_APPROVED}\" by alice"
            ),
        "kubectl printed: {stderr}"
    );
    let stored = t.get("task-5")?;
    ensure!(stage_of(&stored).as_deref() == Some(PR_APPROVED));
    ensure!(
        stored["metadata"]["annotations"][OVERRIDE].is_null(),
        "the override annotation was stored"
    );
    let history = history_of(&stored)?;
    ensure!(history.len() == 2, "history {history:?}");
    ensure!(
        history[1]["override"] == "approved in the review meeting" && history[1]["by"] == "alice",
        "last entry {}",
        history[1]
    );
    let audited = t.audit_events()?.into_iter().any(|e| {
        e["annotations"]["validate.stage-guard.io/reason"] == "override"
            && e["annotations"]["validate.stage-guard.io/decision"] == "allowed"
            && e["user"]["username"] == "alice"
    });
    ensure!(audited, "no audit event with reason override for alice");
    Ok(())
}

fn warn_mode_admits_a_skip_with_a_warning(suite: &Suite) -> Result<()> {
    let t = suite.install(
        "warn",
        Setup::config(ConfigSpec {
            mode: "warn",
            ..ConfigSpec::default()
        }),
    )?;
    t.create_ok(ALICE, &workflow_at("task-6", Some(PR_CREATED)))?;
    let out = t.move_to(ALICE, "task-6", PR_APPROVED)?;
    let stderr = out.stderr.clone();
    out.ok()?;
    // The fullest wording that keeps to 120 characters (SPEC 4.7): the workflow, the change and
    // what is allowed next; what is skipped only when the namespace's name leaves room for it.
    let ns = &t.ns;
    let warning = [
        format!(
            "warn: {ns}/task-6 \"{PR_CREATED}\" -> \"{PR_APPROVED}\" skips \"{READY_FOR_QA}\"; allowed next: \"{READY_FOR_QA}\""
        ),
        format!(
            "warn: {ns}/task-6 \"{PR_CREATED}\" -> \"{PR_APPROVED}\" skips 1 stage; allowed next: \"{READY_FOR_QA}\""
        ),
        format!(
            "warn: {ns}/task-6 \"{PR_CREATED}\" -> \"{PR_APPROVED}\" (skip); allowed next: \"{READY_FOR_QA}\""
        ),
    ]
    .into_iter()
    .find(|w| w.chars().count() <= 120)
    .unwrap_or_default();
    ensure!(
        stderr.trim_end() == format!("Warning: {warning}"),
        "kubectl printed: {stderr}\nexpected Warning: {warning}"
    );
    let stored = t.get("task-6")?;
    ensure!(stage_of(&stored).as_deref() == Some(PR_APPROVED));
    ensure!(
        moves(&stored)?.last() == Some(&step(Some(PR_CREATED), Some(PR_APPROVED), "alice")),
        "history {:?}",
        moves(&stored)?
    );
    let warned = t
        .audit_events()?
        .into_iter()
        .any(|e| e["annotations"]["validate.stage-guard.io/decision"] == "warned");
    ensure!(warned, "no audit event with decision warned");
    Ok(())
}

fn clients_cannot_write_the_history(suite: &Suite) -> Result<()> {
    let t = suite.install("history", Setup::default())?;
    t.create_ok(ALICE, &workflow_at("task-7", Some(PR_CREATED)))?;
    let stored = t.get("task-7")?;
    let forged =
        r#"[{"from":null,"to":"waiting-pr-approved","at":"2026-01-01T00:00:00Z","by":"mallory"}]"#;
    let discarded = format!(
        "Warning: {HISTORY} is written by stage-guard: the edit to it on {}/task-7 was discarded",
        t.ns
    );
    // Each write succeeds, and kubectl prints the mutating webhook's warning that the edit was not kept.
    let said = |out: stage_guard_testenv::CliOutput, what: &str| -> Result<()> {
        ensure!(out.success(), "{what}: {}", out.stderr);
        ensure!(
            out.stderr.lines().any(|l| l.trim() == discarded),
            "{what}: kubectl did not print {discarded:?} but:\n{}",
            out.stderr
        );
        Ok(())
    };
    let counted = || -> Result<f64> {
        Ok(crate::support::checks::metric_sum(
            &t.metrics()?,
            "stage_guard_history_edits_discarded_total",
            &[],
        ))
    };
    let before = counted()?;
    // An edit of the history alone, its removal, and an edit beside a legal stage change.
    said(
        t.kubectl(BOB)?
            .args(["annotate", "workflow", "task-7", "--overwrite"])
            .arg(format!("{HISTORY}={forged}"))
            .run()?,
        "annotate",
    )?;
    ensure!(
        history_of(&t.get("task-7")?)? == history_of(&stored)?,
        "an annotate changed the stored history"
    );
    said(
        t.kubectl(BOB)?
            .args(["annotate", "workflow", "task-7"])
            .arg(format!("{HISTORY}-"))
            .run()?,
        "remove the annotation",
    )?;
    ensure!(
        history_of(&t.get("task-7")?)? == history_of(&stored)?,
        "removing the annotation removed the stored history"
    );
    said(
        t.patch(
            BOB,
            "task-7",
            "merge",
            &json!({"metadata": {"labels": {STAGE_LABEL: READY_FOR_QA}, "annotations": {HISTORY: forged}}}),
        )?,
        "a stage change with a forged history",
    )?;
    ensure!(
        moves(&t.get("task-7")?)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(Some(PR_CREATED), Some(READY_FOR_QA), "bob"),
            ],
        "history {:?}",
        moves(&t.get("task-7")?)?
    );
    ensure!(
        counted()? - before == 3.0,
        "stage_guard_history_edits_discarded_total moved by {}",
        counted()? - before
    );
    // A legal move that leaves the history alone says nothing of the kind.
    let out = t.move_to(ARGO_WORKFLOW, "task-7", PR_APPROVED)?;
    ensure!(
        out.success() && !out.stderr.contains("discarded"),
        "{}",
        out.stderr
    );

    // An unlabelled Workflow is never sent (objectSelector), so it keeps whatever history it is
    // created with; when it enters its first stage, that history is not built on.
    let mut plain = workflow_at("plain", None);
    plain["metadata"]["annotations"] = json!({ HISTORY: forged });
    t.create_ok(BOB, &plain)?;
    ensure!(
        t.get("plain")?["metadata"]["annotations"][HISTORY] == forged,
        "the unlabelled Workflow's annotation was changed"
    );
    t.move_to(BOB, "plain", PR_CREATED)?.ok()?;
    ensure!(
        moves(&t.get("plain")?)? == vec![step(None, Some(PR_CREATED), "bob")],
        "a Workflow entering its first stage built on a forged history: {:?}",
        moves(&t.get("plain")?)?
    );
    Ok(())
}
