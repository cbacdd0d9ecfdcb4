//! What the API server does with one write, offline: the mutating webhook, its JSON Patch applied to
//! the object with strict RFC 6902 semantics, then the validating webhook on the patched object
//! (apiserver-contract 3). `stage-guard check` and `stage-guard review` answer through this, so their
//! answers are the cluster's.

use std::time::SystemTime;

use base64::Engine;
use serde_json::{Value, json};

use super::{Answer, BadReview, Webhook, answer};
use crate::core::{Operation, Policy};

/// Both webhooks' answers to one write, as the API server would get them.
#[derive(Debug)]
pub struct ClusterAnswer {
    /// The mutating webhook's answer to the write as sent.
    pub mutate: Answer,
    /// The object after the mutating webhook's patch.
    pub patched: Value,
    /// The validating webhook's answer to the patched write: the cluster's decision.
    pub validate: Answer,
}

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input is not an AdmissionReview the webhooks answer.
    #[error(transparent)]
    BadReview(#[from] BadReview),
    /// The mutating webhook's answer cannot be read back (a defect: the server wrote it).
    #[error("the mutating webhook's answer does not parse: {0}")]
    Answer(serde_json::Error),
    #[error("the mutating webhook's patch is not base64: {0}")]
    PatchEncoding(base64::DecodeError),
    /// The mutating webhook's patch does not apply (the API server would answer 500).
    #[error("the mutating webhook's patch does not apply: {0}")]
    Patch(#[from] json_patch::PatchError),
}

/// Runs `review` (an AdmissionReview v1 as the API server sends it) through both webhooks.
pub fn run(
    policy: &Policy,
    review: &Value,
    now: SystemTime,
) -> Result<ClusterAnswer, PipelineError> {
    let body = to_body(review)?;
    let mutate = answer(policy, Webhook::Mutate, &body, now)?;
    let mut patched_review = review.clone();
    let object = patched_review
        .pointer_mut("/request/object")
        .ok_or(BadReview::NoObject(Operation::Update))?;
    apply_patch(&mutate.body, object)?;
    let patched = object.clone();
    let validate = answer(policy, Webhook::Validate, &to_body(&patched_review)?, now)?;
    Ok(ClusterAnswer {
        mutate,
        patched,
        validate,
    })
}

/// Runs an AdmissionReview body (as read from a file) through both webhooks.
pub fn run_body(
    policy: &Policy,
    body: &[u8],
    now: SystemTime,
) -> Result<ClusterAnswer, PipelineError> {
    // Decoding first gives the same 400-style message the server would for a body that is not a review.
    super::request::decode(body)?;
    let review: Value = serde_json::from_slice(body).map_err(BadReview::NotJson)?;
    run(policy, &review, now)
}

fn to_body(review: &Value) -> Result<Vec<u8>, BadReview> {
    serde_json::to_vec(review).map_err(BadReview::NotJson)
}

/// Applies the patch of a mutating response (if any) to `object`, as the API server does.
fn apply_patch(response_body: &[u8], object: &mut Value) -> Result<(), PipelineError> {
    let response: Value = serde_json::from_slice(response_body).map_err(PipelineError::Answer)?;
    let Some(encoded) = response.pointer("/response/patch").and_then(Value::as_str) else {
        return Ok(());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(PipelineError::PatchEncoding)?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).map_err(PipelineError::Answer)?;
    Ok(json_patch::patch(object, &patch)?)
}

/// Who writes, for a review made offline.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub username: String,
    pub groups: Vec<String>,
}

/// An AdmissionReview for a write of `new` over `old` (the stored object; `None` on CREATE), shaped
/// as the API server sends it: `oldObject` null on CREATE, `UpdateOptions`/`CreateOptions`.
pub fn review_of(
    operation: Operation,
    requester: &Requester,
    old: Option<&Value>,
    new: &Value,
) -> Value {
    let name = new
        .pointer("/metadata/name")
        .or_else(|| old.and_then(|o| o.pointer("/metadata/name")))
        .cloned()
        .unwrap_or(Value::Null);
    let namespace = new
        .pointer("/metadata/namespace")
        .or_else(|| old.and_then(|o| o.pointer("/metadata/namespace")))
        .cloned()
        .unwrap_or(Value::Null);
    let options = match operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
        Operation::Connect => "ConnectOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "offline",
            "kind": {"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"},
            "resource": {"group": "argoproj.io", "version": "v1alpha1", "resource": "workflows"},
            "name": name,
            "namespace": namespace,
            "operation": operation.as_str(),
            "userInfo": {"username": requester.username, "groups": requester.groups},
            "object": new,
            "oldObject": if operation == Operation::Create { Value::Null } else { old.cloned().unwrap_or(Value::Null) },
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
        }
    })
}

/// A stage change made up offline (`stage-guard check`, `stage-guard test`).
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub name: &'a str,
    /// The Workflow's namespace and its other labels: they choose the pipeline.
    pub namespace: Option<&'a str>,
    pub labels: &'a [(String, String)],
    /// The incoming object's other labels when they differ from the stored one's (a relabel).
    pub new_labels: Option<&'a [(String, String)]>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub override_reason: Option<&'a str>,
}

/// The stored and incoming Workflows of a [`Change`]: the same object before and after, with the
/// stage label set (or not) on each and the override reason on the incoming one when given.
pub fn change_objects(policy: &Policy, change: &Change<'_>) -> (Value, Value) {
    let object = |stage: Option<&str>, others: &[(String, String)]| {
        let mut metadata = json!({"name": change.name, "resourceVersion": "1"});
        if let Some(ns) = change.namespace {
            metadata["namespace"] = json!(ns);
        }
        let mut labels = serde_json::Map::new();
        for (key, value) in others {
            labels.insert(key.clone(), json!(value));
        }
        if let Some(stage) = stage {
            labels.insert(policy.label.clone(), json!(stage));
        }
        if !labels.is_empty() {
            metadata["labels"] = Value::Object(labels);
        }
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": metadata, "spec": {}})
    };
    let old = object(change.from, change.labels);
    let mut new = object(change.to, change.new_labels.unwrap_or(change.labels));
    if let Some(reason) = change.override_reason {
        new["metadata"]["annotations"] = json!({ policy.override_.annotation.as_str(): reason });
    }
    (old, new)
}
