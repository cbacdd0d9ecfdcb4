//! SPEC 4.4-4.5 through the real API server: the ways a Workflow is created, and resubmitted
//! Workflows under `resubmit: reset` and `keep`.

use crate::Scenario;
use crate::harness::*;
use crate::support::fixtures::ConfigSpec;
use anyhow::{Context, Result, ensure};
use stage_guard_testenv::{ALICE, ARGO_WORKFLOW};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "creates_without_a_label_and_at_the_entry_stage_are_admitted",
        run: creates_without_a_label_and_at_the_entry_stage_are_admitted,
    },
    Scenario {
        name: "creates_past_the_entry_or_at_an_unknown_stage_are_denied",
        run: creates_past_the_entry_or_at_an_unknown_stage_are_denied,
    },
    Scenario {
        name: "generate_name_creates_are_stamped_with_the_generated_object",
        run: generate_name_creates_are_stamped_with_the_generated_object,
    },
    Scenario {
        name: "resubmit_reset_starts_the_copy_from_the_beginning",
        run: resubmit_reset_starts_the_copy_from_the_beginning,
    },
    Scenario {
        name: "resubmit_keep_admits_the_copy_where_it_was",
        run: resubmit_keep_admits_the_copy_where_it_was,
    },
];

fn creates_without_a_label_and_at_the_entry_stage_are_admitted(suite: &Suite) -> Result<()> {
    let t = suite.install("create", Setup::default())?;
    let plain = t.create_ok(ALICE, &workflow_at("plain", None))?;
    ensure!(stage_of(&plain).is_none());
    ensure!(
        plain["metadata"]["annotations"][HISTORY].is_null(),
        "an unlabelled create got a history: {}",
        plain["metadata"]
    );

    // Client-supplied history on CREATE is discarded (SPEC 4.4).
    let forged = r#"[{"from":"waiting-ready-for-qa","to":"waiting-pr-approved","at":"2026-01-01T00:00:00Z","by":"mallory"}]"#;
    let entry = t.create_ok(
        ARGO_WORKFLOW,
        &workflow(
            "at-entry",
            &[(STAGE_LABEL, PR_CREATED)],
            &[(HISTORY, forged)],
        ),
    )?;
    ensure!(stage_of(&entry).as_deref() == Some(PR_CREATED));
    ensure!(
        moves(&entry)?
            == vec![step(
                None,
                Some(PR_CREATED),
                "system:serviceaccount:argo:argo-workflow"
            )],
        "history {:?}",
        moves(&entry)?
    );

    // Labelling an unlabelled Workflow later is an entry too.
    t.move_to(ALICE, "plain", PR_CREATED)?.ok()?;
    ensure!(moves(&t.get("plain")?)? == vec![step(None, Some(PR_CREATED), "alice")]);
    Ok(())
}

fn creates_past_the_entry_or_at_an_unknown_stage_are_denied(suite: &Suite) -> Result<()> {
    let t = suite.install("create-denied", Setup::default())?;
    let ns = &t.ns;
    let skip = t.create(ALICE, &workflow_at("skipper", Some(READY_FOR_QA)))?;
    expect_error(
        &skip,
        &create_denied_by_stage_guard(&format!(
            "stage change none -> \"{READY_FOR_QA}\" on {ns}/skipper denied (skip): skips \"{PR_CREATED}\"; allowed next: \"{PR_CREATED}\""
        )),
    )?;
    let unknown = t.create(ALICE, &workflow_at("stranger", Some("somewhere-else")))?;
    expect_error(
        &unknown,
        &create_denied_by_stage_guard(&format!(
            "stage change none -> \"somewhere-else\" on {ns}/stranger denied (unknown-stage): \"somewhere-else\" is not a known stage; allowed next: \"{PR_CREATED}\""
        )),
    )?;
    let listed = t
        .kubectl(ALICE)?
        .args(["get", "workflows", "-o", "name"])
        .ok()?;
    ensure!(
        listed.trim().is_empty(),
        "denied creates were stored: {listed}"
    );
    Ok(())
}

fn generate_name_creates_are_stamped_with_the_generated_object(suite: &Suite) -> Result<()> {
    let t = suite.install("generate-name", Setup::default())?;
    let mut object = workflow_at("unused", Some(PR_CREATED));
    object["metadata"]
        .as_object_mut()
        .context("metadata")?
        .remove("name");
    object["metadata"]["generateName"] = "pipeline-".into();
    let created = t.create_ok(ALICE, &object)?;
    let name = created["metadata"]["name"].as_str().unwrap_or_default();
    ensure!(
        name.starts_with("pipeline-") && name.len() > "pipeline-".len(),
        "name {name:?}"
    );
    ensure!(moves(&created)? == vec![step(None, Some(PR_CREATED), "alice")]);
    // The validating webhook sees the generated name (the mutating one does not): the audit
    // annotation carries the transition.
    let audited = t.audit_events()?.into_iter().any(|e| {
        e["verb"] == "create"
            && e["annotations"]["validate.stage-guard.io/transition"]
                == format!("none->{PR_CREATED}").as_str()
    });
    ensure!(
        audited,
        "no audited create with transition none->{PR_CREATED}"
    );
    Ok(())
}

/// A Workflow as `argo resubmit` creates it from `old_name`: every label (the stage included) and
/// every annotation (the history included) copied, plus the resubmitted-from label.
fn resubmitted(name: &str, old_name: &str, stage: &str) -> serde_json::Value {
    let copied_history = format!(
        r#"[{{"from":null,"to":"{PR_CREATED}","at":"2026-11-26T09:22:46Z","by":"alice"}},{{"from":"{PR_CREATED}","to":"{stage}","at":"2026-11-26T10:01:12Z","by":"alice"}}]"#
    );
    workflow(
        name,
        &[(STAGE_LABEL, stage), (RESUBMITTED_FROM, old_name)],
        &[(HISTORY, &copied_history)],
    )
}

fn resubmit_reset_starts_the_copy_from_the_beginning(suite: &Suite) -> Result<()> {
    let t = suite.install("resubmit-reset", Setup::default())?;
    let created = t.create_ok(ALICE, &resubmitted("run-2", "run-1", READY_FOR_QA))?;
    ensure!(
        stage_of(&created).is_none(),
        "stage label kept: {}",
        created["metadata"]
    );
    ensure!(
        created["metadata"]["annotations"][HISTORY].is_null(),
        "copied history kept: {}",
        created["metadata"]
    );
    ensure!(created["metadata"]["labels"][RESUBMITTED_FROM] == "run-1");
    // The new run enters the pipeline at its entry stage like any other.
    t.move_to(ALICE, "run-2", PR_CREATED)?.ok()?;
    ensure!(moves(&t.get("run-2")?)? == vec![step(None, Some(PR_CREATED), "alice")]);
    Ok(())
}

fn resubmit_keep_admits_the_copy_where_it_was(suite: &Suite) -> Result<()> {
    let t = suite.install(
        "resubmit-keep",
        Setup::config(ConfigSpec {
            resubmit: "keep",
            ..ConfigSpec::default()
        }),
    )?;
    let created = t.create_ok(ALICE, &resubmitted("run-2", "run-1", READY_FOR_QA))?;
    ensure!(stage_of(&created).as_deref() == Some(READY_FOR_QA));
    ensure!(
        moves(&created)? == vec![step(None, Some(READY_FOR_QA), "alice")],
        "history {:?}",
        moves(&created)?
    );
    let audited = t.audit_events()?.into_iter().any(|e| {
        e["verb"] == "create" && e["annotations"]["validate.stage-guard.io/reason"] == "resubmit"
    });
    ensure!(audited, "no audited create with reason resubmit");
    // Without the resubmitted-from label the same create is a skip.
    let ns = &t.ns;
    let out = t.create(ALICE, &workflow_at("not-resubmitted", Some(READY_FOR_QA)))?;
    expect_error(
        &out,
        &create_denied_by_stage_guard(&format!(
            "stage change none -> \"{READY_FOR_QA}\" on {ns}/not-resubmitted denied (skip): skips \"{PR_CREATED}\"; allowed next: \"{PR_CREATED}\""
        )),
    )?;
    Ok(())
}
