//! Generated Argo Workflows and the AdmissionReviews the benchmark sends.
//!
//! Shared with `benches/admission.rs` (through `#[path]`), so the HTTP benchmark and the micro-benchmarks
//! measure the same objects. Everything is built in code: no fixture files to drift out of date.
#![allow(dead_code)]

use serde_json::{Map, Value, json};

pub const STAGE_A: &str = "waiting-pr-created";
pub const STAGE_B: &str = "waiting-ready-for-qa";
pub const HISTORY_KEY: &str = "stage-guard.io/history";
pub const WORKFLOW: &str = "play-task-7";
pub const NAMESPACE: &str = "argo";
/// Who moves the stage: a workflow step running `kubectl patch` under the workflow's service account.
pub const STEP_USER: &str = "system:serviceaccount:argo:argo-workflow";
/// Who writes status: the Argo controller.
pub const CONTROLLER_USER: &str = "system:serviceaccount:argo:argo-workflow-controller";

/// Target size of the small Workflow (one object; the review carries two).
pub const SMALL_OBJECT_BYTES: usize = 4 * 1024;
/// Target size of the large Workflow: object + oldObject make a review of about 1 MiB.
pub const LARGE_OBJECT_BYTES: usize = 500 * 1024;

/// One kind of request: the JSON before the uid value and the JSON after it, so a fresh uid costs
/// no copy of the (possibly 1 MiB) rest.
#[derive(Clone)]
pub struct Template {
    /// Short name for reports.
    pub name: &'static str,
    /// Request path, with the query string the API server appends.
    pub path: &'static str,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Template {
    /// The whole body with `uid` in place.
    pub fn body(&self, uid: &str) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.head.len() + uid.len() + self.tail.len());
        b.extend_from_slice(&self.head);
        b.extend_from_slice(uid.as_bytes());
        b.extend_from_slice(&self.tail);
        b
    }

    pub fn len_with_uid(&self) -> usize {
        self.head.len() + 36 + self.tail.len()
    }
}

/// A history annotation value: `{"from":...,"to":...,"at":...,"by":...}` entries, compact JSON.
fn history(entries: &[(Option<&str>, &str, &str, &str)]) -> String {
    let v: Vec<Value> = entries
        .iter()
        .map(|(from, to, at, by)| json!({"from": from, "to": to, "at": at, "by": by}))
        .collect();
    Value::Array(v).to_string()
}

/// The history stored on the Workflow while it waits at `STAGE_A`.
pub fn stored_history() -> String {
    history(&[(None, STAGE_A, "2026-11-26T09:22:46Z", STEP_USER)])
}

/// The stored history plus stage-guard's own entry for `STAGE_A -> STAGE_B` by `STEP_USER`.
pub fn advanced_history() -> String {
    history(&[
        (None, STAGE_A, "2026-11-26T09:22:46Z", STEP_USER),
        (Some(STAGE_A), STAGE_B, "2026-11-26T10:01:12Z", STEP_USER),
    ])
}

/// One `status.nodes` entry, shaped like what the Argo controller writes for a finished pod step
/// (parameters carry escaped JSON, as real ones often do).
fn node(i: usize) -> (String, Value) {
    let id = format!("{WORKFLOW}-{}", 1_000_000_000u64 + (i as u64) * 7_919);
    let value = json!({
        "boundaryID": format!("{WORKFLOW}"),
        "children": [format!("{WORKFLOW}-{}", 1_000_000_000u64 + (i as u64 + 1) * 7_919)],
        "displayName": format!("step-{i}"),
        "finishedAt": "2026-11-26T09:41:07Z",
        "hostNodeName": format!("worker-{}", i % 5),
        "id": id,
        "inputs": {"parameters": [
            {"name": "task", "value": format!("{{\"id\":{i},\"repo\":\"git@example.com:team/play.git\",\"branch\":\"feature/{i}\"}}")},
            {"name": "attempt", "value": "1"}
        ]},
        "message": format!("step {i} done: \"ok\" — 3 files changed, 42 insertions(+), 7 deletions(-)"),
        "name": format!("{WORKFLOW}[0].step-{i}"),
        "outputs": {
            "artifacts": [{"name": "main-logs", "s3": {"key": format!("{WORKFLOW}/{WORKFLOW}-step-{i}/main.log")}}],
            "exitCode": "0",
            "parameters": [{"name": "result", "value": format!("{{\"status\":\"ok\",\"notes\":\"line one\\nline two ✓\",\"n\":{i}}}")}]
        },
        "phase": "Succeeded",
        "progress": "1/1",
        "resourcesDuration": {"cpu": 12 + i % 7, "memory": 345 + i % 11},
        "startedAt": "2026-11-26T09:40:51Z",
        "templateName": "run-step",
        "templateScope": format!("local/{WORKFLOW}"),
        "type": "Pod"
    });
    (id, value)
}

/// A Workflow at `stage` with `history`, `nodes` entries in `status.nodes`, and the metadata a real one
/// carries (managedFields included, since the decoder must skip it too).
pub fn workflow(stage: &str, history: &str, nodes: usize, resource_version: &str) -> Value {
    let mut node_map = Map::new();
    for i in 0..nodes {
        let (id, v) = node(i);
        node_map.insert(id, v);
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "annotations": {
                HISTORY_KEY: history,
                "workflows.argoproj.io/pod-name-format": "v2"
            },
            "creationTimestamp": "2026-11-26T09:22:46Z",
            "generation": 42,
            "labels": {
                "app.kubernetes.io/part-of": "play",
                "current-stage": stage,
                "workflows.argoproj.io/completed": "false",
                "workflows.argoproj.io/phase": "Running"
            },
            "managedFields": [
                {"apiVersion": "argoproj.io/v1alpha1", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/part-of": {}}},
                              "f:spec": {}},
                 "manager": "argo", "operation": "Update", "time": "2026-11-26T09:22:46Z"},
                {"apiVersion": "argoproj.io/v1alpha1", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:workflows.argoproj.io/completed": {},
                                                          "f:workflows.argoproj.io/phase": {}}},
                              "f:status": {}},
                 "manager": "workflow-controller", "operation": "Update", "time": "2026-11-26T09:41:07Z"}
            ],
            "name": WORKFLOW,
            "namespace": NAMESPACE,
            "resourceVersion": resource_version,
            "uid": "8d7a33f1-5c1e-4d0e-9a53-0b0f3f0c7a11"
        },
        "spec": {
            "arguments": {"parameters": [{"name": "task-id", "value": "7"}, {"name": "repo", "value": "team/play"}]},
            "entrypoint": "main",
            "serviceAccountName": "argo-workflow",
            "templates": [
                {"name": "main", "steps": [[{"name": "implement", "template": "run-step"}], [{"name": "review", "template": "run-step"}]]},
                {"name": "run-step", "container": {
                    "image": "registry.example.com/agents/runner:1.4.2",
                    "command": ["/bin/sh", "-c"],
                    "args": ["run-agent --task \"{{inputs.parameters.task}}\" --out /tmp/result.json"],
                    "env": [{"name": "STAGE", "value": "{{workflow.labels.current-stage}}"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}
                }, "inputs": {"parameters": [{"name": "task"}, {"name": "attempt"}]}}
            ]
        },
        "status": {
            "artifactRepositoryRef": {"artifactRepository": {"s3": {"bucket": "argo-artifacts", "endpoint": "minio:9000"}}, "default": true},
            "nodes": node_map,
            "phase": "Running",
            "progress": format!("{nodes}/{}", nodes + 1),
            "startedAt": "2026-11-26T09:22:46Z"
        }
    })
}

/// How many nodes make a Workflow of about `target` bytes (serialised).
pub fn nodes_for(target: usize) -> usize {
    let size = |n: usize| {
        workflow(STAGE_A, &advanced_history(), n, "1000")
            .to_string()
            .len()
    };
    let base = size(0);
    let per_node = size(2).saturating_sub(size(1)).max(1);
    target.saturating_sub(base).div_ceil(per_node)
}

/// An AdmissionReview v1 UPDATE, fields in the order the API server writes them, split around the uid.
fn template(
    name: &'static str,
    path: &'static str,
    user: &str,
    object: &Value,
    old: &Value,
) -> Template {
    let head = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""#;
    let gvk = r#"{"group":"argoproj.io","version":"v1alpha1","kind":"Workflow"}"#;
    let gvr = r#"{"group":"argoproj.io","version":"v1alpha1","resource":"workflows"}"#;
    let tail = format!(
        concat!(
            r#"","kind":{gvk},"resource":{gvr},"requestKind":{gvk},"requestResource":{gvr},"#,
            r#""name":"{name}","namespace":"{ns}","operation":"UPDATE","#,
            r#""userInfo":{{"username":"{user}","uid":"0b3c6f7e-1d2a-4c55-8e0f-6a7b8c9d0e1f","#,
            r#""groups":["system:serviceaccounts","system:serviceaccounts:argo","system:authenticated"]}},"#,
            r#""object":{object},"oldObject":{old},"dryRun":false,"#,
            r#""options":{{"kind":"UpdateOptions","apiVersion":"meta.k8s.io/v1"}}}}}}"#
        ),
        gvk = gvk,
        gvr = gvr,
        name = WORKFLOW,
        ns = NAMESPACE,
        user = user,
        object = object,
        old = old,
    );
    Template {
        name,
        path,
        head: head.as_bytes().to_vec(),
        tail: tail.into_bytes(),
    }
}

/// The four requests the benchmark cycles through, on Workflows of about `object_bytes` each:
/// - the controller's status write (stage unchanged), to `/validate` and to `/mutate`;
/// - a step's legal stage change `STAGE_A -> STAGE_B` to `/mutate` (stage-guard patches in the history entry);
/// - the same change to `/validate`, carrying the entry the mutating webhook added (allowed, `advance`).
pub fn templates(object_bytes: usize) -> Vec<Template> {
    let n = nodes_for(object_bytes);
    let stored = stored_history();
    let old = workflow(STAGE_A, &stored, n, "1000");
    // The controller marks one more node finished: spec and status differ, metadata does not.
    let mut status_write = old.clone();
    status_write["status"]["progress"] = json!(format!("{}/{}", n + 1, n + 1));
    let advanced = workflow(STAGE_B, &stored, n, "1000");
    let advanced_stamped = workflow(STAGE_B, &advanced_history(), n, "1000");
    vec![
        template(
            "validate-unchanged",
            "/validate?timeout=10s",
            CONTROLLER_USER,
            &status_write,
            &old,
        ),
        template(
            "mutate-unchanged",
            "/mutate?timeout=10s",
            CONTROLLER_USER,
            &status_write,
            &old,
        ),
        template(
            "mutate-advance",
            "/mutate?timeout=10s",
            STEP_USER,
            &advanced,
            &old,
        ),
        template(
            "validate-advance",
            "/validate?timeout=10s",
            STEP_USER,
            &advanced_stamped,
            &old,
        ),
    ]
}

/// Bodies of many sizes, well-formed and broken, as a fuzzer sends them: the benchmark's reviews at
/// object sizes from 2 KiB to 1.5 MiB, and each cut short at a different place (a 400 after reading
/// and walking most of it). What left glibc's malloc holding well over 100 MiB after long fuzz runs.
pub fn varied_templates() -> Vec<Template> {
    let sizes = [2, 20, 90, 200, 350, 500, 800, 1536];
    let mut out = Vec::new();
    for (i, kib) in sizes.into_iter().enumerate() {
        for t in templates(kib * 1024) {
            let mut broken = t.clone();
            broken
                .tail
                .truncate(broken.tail.len() * (i + 1) / (sizes.len() + 1));
            out.push(t);
            out.push(broken);
        }
    }
    out
}

/// The uid every micro-benchmark body carries.
pub const FIXED_UID: &str = "00000000-0000-4000-8000-000000000000";
