//! Changes produced by the real kubectl (`--local`, no cluster needed) and sent as the PUT that
//! kubectl would send, through the API-server harness.

use crate::support::apiserver::ApiServer;
use crate::support::checks::*;
use crate::support::fixtures::*;
use crate::support::process::Webhook;
use crate::support::review::UserInfo;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The real kubectl; a missing one fails the test with a message naming it.
fn kubectl() -> PathBuf {
    stage_guard_testenv::tools::kubectl().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs kubectl on the object written to a file and returns the object it prints.
fn kubectl_local(kubectl: &PathBuf, object: &Value, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.json");
    std::fs::write(&file, serde_json::to_vec_pretty(object).unwrap()).unwrap();
    let out = Command::new(kubectl)
        .args(&args[..1])
        .arg("--local")
        .arg("-f")
        .arg(&file)
        .args(&args[1..])
        .args(["-o", "json"])
        // No cluster is involved; an empty kubeconfig path keeps it from reading the user's.
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl printed JSON")
}

async fn at_entry(api: &ApiServer) -> Value {
    api.create(
        &UserInfo::workflow_step(),
        workflow_from_template("agent-pipeline", Some(PR_CREATED)),
        false,
    )
    .await
    .unwrap()
    .object
}

#[tokio::test]
async fn kubectl_label_advances_and_skips_are_judged() {
    let kubectl = kubectl();
    let webhook = Webhook::start();
    let api = webhook.api_server();
    api.set_reinvocation(true);
    let user = UserInfo::human("sensor-helper");
    let stored = at_entry(&api).await;

    let skipped = kubectl_local(
        &kubectl,
        &stored,
        &["label", "current-stage=waiting-pr-approved", "--overwrite"],
    );
    let err = api.update(&user, skipped, false).await.unwrap_err();
    assert_denied(&err, "skip");
    assert!(
        err.message.contains("allowed next:") && err.message.contains(READY_FOR_QA),
        "{}",
        err.message
    );

    let labelled = kubectl_local(
        &kubectl,
        &stored,
        &["label", "current-stage=waiting-ready-for-qa", "--overwrite"],
    );
    assert_eq!(
        rv(&labelled),
        rv(&stored),
        "kubectl keeps the resourceVersion"
    );
    let out = api.update(&user, labelled, false).await.unwrap();
    let h = history(&out.object);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_entry(&h[1], Some(PR_CREATED), Some(READY_FOR_QA), "sensor-helper");

    // The same edit made from the old read is stale now.
    let stale = kubectl_local(
        &kubectl,
        &stored,
        &["label", "current-stage=waiting-ready-for-qa", "--overwrite"],
    );
    let err = api.update(&user, stale, false).await.unwrap_err();
    assert_eq!(err.code, 409, "{err:?}");
    api.assert_no_violations();
}

#[tokio::test]
async fn kubectl_merge_patches_are_judged() {
    let kubectl = kubectl();
    let webhook = Webhook::start();
    let api = webhook.api_server();
    api.set_reinvocation(true);
    let step = UserInfo::workflow_step();
    let stored = at_entry(&api).await;
    let patch = |stage: &str| stage_merge_patch(stage).to_string();

    let unknown = kubectl_local(
        &kubectl,
        &stored,
        &[
            "patch",
            "--type",
            "merge",
            "-p",
            &patch("waiting-for-godot"),
        ],
    );
    let err = api.update(&step, unknown, false).await.unwrap_err();
    assert_denied(&err, "unknown-stage");

    let qa = kubectl_local(
        &kubectl,
        &stored,
        &["patch", "--type", "merge", "-p", &patch(READY_FOR_QA)],
    );
    let qa = api.update(&step, qa, false).await.unwrap().object;
    assert_entry(
        &history(&qa)[1],
        Some(PR_CREATED),
        Some(READY_FOR_QA),
        &step.username,
    );

    let back = kubectl_local(
        &kubectl,
        &qa,
        &["patch", "--type", "merge", "-p", &patch(PR_CREATED)],
    );
    assert_denied(
        &api.update(&step, back, false).await.unwrap_err(),
        "regression",
    );

    let approved = kubectl_local(
        &kubectl,
        &qa,
        &["patch", "--type", "merge", "-p", &patch(PR_APPROVED)],
    );
    let approved = api.update(&step, approved, false).await.unwrap().object;
    assert_eq!(history(&approved).len(), 3);
    assert_eq!(api.store().get(NS, &name(&approved)).unwrap(), approved);
    api.assert_no_violations();
}

#[tokio::test]
async fn kubectl_label_removal_is_denied() {
    let kubectl = kubectl();
    let webhook = Webhook::start();
    let api = webhook.api_server();
    api.set_reinvocation(true);
    let stored = at_entry(&api).await;
    let removed = kubectl_local(&kubectl, &stored, &["label", "current-stage-"]);
    assert_eq!(stage(&removed), None, "kubectl removed the label");
    let err = api
        .update(&UserInfo::bob(), removed, false)
        .await
        .unwrap_err();
    assert_denied(&err, "label-removed");
    assert_eq!(api.store().get(NS, &name(&stored)).unwrap(), stored);
    api.assert_no_violations();
}
