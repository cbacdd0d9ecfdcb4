//! The whole admission pipeline (SPEC 4) through the API-server harness against the built binary.
//! Reinvocation is on for every API server in this file, so every mutating call is also checked
//! for idempotency.

use crate::support::apiserver::{ApiServer, Outcome, Patch, Stored};
use crate::support::checks::*;
use crate::support::fixtures::*;
use crate::support::process::Webhook;
use crate::support::review::{Hook, Operation, ReviewRequest, UserInfo, options};
use serde_json::{Value, json};

fn start(config: Option<&str>) -> (Webhook, ApiServer) {
    let webhook = match config {
        Some(yaml) => Webhook::with_config(yaml),
        None => Webhook::start(),
    };
    let api = webhook.api_server();
    api.set_reinvocation(true);
    (webhook, api)
}

async fn create_at(api: &ApiServer, user: &UserInfo, stage: Option<&str>) -> Stored {
    api.create(user, workflow_from_template("agent-pipeline", stage), false)
        .await
        .unwrap_or_else(|e| panic!("create at {stage:?}: {e:?}"))
}

async fn merge(
    api: &ApiServer,
    user: &UserInfo,
    name: &str,
    patch: Value,
) -> Result<Stored, crate::support::ApiError> {
    api.patch(user, NS, name, Patch::Merge(patch), false).await
}

#[track_caller]
fn assert_no_mutating_patch(out_calls: &[&crate::support::CallRecord]) {
    assert!(!out_calls.is_empty(), "no mutating call made");
    for call in out_calls {
        assert!(
            call.has_no_patch_keys(),
            "mutating response carried a patch: {call:?}"
        );
    }
}

fn stored(api: &ApiServer, name: &str) -> Value {
    api.store().get(NS, name).expect("stored object")
}

fn validating_review(user: &UserInfo, object: Value, old: &Value) -> ReviewRequest {
    ReviewRequest {
        hook: Hook::Validating,
        operation: Operation::Update,
        user: user.clone(),
        namespace: NS.into(),
        name: Some(name(old)),
        object,
        old_object: old.clone(),
        dry_run: false,
        options: options("UpdateOptions", false),
    }
}

/// A denied PATCH: 403 Forbidden with the reason code, a message naming the workflow and the change,
/// audit `transition`, and the stored object untouched.
async fn assert_patch_denied(
    api: &ApiServer,
    user: &UserInfo,
    wf: &str,
    patch: Patch,
    reason: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> crate::support::ApiError {
    let before = stored(api, wf);
    let err = api
        .patch(user, NS, wf, patch, false)
        .await
        .expect_err("the change must be denied");
    assert_denied(&err, reason);
    assert!(
        err.message.contains(&format!("{NS}/{wf}")),
        "message names the workflow: {}",
        err.message
    );
    for stage in [from, to].into_iter().flatten() {
        assert!(
            err.message.contains(stage),
            "message names {stage}: {}",
            err.message
        );
    }
    assert_eq!(
        err.validating_audit("transition"),
        Some(transition(from, to).as_str())
    );
    assert_eq!(
        stored(api, wf),
        before,
        "a denied change left the stored object unchanged"
    );
    err
}

// === CREATE ===

#[tokio::test]
async fn create_with_generate_name_at_the_entry_stage_stamps_the_first_entry() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let out = create_at(&api, &step, Some(PR_CREATED)).await;

    let wf = name(&out.object);
    assert!(wf.starts_with("agent-pipeline-"), "generated name {wf}");
    assert_eq!(stored(&api, &wf), out.object);
    assert_eq!(stage(&out.object).as_deref(), Some(PR_CREATED));
    let h = history(&out.object);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_entry(&h[0], None, Some(PR_CREATED), &step.username);
    // The compact JSON form of SPEC 4.3.
    let raw = history_raw(&out.object).unwrap();
    assert!(
        !raw.contains(' ') && !raw.contains('\n'),
        "history is compact JSON: {raw}"
    );

    let mutating = out.calls_to(Hook::Mutating);
    assert!(mutating[0].request["request"].get("name").is_none());
    assert!(
        mutating[0].patch.is_some(),
        "the entry was stamped by the mutating webhook"
    );
    assert_eq!(out.validating_audit("decision"), Some("allowed"));
    assert_eq!(out.validating_audit("reason"), Some("entry"));
    assert_eq!(
        out.validating_audit("transition"),
        Some(transition(None, Some(PR_CREATED)).as_str())
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn create_without_a_stage_label_is_admitted_untouched() {
    let (_wh, api) = start(None);
    let out = create_at(&api, &UserInfo::workflow_step(), None).await;
    assert_eq!(stage(&out.object), None);
    assert_eq!(
        history_raw(&out.object),
        None,
        "no history annotation (never \"[]\")"
    );
    assert_no_mutating_patch(&out.calls_to(Hook::Mutating));
    api.assert_no_violations();
}

#[tokio::test]
async fn create_discards_client_supplied_history() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let forged = json!([
        history_entry(
            None,
            Some(PR_CREATED),
            "system:admin",
            "2026-01-01T00:00:00Z"
        ),
        history_entry(
            Some(PR_CREATED),
            Some(READY_FOR_QA),
            "system:admin",
            "2026-01-01T00:01:00Z"
        ),
    ])
    .to_string();

    let wf = with_annotation(
        &workflow_from_template("agent-pipeline", Some(PR_CREATED)),
        HISTORY,
        &forged,
    );
    let out = api.create(&step, wf, false).await.unwrap();
    let h = history(&out.object);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_entry(&h[0], None, Some(PR_CREATED), &step.username);

    // An unlabelled Workflow is not stage-guard's business (the objectSelector does not even send
    // it): its annotation stays as written. Once it enters its first stage, the forged history is not
    // built on: the history starts fresh.
    let wf = with_annotation(
        &workflow_from_template("agent-pipeline", None),
        HISTORY,
        &forged,
    );
    let out = api.create(&step, wf, false).await.unwrap();
    assert_eq!(history_raw(&out.object), Some(forged.clone()));
    let name = out.object["metadata"]["name"].as_str().unwrap().to_owned();
    let label = json!({"metadata": {"labels": {STAGE_LABEL: PR_CREATED}}});
    let out = api
        .patch(&step, NS, &name, Patch::Merge(label), false)
        .await
        .unwrap();
    let h = history(&out.object);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_entry(&h[0], None, Some(PR_CREATED), &step.username);
    api.assert_no_violations();
}

#[tokio::test]
async fn create_at_a_later_stage_is_denied_as_a_skip() {
    let (_wh, api) = start(None);
    let err = api
        .create(
            &UserInfo::workflow_step(),
            workflow_from_template("agent-pipeline", Some(READY_FOR_QA)),
            false,
        )
        .await
        .unwrap_err();
    assert_denied(&err, "skip");
    assert!(
        err.message.contains(READY_FOR_QA) && err.message.contains("allowed next:"),
        "{}",
        err.message
    );
    assert!(api.store().is_empty());
    api.assert_no_violations();
}

// === the controller's traffic ===

#[tokio::test]
async fn controller_updates_pass_without_a_patch() {
    let (_wh, api) = start(None);
    let controller = UserInfo::controller();
    let created = create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED)).await;

    let first = api
        .update(&controller, controller_first_update(&created.object), false)
        .await
        .unwrap();
    assert_no_mutating_patch(&first.calls_to(Hook::Mutating));
    assert_eq!(
        label(&first.object, LABEL_PHASE).as_deref(),
        Some("Running")
    );
    assert_eq!(stage(&first.object).as_deref(), Some(PR_CREATED));
    assert_eq!(history_raw(&first.object), history_raw(&created.object));

    let mut current = first.object;
    for nodes in [2, 5, 9] {
        let out = api
            .update(&controller, status_update(&current, nodes), false)
            .await
            .unwrap();
        assert_no_mutating_patch(&out.calls_to(Hook::Mutating));
        assert_eq!(
            out.object["status"]["nodes"].as_object().unwrap().len(),
            nodes
        );
        assert_eq!(history_raw(&out.object), history_raw(&created.object));
        current = out.object;
    }
    api.assert_no_violations();
}

// === stage changes ===

#[tokio::test]
async fn each_legal_advance_appends_exactly_one_entry() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let alice = UserInfo::alice();
    let created = create_at(&api, &step, Some(PR_CREATED)).await;
    let wf = name(&created.object);

    let qa = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap();
    let h = history(&qa.object);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        h[0],
        history(&created.object)[0],
        "older entries are kept as they were"
    );
    assert_entry(&h[1], Some(PR_CREATED), Some(READY_FOR_QA), &step.username);
    assert_eq!(qa.validating_audit("decision"), Some("allowed"));
    assert_eq!(qa.validating_audit("reason"), Some("advance"));
    assert_eq!(
        qa.validating_audit("transition"),
        Some(transition(Some(PR_CREATED), Some(READY_FOR_QA)).as_str())
    );

    let approved = merge(&api, &alice, &wf, stage_merge_patch(PR_APPROVED))
        .await
        .unwrap();
    let h2 = history(&approved.object);
    assert_eq!(h2.len(), 3, "{h2:?}");
    assert_eq!(h2[..2], h[..], "append-only");
    assert_entry(&h2[2], Some(READY_FOR_QA), Some(PR_APPROVED), "alice");
    assert_eq!(
        approved.object["metadata"]["generation"],
        qa.object["metadata"]["generation"]
    );
    assert_eq!(stored(&api, &wf), approved.object);

    // Setting the stage it already has is no change: nothing stamped.
    let again = merge(&api, &alice, &wf, stage_merge_patch(PR_APPROVED))
        .await
        .unwrap();
    assert_eq!(history(&again.object), h2);
    assert_no_mutating_patch(&again.calls_to(Hook::Mutating));
    api.assert_no_violations();
}

#[tokio::test]
async fn a_skip_is_denied_with_what_is_allowed_next() {
    let (_wh, api) = start(None);
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );
    let err = assert_patch_denied(
        &api,
        &UserInfo::workflow_step(),
        &wf,
        Patch::Merge(stage_merge_patch(PR_APPROVED)),
        "skip",
        Some(PR_CREATED),
        Some(PR_APPROVED),
    )
    .await;
    let (_, next) = err
        .message
        .split_once("allowed next:")
        .expect("`allowed next:` in the message");
    assert!(next.contains(READY_FOR_QA), "{}", err.message);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_regression_is_denied() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap();
    assert_patch_denied(
        &api,
        &step,
        &wf,
        Patch::Merge(stage_merge_patch(PR_CREATED)),
        "regression",
        Some(READY_FOR_QA),
        Some(PR_CREATED),
    )
    .await;
    api.assert_no_violations();
}

#[tokio::test]
async fn an_unknown_stage_is_denied() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    assert_patch_denied(
        &api,
        &step,
        &wf,
        Patch::Merge(stage_merge_patch("waiting-for-godot")),
        "unknown-stage",
        Some(PR_CREATED),
        Some("waiting-for-godot"),
    )
    .await;
    api.assert_no_violations();
}

#[tokio::test]
async fn removing_the_label_with_a_json_patch_is_denied() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    assert_patch_denied(
        &api,
        &step,
        &wf,
        Patch::Json(label_removal_json_patch()),
        "label-removed",
        Some(PR_CREATED),
        None,
    )
    .await;
    // A merge patch with null removes it as well.
    let by_merge = Patch::Merge(json!({"metadata": {"labels": {STAGE_LABEL: null}}}));
    assert_patch_denied(
        &api,
        &step,
        &wf,
        by_merge,
        "label-removed",
        Some(PR_CREATED),
        None,
    )
    .await;
    api.assert_no_violations();
}

#[tokio::test]
async fn unrelated_changes_of_an_object_at_an_illegal_stage_still_pass() {
    let (_wh, api) = start(None);
    // Stored before the webhook was installed, at a stage that is not configured.
    let old = api.store().seed(with_stage(
        &workflow_named("legacy", None),
        "waiting-legacy",
    ));
    let out = api
        .update(&UserInfo::controller(), status_update(&old, 3), false)
        .await
        .unwrap();
    assert_eq!(stage(&out.object).as_deref(), Some("waiting-legacy"));
    assert_no_mutating_patch(&out.calls_to(Hook::Mutating));
    // Moving it off the unknown stage is judged, though: O unknown, N != O.
    assert_patch_denied(
        &api,
        &UserInfo::workflow_step(),
        "legacy",
        Patch::Merge(stage_merge_patch(PR_CREATED)),
        "unknown-stage",
        Some("waiting-legacy"),
        Some(PR_CREATED),
    )
    .await;
    api.assert_no_violations();
}

#[tokio::test]
async fn labelling_an_unlabelled_workflow_is_judged_as_an_entry() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, None).await.object);
    assert_patch_denied(
        &api,
        &step,
        &wf,
        Patch::Merge(stage_merge_patch(READY_FOR_QA)),
        "skip",
        None,
        Some(READY_FOR_QA),
    )
    .await;
    let out = merge(&api, &step, &wf, stage_merge_patch(PR_CREATED))
        .await
        .unwrap();
    let h = history(&out.object);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_entry(&h[0], None, Some(PR_CREATED), &step.username);
    assert_eq!(out.validating_audit("reason"), Some("entry"));
    api.assert_no_violations();
}

#[tokio::test]
async fn configured_entry_stages_may_be_entered_directly() {
    let config = ConfigSpec {
        entry: Some(vec![PR_CREATED, READY_FOR_QA]),
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let step = UserInfo::workflow_step();
    let out = create_at(&api, &step, Some(READY_FOR_QA)).await;
    assert_entry(
        &history(&out.object)[0],
        None,
        Some(READY_FOR_QA),
        &step.username,
    );
    assert_eq!(out.validating_audit("reason"), Some("entry"));
    let err = api
        .create(
            &step,
            workflow_from_template("agent-pipeline", Some(PR_APPROVED)),
            false,
        )
        .await
        .unwrap_err();
    assert_denied(&err, "skip");
    api.assert_no_violations();
}

// === the history annotation belongs to stage-guard ===

#[tokio::test]
async fn dropped_or_edited_history_is_restored() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    let qa = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap();
    let original = history_raw(&qa.object).unwrap();

    let dropped = merge(
        &api,
        &UserInfo::bob(),
        &wf,
        json!({"metadata": {"labels": {"team": "x"}, "annotations": {HISTORY: null}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        history_raw(&dropped.object).as_deref(),
        Some(original.as_str()),
        "dropped history restored"
    );
    assert_eq!(
        label(&dropped.object, "team").as_deref(),
        Some("x"),
        "the rest of the change went through"
    );

    let mut edited = history(&qa.object);
    edited[0]["by"] = json!("bob");
    let edit = json!({"metadata": {"annotations": {HISTORY: Value::Array(edited).to_string()}}});
    let out = merge(&api, &UserInfo::bob(), &wf, edit).await.unwrap();
    assert_eq!(
        history_raw(&out.object).as_deref(),
        Some(original.as_str()),
        "edited history restored"
    );

    // A PUT that drops the history while changing the stage gets the old history plus the change.
    let put = without_annotation(&with_stage(&out.object, PR_APPROVED), HISTORY);
    let out = api.update(&step, put, false).await.unwrap();
    let h = history(&out.object);
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[..2], history(&qa.object)[..]);
    assert_entry(&h[2], Some(READY_FOR_QA), Some(PR_APPROVED), &step.username);
    api.assert_no_violations();
}

#[tokio::test]
async fn forged_history_entries_never_reach_the_store() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let bob = UserInfo::bob();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    let qa = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap()
        .object;

    // Through the pipeline: the forged entry rides along with a legal change.
    let mut forged = history(&qa);
    forged.push(json!({"from": READY_FOR_QA, "to": PR_APPROVED, "at": "2026-01-01T00:00:00Z", "by": "system:admin", "override": "trust me"}));
    let patch = json!({"metadata": {"labels": {STAGE_LABEL: PR_APPROVED}, "annotations": {HISTORY: Value::Array(forged).to_string()}}});
    match merge(&api, &bob, &wf, patch).await {
        Ok(out) => {
            let h = history(&out.object);
            assert_eq!(h.len(), 3, "{h:?}");
            assert_entry(&h[2], Some(READY_FOR_QA), Some(PR_APPROVED), "bob");
            assert!(!history_raw(&out.object).unwrap().contains("system:admin"));
        }
        Err(err) => assert_denied(&err, "history-tampered"),
    }

    // The validating webhook alone (nothing in front of it restored the history).
    let current = stored(&api, &wf);
    let mut edited = history(&current);
    edited[0]["by"] = json!("bob");
    let tampered = with_annotation(&current, HISTORY, &Value::Array(edited).to_string());
    let call = api.call(&validating_review(&bob, tampered, &current)).await;
    assert!(
        matches!(call.outcome, Outcome::Denied { code: 403, .. }),
        "{call:?}"
    );
    assert_eq!(
        call.audit.get("reason").map(String::as_str),
        Some("history-tampered")
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn validating_alone_refuses_a_change_without_its_entry_or_with_a_forged_override() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let bob = UserInfo::bob();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    let current = stored(&api, &wf);

    // A legal change whose history entry is missing (the mutating webhook was bypassed).
    let call = api
        .call(&validating_review(
            &bob,
            with_stage(&current, READY_FOR_QA),
            &current,
        ))
        .await;
    assert!(
        matches!(call.outcome, Outcome::Denied { code: 403, .. }),
        "{call:?}"
    );
    assert_eq!(
        call.audit.get("reason").map(String::as_str),
        Some("history-missing")
    );

    // A jump whose new entry claims an override for a requester who may not force changes.
    let mut h = history(&current);
    h.push(json!({"from": PR_CREATED, "to": PR_APPROVED, "at": crate::support::time::now_rfc3339(), "by": "bob", "override": "because"}));
    let forced = with_annotation(
        &with_stage(&current, PR_APPROVED),
        HISTORY,
        &Value::Array(h).to_string(),
    );
    let call = api.call(&validating_review(&bob, forced, &current)).await;
    assert!(
        matches!(call.outcome, Outcome::Denied { code: 403, .. }),
        "{call:?}"
    );
    assert_eq!(
        call.audit.get("reason").map(String::as_str),
        Some("override-not-permitted")
    );
    api.assert_no_violations();
}

// === override ===

fn override_config() -> String {
    ConfigSpec {
        override_users: vec!["alice"],
        override_groups: vec!["stage-admins"],
        ..ConfigSpec::default()
    }
    .yaml()
}

#[tokio::test]
async fn a_permitted_override_forces_a_jump_and_is_recorded() {
    let (_wh, api) = start(Some(&override_config()));
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );

    let out = merge(
        &api,
        &UserInfo::alice(),
        &wf,
        override_merge_patch(PR_APPROVED, "hotfix for the release"),
    )
    .await
    .unwrap();
    assert_eq!(stage(&out.object).as_deref(), Some(PR_APPROVED));
    let h = history(&out.object);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_override_entry(
        &h[1],
        Some(PR_CREATED),
        Some(PR_APPROVED),
        "alice",
        "hotfix for the release",
    );
    assert_eq!(
        annotation(&out.object, OVERRIDE),
        None,
        "the override annotation is never stored"
    );
    assert!(
        !out.warnings.is_empty(),
        "a forced change comes back with a warning"
    );
    assert_eq!(out.validating_audit("reason"), Some("override"));
    assert_eq!(
        out.validating_audit("transition"),
        Some(transition(Some(PR_CREATED), Some(PR_APPROVED)).as_str())
    );

    // A member of a permitted group may force as well.
    let carol = UserInfo::new("carol", &["system:authenticated", "stage-admins"]);
    let wf2 = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );
    let out = merge(
        &api,
        &carol,
        &wf2,
        override_merge_patch(PR_APPROVED, "release train"),
    )
    .await
    .unwrap();
    assert_override_entry(
        &history(&out.object)[1],
        Some(PR_CREATED),
        Some(PR_APPROVED),
        "carol",
        "release train",
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn an_override_on_a_legal_change_or_no_change_records_nothing_special() {
    let (_wh, api) = start(Some(&override_config()));
    let alice = UserInfo::alice();
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );

    let out = merge(
        &api,
        &alice,
        &wf,
        override_merge_patch(READY_FOR_QA, "just in case"),
    )
    .await
    .unwrap();
    let h = history(&out.object);
    assert_eq!(h.len(), 2);
    assert_entry(&h[1], Some(PR_CREATED), Some(READY_FOR_QA), "alice");
    assert_eq!(annotation(&out.object, OVERRIDE), None);

    let out = merge(
        &api,
        &alice,
        &wf,
        json!({"metadata": {"annotations": {OVERRIDE: "nothing to force"}}}),
    )
    .await
    .unwrap();
    assert_eq!(history(&out.object), h, "no stage change: nothing recorded");
    assert_eq!(annotation(&out.object, OVERRIDE), None);
    api.assert_no_violations();
}

#[tokio::test]
async fn an_override_annotation_already_stored_is_not_a_request() {
    let (_wh, api) = start(Some(&override_config()));
    // Written before the webhook was installed, with an override annotation on it.
    let legacy = api.store().seed(with_annotation(
        &workflow_named("legacy", Some(PR_CREATED)),
        OVERRIDE,
        "old reason",
    ));
    let out = api
        .update(&UserInfo::controller(), status_update(&legacy, 3), false)
        .await
        .unwrap();
    assert_eq!(stage(&out.object).as_deref(), Some(PR_CREATED));
    // An empty reason is no request either: bob's legal change goes through as an ordinary one.
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );
    let out = merge(
        &api,
        &UserInfo::bob(),
        &wf,
        override_merge_patch(READY_FOR_QA, ""),
    )
    .await
    .unwrap();
    assert_entry(
        &history(&out.object)[1],
        Some(PR_CREATED),
        Some(READY_FOR_QA),
        "bob",
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn an_override_by_an_unlisted_user_is_refused() {
    let (_wh, api) = start(Some(&override_config()));
    let bob = UserInfo::bob();
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );
    assert_patch_denied(
        &api,
        &bob,
        &wf,
        Patch::Merge(override_merge_patch(PR_APPROVED, "please")),
        "override-not-permitted",
        Some(PR_CREATED),
        Some(PR_APPROVED),
    )
    .await;

    // Whatever the stage change: a legal one, or none.
    let before = stored(&api, &wf);
    let err = merge(
        &api,
        &bob,
        &wf,
        override_merge_patch(READY_FOR_QA, "please"),
    )
    .await
    .unwrap_err();
    assert_denied(&err, "override-not-permitted");
    let err = merge(
        &api,
        &bob,
        &wf,
        json!({"metadata": {"annotations": {OVERRIDE: "please"}}}),
    )
    .await
    .unwrap_err();
    assert_denied(&err, "override-not-permitted");
    assert_eq!(stored(&api, &wf), before);
    api.assert_no_violations();
}

// === resubmit ===

async fn resubmit_source(api: &ApiServer) -> Value {
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(api, &step, Some(PR_CREATED)).await.object);
    let first = api
        .update(
            &UserInfo::controller(),
            controller_first_update(&stored(api, &wf)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(name(&first.object), wf);
    merge(api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap()
        .object
}

#[tokio::test]
async fn a_resubmitted_workflow_starts_over_under_reset() {
    let (_wh, api) = start(None);
    let old = resubmit_source(&api).await;
    let out = api
        .create(&UserInfo::argo_server(), resubmitted_from(&old), false)
        .await
        .unwrap();
    assert_eq!(label(&out.object, LABEL_RESUBMITTED_FROM), Some(name(&old)));
    assert_eq!(stage(&out.object), None, "stage label removed");
    assert_eq!(history_raw(&out.object), None, "copied history removed");
    assert_eq!(
        annotation(&out.object, "pipeline.example.com/task").as_deref(),
        Some("play-task-7"),
        "other annotations kept"
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn a_resubmitted_workflow_keeps_its_stage_under_keep() {
    let config = ConfigSpec {
        resubmit: "keep",
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let old = resubmit_source(&api).await;
    let server = UserInfo::argo_server();
    let out = api
        .create(&server, resubmitted_from(&old), false)
        .await
        .unwrap();
    assert_eq!(stage(&out.object).as_deref(), Some(READY_FOR_QA));
    let h = history(&out.object);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_entry(&h[0], None, Some(READY_FOR_QA), &server.username);
    assert_eq!(out.validating_audit("reason"), Some("resubmit"));
    api.assert_no_violations();
}

// === the API server's own rules ===

#[tokio::test]
async fn a_stale_put_gets_409_and_no_patch() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let created = create_at(&api, &step, Some(PR_CREATED)).await.object;
    let wf = name(&created);
    let qa = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap()
        .object;

    for body in [
        stale_put(&created, READY_FOR_QA),
        status_update(&created, 4),
    ] {
        let err = api
            .update(&UserInfo::controller(), body, false)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code, err.reason.as_str()),
            (409, "Conflict"),
            "{err:?}"
        );
        assert_no_mutating_patch(&err.calls_to(Hook::Mutating));
        assert!(err.calls_to(Hook::Validating).is_empty());
        assert_eq!(stored(&api, &wf), qa);
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn dry_run_is_judged_but_not_stored() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();

    let out = api
        .create(
            &step,
            workflow_from_template("agent-pipeline", Some(PR_CREATED)),
            true,
        )
        .await
        .unwrap();
    assert_eq!(history(&out.object).len(), 1);
    assert!(
        out.calls
            .iter()
            .all(|c| c.request["request"]["dryRun"] == true)
    );
    let err = api
        .create(
            &step,
            workflow_from_template("agent-pipeline", Some(PR_APPROVED)),
            true,
        )
        .await
        .unwrap_err();
    assert_denied(&err, "skip");
    assert!(api.store().is_empty(), "dry-run stores nothing");

    let created = create_at(&api, &step, Some(PR_CREATED)).await.object;
    let wf = name(&created);
    let out = api
        .patch(
            &step,
            NS,
            &wf,
            Patch::Merge(stage_merge_patch(READY_FOR_QA)),
            true,
        )
        .await
        .unwrap();
    assert_entry(
        &history(&out.object)[1],
        Some(PR_CREATED),
        Some(READY_FOR_QA),
        &step.username,
    );
    let err = api
        .patch(
            &step,
            NS,
            &wf,
            Patch::Merge(stage_merge_patch(PR_APPROVED)),
            true,
        )
        .await
        .unwrap_err();
    assert_denied(&err, "skip");
    let out = api
        .update(&step, with_stage(&created, READY_FOR_QA), true)
        .await
        .unwrap();
    assert_eq!(stage(&out.object).as_deref(), Some(READY_FOR_QA));
    assert_eq!(stored(&api, &wf), created, "dry-run changed nothing");
    api.assert_no_violations();
}

#[tokio::test]
async fn delete_is_allowed_without_judgement() {
    let (_wh, api) = start(None);
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );
    let legacy = name(
        &api.store()
            .seed(with_stage(&workflow_named("legacy", None), "no-such-stage")),
    );
    for name in [wf, legacy] {
        let out = api
            .delete(&UserInfo::bob(), NS, &name, false)
            .await
            .unwrap();
        assert_eq!(out.calls_to(Hook::Validating).len(), 1);
        assert!(!out.calls_to(Hook::Mutating).is_empty());
        for call in &out.calls {
            assert_eq!(call.outcome, Outcome::Allowed, "{call:?}");
            assert!(call.has_no_patch_keys(), "{call:?}");
            assert_eq!(call.request["request"]["object"], Value::Null);
        }
        assert!(api.store().get(NS, &name).is_none());
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn connect_is_allowed_without_judgement() {
    let (_wh, api) = start(None);
    let wf = create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
        .await
        .object;
    for hook in [Hook::Mutating, Hook::Validating] {
        let mut req = validating_review(&UserInfo::bob(), with_stage(&wf, PR_APPROVED), &wf);
        req.hook = hook;
        req.operation = Operation::Connect;
        req.options = options("PodExecOptions", false);
        let call = api.call(&req).await;
        assert_eq!(call.outcome, Outcome::Allowed, "{call:?}");
        assert!(call.has_no_patch_keys(), "{call:?}");
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn other_kinds_are_judged_the_same_way() {
    let webhook = Webhook::start();
    let pool = webhook.pool();
    let old = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "pipeline-state", "namespace": NS, "resourceVersion": "3", "labels": {STAGE_LABEL: PR_CREATED}}});
    let new = with_stage(&old, PR_APPROVED);
    let uid = uuid::Uuid::new_v4().to_string();
    let mut review =
        crate::support::review::build_review(&uid, &validating_review(&UserInfo::bob(), new, &old));
    let gvk = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    let gvr = json!({"group": "", "version": "v1", "resource": "configmaps"});
    for (key, value) in [
        ("kind", &gvk),
        ("requestKind", &gvk),
        ("resource", &gvr),
        ("requestResource", &gvr),
    ] {
        review["request"][key] = value.clone();
    }
    let res = pool
        .post_review(
            Hook::Validating.path(),
            serde_json::to_vec(&review).unwrap(),
        )
        .await
        .unwrap();
    let verified =
        crate::support::review::verify_response(Hook::Validating, &uid, res.status, &res.body)
            .unwrap();
    assert!(!verified.allowed);
    assert_eq!(
        verified.audit.get("reason").map(String::as_str),
        Some("skip")
    );
}

// === configurations ===

#[tokio::test]
async fn label_and_annotation_keys_with_a_slash_are_escaped_in_patches() {
    const LABEL: &str = "pipeline.example.com/stage";
    const HIST: &str = "pipeline.example.com/stage-history";
    let config = ConfigSpec {
        label: LABEL,
        history_annotation: HIST,
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let step = UserInfo::workflow_step();
    let wf = with_label(
        &workflow_from_template("agent-pipeline", None),
        LABEL,
        PR_CREATED,
    );
    let created = api.create(&step, wf, false).await.unwrap().object;
    let wf = name(&created);
    let h = annotation(&created, HIST).expect("history under the configured key");
    assert_eq!(
        serde_json::from_str::<Value>(&h)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let out = merge(
        &api,
        &step,
        &wf,
        json!({"metadata": {"labels": {LABEL: READY_FOR_QA}}}),
    )
    .await
    .unwrap();
    let h: Value = serde_json::from_str(&annotation(&out.object, HIST).unwrap()).unwrap();
    assert_entry(&h[1], Some(PR_CREATED), Some(READY_FOR_QA), &step.username);
    assert_eq!(
        history_raw(&out.object),
        None,
        "nothing under the default key"
    );

    // resubmit: reset removes both keys with escaped paths.
    let out = api
        .create(
            &UserInfo::argo_server(),
            resubmitted_from(&out.object),
            false,
        )
        .await
        .unwrap();
    assert_eq!(label(&out.object, LABEL), None);
    assert_eq!(annotation(&out.object, HIST), None);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_graph_with_a_loop_allows_the_loop() {
    let config = ConfigSpec {
        transitions: Some(vec![
            (PR_CREATED, vec![READY_FOR_QA]),
            (READY_FOR_QA, vec![PR_APPROVED, PR_CREATED]),
            (PR_APPROVED, vec![]),
        ]),
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    let path = [READY_FOR_QA, PR_CREATED, READY_FOR_QA, PR_APPROVED];
    let mut from = PR_CREATED;
    for to in path {
        let out = merge(&api, &step, &wf, stage_merge_patch(to))
            .await
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e:?}"));
        assert_entry(
            history(&out.object).last().unwrap(),
            Some(from),
            Some(to),
            &step.username,
        );
        from = to;
    }
    assert_eq!(history(&stored(&api, &wf)).len(), 1 + path.len());
    // The last stage has no outgoing edge: it is final.
    assert_patch_denied(
        &api,
        &step,
        &wf,
        Patch::Merge(stage_merge_patch(PR_CREATED)),
        "regression",
        Some(PR_APPROVED),
        Some(PR_CREATED),
    )
    .await;
    api.assert_no_violations();
}

#[tokio::test]
async fn history_keeps_the_newest_entries_up_to_the_limit() {
    let config = ConfigSpec {
        transitions: Some(vec![
            (PR_CREATED, vec![READY_FOR_QA]),
            (READY_FOR_QA, vec![PR_APPROVED, PR_CREATED]),
            (PR_APPROVED, vec![]),
        ]),
        history_limit: 3,
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let step = UserInfo::workflow_step();
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    let path = [
        READY_FOR_QA,
        PR_CREATED,
        READY_FOR_QA,
        PR_CREATED,
        READY_FOR_QA,
    ];
    let mut expected: Vec<(Option<&str>, &str)> = vec![(None, PR_CREATED)];
    let mut from = PR_CREATED;
    for to in path {
        let out = merge(&api, &step, &wf, stage_merge_patch(to))
            .await
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e:?}"));
        expected.push((Some(from), to));
        let h = history(&out.object);
        let keep = expected.len().min(3);
        assert_eq!(h.len(), keep, "{h:?}");
        for (entry, (f, t)) in h.iter().zip(&expected[expected.len() - keep..]) {
            assert_entry(entry, *f, Some(t), &step.username);
        }
        from = to;
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn without_required_history_the_validating_webhook_accepts_a_change_without_its_entry() {
    let config = ConfigSpec {
        history_required: false,
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let wf = name(
        &create_at(&api, &UserInfo::workflow_step(), Some(PR_CREATED))
            .await
            .object,
    );
    let current = stored(&api, &wf);
    let call = api
        .call(&validating_review(
            &UserInfo::bob(),
            with_stage(&current, READY_FOR_QA),
            &current,
        ))
        .await;
    assert_eq!(call.outcome, Outcome::Allowed, "{call:?}");
    // The rules themselves still hold.
    let call = api
        .call(&validating_review(
            &UserInfo::bob(),
            with_stage(&current, PR_APPROVED),
            &current,
        ))
        .await;
    assert!(
        matches!(call.outcome, Outcome::Denied { code: 403, .. }),
        "{call:?}"
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn warn_mode_admits_illegal_changes_with_a_warning() {
    let config = ConfigSpec {
        mode: "warn",
        ..ConfigSpec::default()
    }
    .yaml();
    let (_wh, api) = start(Some(&config));
    let step = UserInfo::workflow_step();
    let cases: [(Patch, &str, Option<&str>); 3] = [
        (
            Patch::Merge(stage_merge_patch(PR_APPROVED)),
            "skip",
            Some(PR_APPROVED),
        ),
        (
            Patch::Merge(stage_merge_patch("bogus-stage")),
            "unknown-stage",
            Some("bogus-stage"),
        ),
        (
            Patch::Json(label_removal_json_patch()),
            "label-removed",
            None,
        ),
    ];
    for (patch, reason, to) in cases {
        let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
        let out = api
            .patch(&step, NS, &wf, patch, false)
            .await
            .unwrap_or_else(|e| panic!("{reason}: {e:?}"));
        assert_eq!(stage(&out.object).as_deref(), to);
        // One warning: the workflow, the change and what is allowed next (SPEC 4.7).
        let change = format!(
            "{NS}/{wf} \"{PR_CREATED}\" -> {}",
            to.map_or("none".to_string(), |t| format!("{t:?}"))
        );
        assert!(
            out.warnings
                .iter()
                .any(|w| w.starts_with(&format!("warn: {change}"))
                    && w.ends_with(&format!("; allowed next: \"{READY_FOR_QA}\""))),
            "{reason}: {:?}",
            out.warnings
        );
        assert_eq!(out.validating_audit("decision"), Some("warned"), "{reason}");
        assert_eq!(out.validating_audit("reason"), Some(reason));
        assert_entry(
            &history(&out.object)[1],
            Some(PR_CREATED),
            to,
            &step.username,
        );
    }
    // Overrides, tampering and missing entries are enforced in every mode.
    let wf = name(&create_at(&api, &step, Some(PR_CREATED)).await.object);
    assert_patch_denied(
        &api,
        &UserInfo::bob(),
        &wf,
        Patch::Merge(override_merge_patch(PR_APPROVED, "x")),
        "override-not-permitted",
        Some(PR_CREATED),
        Some(PR_APPROVED),
    )
    .await;
    let current = stored(&api, &wf);
    let mut edited = history(&current);
    edited[0]["by"] = json!("bob");
    let tampered = with_annotation(&current, HISTORY, &Value::Array(edited).to_string());
    let call = api
        .call(&validating_review(&UserInfo::bob(), tampered, &current))
        .await;
    assert_eq!(
        call.audit.get("reason").map(String::as_str),
        Some("history-tampered"),
        "{call:?}"
    );
    assert!(
        matches!(call.outcome, Outcome::Denied { code: 403, .. }),
        "{call:?}"
    );
    let call = api
        .call(&validating_review(
            &UserInfo::bob(),
            with_stage(&current, READY_FOR_QA),
            &current,
        ))
        .await;
    assert_eq!(
        call.audit.get("reason").map(String::as_str),
        Some("history-missing"),
        "{call:?}"
    );
    assert!(
        matches!(call.outcome, Outcome::Denied { code: 403, .. }),
        "{call:?}"
    );
    api.assert_no_violations();
}

// === Workflow shapes from a real cluster ===

#[tokio::test]
async fn a_500_kib_workflow_passes_a_status_update_and_a_stage_change() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let controller = UserInfo::controller();
    let created = create_at(&api, &step, Some(PR_CREATED)).await.object;
    let wf = name(&created);

    let big = api
        .update(
            &controller,
            large_status_update(&created, 500 * 1024),
            false,
        )
        .await
        .unwrap();
    let size = serde_json::to_vec(&big.object).unwrap().len();
    assert!(size >= 480 * 1024, "fixture is {size} bytes");
    assert_no_mutating_patch(&big.calls_to(Hook::Mutating));

    let mut next = big.object.clone();
    next["status"]["progress"] = json!("3/700");
    let out = api.update(&controller, next, false).await.unwrap();
    assert_no_mutating_patch(&out.calls_to(Hook::Mutating));

    let out = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap();
    assert_eq!(history(&out.object).len(), 2);
    assert_eq!(out.object["status"], stored(&api, &wf)["status"]);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_workflow_with_compressed_nodes_passes_a_status_update_and_a_stage_change() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let created = create_at(&api, &step, Some(PR_CREATED)).await.object;
    let wf = name(&created);
    let out = api
        .update(
            &UserInfo::controller(),
            compressed_nodes_update(&created),
            false,
        )
        .await
        .unwrap();
    assert!(out.object["status"]["compressedNodes"].is_string());
    assert_no_mutating_patch(&out.calls_to(Hook::Mutating));
    let out = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap();
    assert_entry(
        &history(&out.object)[1],
        Some(PR_CREATED),
        Some(READY_FOR_QA),
        &step.username,
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn resuming_a_suspended_workflow_passes() {
    let (_wh, api) = start(None);
    let step = UserInfo::workflow_step();
    let created = create_at(&api, &step, Some(PR_CREATED)).await.object;
    let wf = name(&created);
    api.update(&UserInfo::controller(), suspend_update(&created), false)
        .await
        .unwrap();
    let qa = merge(&api, &step, &wf, stage_merge_patch(READY_FOR_QA))
        .await
        .unwrap()
        .object;

    let out = api
        .update(&UserInfo::argo_server(), resume_update(&qa), false)
        .await
        .unwrap();
    assert_no_mutating_patch(&out.calls_to(Hook::Mutating));
    assert_eq!(stage(&out.object).as_deref(), Some(READY_FOR_QA));
    assert_eq!(history_raw(&out.object), history_raw(&qa));
    let resumed = out.object["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .any(|n| n["type"] == "Suspend" && n["phase"] == "Succeeded");
    assert!(resumed);
    api.assert_no_violations();
}

/// With the objectSelector and matchConditions of `deploy/base` applied as a cluster applies them, only
/// writes to labelled Workflows that touch the stage label or stage-guard's annotations reach the webhook
/// (what tests/e2e_apiserver shows through the real API server); every other write is admitted without
/// a call.
#[tokio::test]
async fn with_the_deployed_match_conditions_only_stage_writes_reach_the_webhook() {
    let (_wh, api) = start(None);
    api.use_match_conditions();
    let created = api
        .create(
            &UserInfo::workflow_step(),
            workflow_named("filtered", Some(PR_CREATED)),
            false,
        )
        .await
        .unwrap();
    let sent = |s: &Stored| {
        (
            !s.calls_to(Hook::Mutating).is_empty(),
            s.calls_to(Hook::Validating).len(),
        )
    };
    assert_eq!(sent(&created), (true, 1), "a labelled CREATE is sent");
    let plain = api
        .create(
            &UserInfo::workflow_step(),
            workflow_named("plain", None),
            false,
        )
        .await
        .unwrap();
    assert!(plain.calls.is_empty(), "an unlabelled CREATE was sent");
    let plain_edit = api
        .patch(
            &UserInfo::workflow_step(),
            NS,
            "plain",
            Patch::Merge(json!({"metadata": {"annotations": {"stage-guard.io/history": "[]"}}})),
            false,
        )
        .await
        .unwrap();
    assert!(
        plain_edit.calls.is_empty(),
        "an unlabelled Workflow's history edit was sent"
    );
    let labelled = api
        .patch(
            &UserInfo::workflow_step(),
            NS,
            "plain",
            Patch::Merge(stage_merge_patch(PR_CREATED)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        sent(&labelled),
        (true, 1),
        "adding the label is sent (the new object matches)"
    );
    assert_eq!(history(&labelled.object).len(), 1, "a fresh history");
    let status = api
        .update(
            &UserInfo::controller(),
            status_update(&created.object, 3),
            false,
        )
        .await
        .unwrap();
    assert!(
        status.calls.is_empty(),
        "a status write was sent: {} calls",
        status.calls.len()
    );
    let shutdown = api
        .patch(
            &UserInfo::argo_server(),
            NS,
            "filtered",
            Patch::Merge(json!({"spec": {"shutdown": "Stop"}})),
            false,
        )
        .await
        .unwrap();
    assert!(shutdown.calls.is_empty(), "a spec patch was sent");
    let moved = api
        .patch(
            &UserInfo::workflow_step(),
            NS,
            "filtered",
            Patch::Merge(stage_merge_patch(READY_FOR_QA)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        sent(&moved),
        (true, 1),
        "a stage change goes to both webhooks"
    );
    assert_eq!(history(&moved.object).len(), 2);
    api.assert_no_violations();
}
