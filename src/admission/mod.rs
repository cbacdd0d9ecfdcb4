//! AdmissionReview in, AdmissionReview out: decodes a request, reads its [`Facts`] once, asks the core,
//! and encodes the answer. Shared by the HTTP server and the offline commands (`pipeline`), so all give
//! the same answer to the same body.

pub mod patch;
pub mod pipeline;
pub mod request;
pub mod response;
mod skip;
mod walk;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::core::{
    self, Facts, Operation, Outcome, Policy, RESUBMITTED_FROM_LABEL, Reason, show_stage,
};

pub use request::BadReview;
use request::Request;
use response::ResponseOut;

/// Which webhook a review is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Webhook {
    Mutate,
    Validate,
}

impl Webhook {
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Mutate => "mutate",
            Webhook::Validate => "validate",
        }
    }
}

/// What happened to one review, for logs and metrics. Label-like fields hold bounded values only.
#[derive(Debug, Clone)]
pub struct Record {
    pub uid: String,
    pub workflow: String,
    pub user: String,
    pub operation: Operation,
    /// `O -> N` as shown in messages (`none` for no label).
    pub transition: String,
    /// The stage changed (`O ≠ N`).
    pub stage_changed: bool,
    /// The validating webhook's outcome (the mutating webhook always allows).
    pub decision: Outcome,
    /// The mutating webhook returned a JSON Patch.
    pub patched: bool,
    /// The mutating webhook put back a history the client changed or removed.
    pub discarded_edit: bool,
    pub reason: Option<Reason>,
    /// The name of the pipeline that judged the write (`none` when none takes it): a configured name.
    pub pipeline: String,
    /// Metric labels for `O` and `N`: a configured stage, `none`, or `unknown`.
    pub from_label: String,
    pub to_label: String,
    /// On an admitted stage change, how long the Workflow was at the stage it leaves, by its stored
    /// history (`None`: no entry of the history says when it got there).
    pub time_at_stage_left: Option<Duration>,
    pub message: String,
    pub warnings: usize,
}

/// An encoded response and its record.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub record: Record,
    pub allowed: bool,
}

/// Answers one AdmissionReview body for `webhook`.
pub fn answer(
    policy: &Policy,
    webhook: Webhook,
    body: &[u8],
    now: SystemTime,
) -> Result<Answer, BadReview> {
    let req = request::decode(body)?;
    let facts = facts_of(policy, &req);
    let (response, record) = match webhook {
        Webhook::Validate => validate(policy, &req, &facts, now),
        Webhook::Mutate => mutate(policy, &req, &facts, now),
    };
    let allowed = response.allowed;
    // Serialising plain strings, maps and a Status cannot fail.
    let body = serde_json::to_vec(&response.into_review()).map_err(BadReview::NotJson)?;
    Ok(Answer {
        body,
        record,
        allowed,
    })
}

/// The facts of one request: what both webhooks read off the object and the stored object.
pub fn facts_of<'r>(policy: &Policy, req: &'r Request<'_>) -> Facts<'r> {
    let operation = req.operation;
    let is_create = operation == Operation::Create;
    let (new, old) = (&req.object, &req.old_object);
    // On CREATE there is no stored object, whatever `oldObject` holds.
    let stored = |key: &str| if is_create { None } else { old.annotation(key) };
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let incoming_pipeline = policy.pipeline_for(|k| new.label(k), namespace);
    Facts {
        operation,
        workflow: Cow::Owned(req.workflow()),
        from: if is_create {
            None
        } else {
            old.label(&policy.label)
        },
        to: new.label(&policy.label),
        resubmitted: new.label(RESUBMITTED_FROM_LABEL).is_some(),
        stale: operation == Operation::Update
            && new
                .resource_version
                .as_deref()
                .is_some_and(|rv| !rv.is_empty())
            && new.resource_version != old.resource_version,
        username: &req.user.username,
        groups: &req.user.groups,
        stored_history: stored(&policy.history.annotation),
        incoming_history: new.annotation(&policy.history.annotation),
        stored_override: stored(&policy.override_.annotation),
        incoming_override: new.annotation(&policy.override_.annotation),
        // An UPDATE is judged by the pipeline of the stored object (issue: pipelines).
        pipeline: if is_create {
            incoming_pipeline
        } else {
            policy.pipeline_for(|k| old.label(k), namespace)
        },
        incoming_pipeline,
    }
}

fn record_of(policy: &Policy, req: &Request<'_>, facts: &Facts<'_>) -> Record {
    let pipeline = policy.judging(facts);
    let metric_label = |s: Option<&str>| policy.stage_label(pipeline, s);
    Record {
        uid: req.uid.clone(),
        workflow: facts.workflow.to_string(),
        user: req.user.username.clone(),
        operation: facts.operation,
        transition: format!("{}->{}", show_stage(facts.from), show_stage(facts.to)),
        stage_changed: facts.stage_changed(),
        decision: Outcome::Allowed,
        patched: false,
        discarded_edit: false,
        reason: None,
        pipeline: pipeline.map_or("none", |p| p.name.as_str()).to_owned(),
        from_label: metric_label(facts.from),
        to_label: metric_label(facts.to),
        time_at_stage_left: None,
        message: String::new(),
        warnings: 0,
    }
}

fn validate(
    policy: &Policy,
    req: &Request<'_>,
    facts: &Facts<'_>,
    now: SystemTime,
) -> (ResponseOut, Record) {
    let mut record = record_of(policy, req, facts);
    let Some(v) = core::validate(policy, facts) else {
        return (ResponseOut::allow(&req.uid), record);
    };
    let mut response = if v.allowed() {
        ResponseOut::allow(&req.uid)
    } else {
        ResponseOut::deny(&req.uid, v.message.clone())
    };
    // Every stage change or denial, and a forced move between pipelines, is worth an audit entry.
    if record.stage_changed || v.outcome == Outcome::Denied || v.reason == Reason::Override {
        response
            .audit_annotations
            .insert("decision", v.outcome.as_str().to_owned());
        response
            .audit_annotations
            .insert("reason", v.reason.code().to_owned());
        response
            .audit_annotations
            .insert("transition", record.transition.clone());
        response
            .audit_annotations
            .insert("pipeline", record.pipeline.clone());
    }
    if record.stage_changed
        && v.allowed()
        && let Some(left) = facts.from
    {
        record.time_at_stage_left = core::history::time_at(facts.trusted_history(), left, now);
    }
    record.decision = v.outcome;
    record.reason = Some(v.reason);
    record.warnings = v.warnings.len();
    record.message = v.message;
    response.warnings = v.warnings;
    (response, record)
}

fn mutate(
    policy: &Policy,
    req: &Request<'_>,
    facts: &Facts<'_>,
    now: SystemTime,
) -> (ResponseOut, Record) {
    let mut record = record_of(policy, req, facts);
    let response = ResponseOut::allow(&req.uid);
    if !facts.is_judged() {
        return (response, record);
    }
    let plan = core::mutate(policy, facts, now);
    if facts.stale {
        record.message =
            "stale write (resourceVersion differs from the stored object): not patched".into();
    }
    let patch = patch::patch_for(policy, &plan, req);
    if !patch.0.is_empty() {
        record.patched = true;
        record.message = format!("{} patched", core::plural(patch.0.len(), "operation"));
    }
    record.stage_changed = plan.recorded.is_some();
    if let Some((from, to)) = &plan.recorded {
        record.transition = format!(
            "{}->{}",
            show_stage(from.as_deref()),
            show_stage(to.as_deref())
        );
    }
    record.warnings = plan.warnings.len();
    // A stale write is not patched, so nothing is discarded by this answer.
    record.discarded_edit = plan.discarded_edit && !patch.0.is_empty();
    let mut response = response.with_patch(&patch);
    response.warnings = plan.warnings;
    (response, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::{Value, json};
    use std::time::{Duration, UNIX_EPOCH};

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_685_000)
    }

    fn review(op: &str, user: &str, object: Value, old: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "abc-123", "namespace": "argo", "operation": op,
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": object, "oldObject": old, "dryRun": false}
        }))
        .unwrap()
    }

    fn wf(stage: Option<&str>, annotations: Option<Value>) -> Value {
        let mut meta = json!({"name": "wf", "namespace": "argo", "resourceVersion": "5"});
        if let Some(s) = stage {
            meta["labels"] = json!({"current-stage": s});
        }
        if let Some(a) = annotations {
            meta["annotations"] = a;
        }
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": meta, "spec": {}, "status": {}})
    }

    fn run(webhook: Webhook, body: &[u8]) -> Value {
        let a = answer(&Policy::default_policy(), webhook, body, now()).unwrap();
        serde_json::from_slice(&a.body).unwrap()
    }

    fn apply(object: &Value, response: &Value) -> Value {
        let mut doc = object.clone();
        if let Some(p) = response["response"]["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut doc, &patch).unwrap();
        }
        doc
    }

    #[test]
    fn mutate_then_validate_a_legal_advance() {
        let old = wf(Some("waiting-pr-created"), None);
        let new = wf(Some("waiting-ready-for-qa"), None);
        let m = run(
            Webhook::Mutate,
            &review("UPDATE", "bob", new.clone(), old.clone()),
        );
        assert_eq!(m["response"]["uid"], "abc-123");
        assert_eq!(m["response"]["patchType"], "JSONPatch");
        let patched = apply(&new, &m);
        let h = patched["metadata"]["annotations"]["stage-guard.io/history"]
            .as_str()
            .unwrap();
        assert_eq!(
            h,
            r#"[{"from":"waiting-pr-created","to":"waiting-ready-for-qa","at":"2026-11-26T09:23:20Z","by":"bob"}]"#
        );
        let v = run(Webhook::Validate, &review("UPDATE", "bob", patched, old));
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none() && v["response"].get("patchType").is_none());
        assert_eq!(v["response"]["auditAnnotations"]["reason"], "advance");
        assert_eq!(
            v["response"]["auditAnnotations"]["transition"],
            "waiting-pr-created->waiting-ready-for-qa"
        );
    }

    #[test]
    fn an_admitted_change_records_how_long_the_workflow_was_at_the_stage_it_leaves() {
        let policy = Policy::default_policy();
        // Entered waiting-pr-created 90 minutes before `now`, by the stored history.
        let entered = core::history::render(&[core::Entry::new(
            None,
            Some("waiting-pr-created"),
            "bob",
            now() - Duration::from_secs(5_400),
        )]);
        let old = wf(
            Some("waiting-pr-created"),
            Some(json!({"stage-guard.io/history": entered})),
        );
        let left = |new: Value| {
            let a = pipeline::run(
                &policy,
                &serde_json::from_slice::<Value>(&review("UPDATE", "bob", new, old.clone()))
                    .unwrap(),
                now(),
            )
            .unwrap();
            (a.validate.allowed, a.validate.record.time_at_stage_left)
        };
        assert_eq!(
            left(wf(Some("waiting-ready-for-qa"), None)),
            (true, Some(Duration::from_secs(5_400)))
        );
        // A denied change leaves nothing.
        assert_eq!(left(wf(Some("waiting-pr-approved"), None)), (false, None));
        // A history that ends at another stage than the label says: no time known.
        let elsewhere = core::history::render(&[core::Entry::new(None, Some("x"), "bob", now())]);
        let old = wf(
            Some("waiting-pr-created"),
            Some(json!({"stage-guard.io/history": elsewhere})),
        );
        let a = pipeline::run(
            &policy,
            &serde_json::from_slice::<Value>(&review(
                "UPDATE",
                "bob",
                wf(Some("waiting-ready-for-qa"), None),
                old,
            ))
            .unwrap(),
            now(),
        )
        .unwrap();
        assert!(a.validate.allowed);
        assert_eq!(a.validate.record.time_at_stage_left, None);
    }

    #[test]
    fn validate_denies_a_skip_with_403() {
        let old = wf(Some("waiting-pr-created"), None);
        let new = wf(Some("waiting-pr-approved"), None);
        let patched = apply(
            &new,
            &run(
                Webhook::Mutate,
                &review("UPDATE", "bob", new.clone(), old.clone()),
            ),
        );
        let v = run(Webhook::Validate, &review("UPDATE", "bob", patched, old));
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(v["response"]["status"]["reason"], "Forbidden");
        assert_eq!(
            v["response"]["status"]["message"],
            r#"stage change "waiting-pr-created" -> "waiting-pr-approved" on argo/wf denied (skip): skips "waiting-ready-for-qa"; allowed next: "waiting-ready-for-qa""#
        );
        assert_eq!(v["response"]["auditAnnotations"]["decision"], "denied");
    }

    #[test]
    fn patches_escape_keys_and_create_parents() {
        // no metadata.annotations on the object: the whole map is added
        let old = wf(None, None);
        let new = wf(Some("waiting-pr-created"), None);
        let m = run(Webhook::Mutate, &review("UPDATE", "bob", new.clone(), old));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/metadata/annotations");
        // an existing map: the key is escaped
        let new = wf(Some("waiting-pr-created"), Some(json!({"other": "x"})));
        let m = run(
            Webhook::Mutate,
            &review("UPDATE", "bob", new, wf(None, None)),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            ops[0]["path"],
            "/metadata/annotations/stage-guard.io~1history"
        );
    }

    #[test]
    fn unchanged_writes_get_no_patch_and_delete_is_not_judged() {
        let old = wf(Some("waiting-pr-created"), None);
        let m = run(
            Webhook::Mutate,
            &review("UPDATE", "argo-controller", old.clone(), old.clone()),
        );
        assert!(m["response"].get("patch").is_none() && m["response"].get("patchType").is_none());
        let d = run(
            Webhook::Validate,
            &review("DELETE", "bob", Value::Null, old),
        );
        assert_eq!(d["response"]["allowed"], true);
    }

    // === pipelines ===

    const PIPELINES: &str = "\
stages: [a, b, c]
override:
  users: [alice]
pipelines:
  - name: qa
    match: {labels: {tmpl: qa}}
    stages: [dev, test, done]
    transitions: {dev: [test], test: [done, dev]}
    mode: warn
  - name: docs
    match: {namespaces: [docs]}
    stages: [draft, published]
";

    fn labelled(labels: Value, annotations: Value) -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "wf", "resourceVersion": "5", "labels": labels, "annotations": annotations},
            "spec": {}, "status": {}})
    }

    /// The cluster's answer (mutate, patch, validate) to one write in `namespace`.
    fn through_both(
        policy: &Policy,
        op: &str,
        user: &str,
        namespace: &str,
        new: Value,
        old: Value,
    ) -> pipeline::ClusterAnswer {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-7", "namespace": namespace, "operation": op,
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": new, "oldObject": if op == "CREATE" { Value::Null } else { old }}});
        pipeline::run(policy, &review, now()).unwrap()
    }

    fn verdict(a: &pipeline::ClusterAnswer) -> (bool, String, String) {
        let v: Value = serde_json::from_slice(&a.validate.body).unwrap();
        let audit = &v["response"]["auditAnnotations"];
        (
            v["response"]["allowed"].as_bool().unwrap(),
            audit["reason"].as_str().unwrap_or("-").to_owned(),
            audit["pipeline"].as_str().unwrap_or("-").to_owned(),
        )
    }

    #[test]
    fn each_pipeline_judges_its_own_workflows_with_its_own_mode() {
        let p = Policy::from_yaml(PIPELINES).unwrap();
        let qa = |stage: &str| labelled(json!({"current-stage": stage, "tmpl": "qa"}), json!({}));
        // qa is in warn mode: its skip is admitted with a warning.
        let a = through_both(&p, "UPDATE", "bob", "argo", qa("done"), qa("dev"));
        assert_eq!(verdict(&a), (true, "skip".into(), "qa".into()));
        assert_eq!(a.validate.record.decision, Outcome::Warned);
        // A loop of qa's graph is an edge there.
        let a = through_both(&p, "UPDATE", "bob", "argo", qa("dev"), qa("test"));
        assert_eq!(verdict(&a), (true, "advance".into(), "qa".into()));
        // The default pipeline (enforce) denies its own skip, and knows nothing of qa's stages.
        let plain = |stage: &str| labelled(json!({"current-stage": stage}), json!({}));
        let a = through_both(&p, "UPDATE", "bob", "argo", plain("c"), plain("a"));
        assert_eq!(verdict(&a), (false, "skip".into(), "default".into()));
        let a = through_both(&p, "UPDATE", "bob", "argo", plain("test"), plain("a"));
        assert_eq!(
            verdict(&a),
            (false, "unknown-stage".into(), "default".into())
        );
        // docs takes what is in its namespace; a CREATE is judged by the incoming object's pipeline.
        let draft = labelled(json!({"current-stage": "draft"}), json!({}));
        let a = through_both(&p, "CREATE", "bob", "docs", draft.clone(), Value::Null);
        assert_eq!(verdict(&a), (true, "entry".into(), "docs".into()));
        let a = through_both(&p, "CREATE", "bob", "argo", draft, Value::Null);
        assert_eq!(
            verdict(&a),
            (false, "unknown-stage".into(), "default".into())
        );
    }

    #[test]
    fn moving_a_staged_workflow_into_another_pipeline_needs_a_permitted_override() {
        let p = Policy::from_yaml(PIPELINES).unwrap();
        let stored = labelled(json!({"current-stage": "dev", "tmpl": "qa"}), json!({}));
        let moved = labelled(json!({"current-stage": "dev"}), json!({}));
        let a = through_both(&p, "UPDATE", "bob", "argo", moved.clone(), stored.clone());
        assert_eq!(verdict(&a), (false, "pipeline-changed".into(), "qa".into()));
        let v: Value = serde_json::from_slice(&a.validate.body).unwrap();
        assert_eq!(
            v["response"]["status"]["message"],
            "update at stage \"dev\" on argo/wf denied (pipeline-changed): its labels move it from pipeline \"qa\" to pipeline \"default\"; only a permitted override may do that"
        );
        // Forced by someone listed under override: admitted, the reason recorded when the stage moves.
        let forced = labelled(
            json!({"current-stage": "a"}),
            json!({"stage-guard.io/override-reason": "wrong template"}),
        );
        let a = through_both(&p, "UPDATE", "alice", "argo", forced, stored.clone());
        assert_eq!(verdict(&a), (true, "override".into(), "qa".into()));
        let history = a.patched["metadata"]["annotations"]["stage-guard.io/history"]
            .as_str()
            .unwrap();
        assert!(
            history.contains(r#""override":"wrong template""#),
            "{history}"
        );
        // The stage rules of the old pipeline still judge a write that stays in it.
        let a = through_both(&p, "UPDATE", "bob", "argo", stored.clone(), stored);
        assert!(verdict(&a).0);
    }

    #[test]
    fn without_a_default_pipeline_unmatched_workflows_are_not_judged() {
        let p = Policy::from_yaml(
            "pipelines:\n  - name: docs\n    match: {namespaces: [docs]}\n    stages: [draft, published]\n",
        )
        .unwrap();
        let wf = |stage: &str| labelled(json!({"current-stage": stage}), json!({}));
        let a = through_both(&p, "UPDATE", "bob", "argo", wf("anything"), wf("else"));
        assert_eq!(verdict(&a), (true, "-".into(), "-".into()));
        let m: Value = serde_json::from_slice(&a.mutate.body).unwrap();
        assert!(m["response"].get("patch").is_none(), "{m}");
        let a = through_both(&p, "UPDATE", "bob", "docs", wf("draft"), wf("published"));
        assert_eq!(verdict(&a), (false, "regression".into(), "docs".into()));
    }

    #[test]
    fn a_forced_move_lands_on_a_stage_of_its_new_pipeline_and_is_recorded_even_in_place() {
        let p = Policy::from_yaml(
            "stages: [dev, test, done]\noverride:\n  users: [alice]\npipelines:\n  - name: qa\n    match: {labels: {tmpl: qa}}\n    stages: [dev, test]\n    mode: warn\n",
        )
        .unwrap();
        let stored = labelled(json!({"current-stage": "dev", "tmpl": "qa"}), json!({}));
        let forced = |stage: &str| {
            labelled(
                json!({"current-stage": stage}),
                json!({"stage-guard.io/override-reason": "wrong template"}),
            )
        };
        // The same stage, known to both: admitted as forced, and the move is in the history.
        let a = through_both(&p, "UPDATE", "alice", "argo", forced("dev"), stored.clone());
        assert_eq!(verdict(&a), (true, "override".into(), "qa".into()));
        let history = a.patched["metadata"]["annotations"]["stage-guard.io/history"]
            .as_str()
            .unwrap();
        assert!(
            history.contains(r#""from":"dev","to":"dev""#)
                && history.contains(r#""override":"wrong template""#),
            "{history}"
        );
        assert!(
            a.patched["metadata"]["annotations"]
                .get("stage-guard.io/override-reason")
                .is_none(),
            "the override annotation is never stored"
        );
        // A stage the new pipeline does not know: refused, even though qa is in warn mode.
        let a = through_both(&p, "UPDATE", "alice", "argo", forced("elsewhere"), stored);
        assert_eq!(verdict(&a), (false, "unknown-stage".into(), "qa".into()));
        let v: Value = serde_json::from_slice(&a.validate.body).unwrap();
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains(
                    "\"elsewhere\" is not a stage of pipeline \"default\", where its labels move it"
                ),
            "{v}"
        );
    }
}
