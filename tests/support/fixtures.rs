//! Workflow objects and client requests modelled on how Argo Workflows, its CLI and pipeline steps
//! write Workflows (shared/reference/argo-facts.md). Written for these tests, not copied.

use serde_json::{Map, Value, json};

pub const NS: &str = "argo";
pub const STAGE_LABEL: &str = "current-stage";
pub const HISTORY: &str = "stage-guard.io/history";
pub const OVERRIDE: &str = "stage-guard.io/override-reason";
pub const PR_CREATED: &str = "waiting-pr-created";
pub const READY_FOR_QA: &str = "waiting-ready-for-qa";
pub const PR_APPROVED: &str = "waiting-pr-approved";
pub const STAGES: [&str; 3] = [PR_CREATED, READY_FOR_QA, PR_APPROVED];

pub const LABEL_TEMPLATE: &str = "workflows.argoproj.io/workflow-template";
pub const LABEL_PHASE: &str = "workflows.argoproj.io/phase";
pub const LABEL_COMPLETED: &str = "workflows.argoproj.io/completed";
pub const LABEL_CREATOR: &str = "workflows.argoproj.io/creator";
pub const LABEL_RESUBMITTED_FROM: &str = "workflows.argoproj.io/resubmitted-from-workflow";
pub const LABEL_ARCHIVING: &str = "workflows.argoproj.io/workflow-archiving-status";

const STARTED: &str = "2026-11-26T09:22:46Z";

// === configuration ===

/// A full configuration file (every key spelled out), defaults as in SPEC 2.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    pub label: &'static str,
    pub history_annotation: &'static str,
    pub mode: &'static str,
    pub resubmit: &'static str,
    pub override_users: Vec<&'static str>,
    pub override_groups: Vec<&'static str>,
    pub entry: Option<Vec<&'static str>>,
    pub transitions: Option<Vec<(&'static str, Vec<&'static str>)>>,
    pub history_limit: u32,
    pub history_required: bool,
}

impl Default for ConfigSpec {
    fn default() -> Self {
        ConfigSpec {
            label: STAGE_LABEL,
            history_annotation: HISTORY,
            mode: "enforce",
            resubmit: "reset",
            override_users: Vec::new(),
            override_groups: Vec::new(),
            entry: None,
            transitions: None,
            history_limit: 50,
            history_required: true,
        }
    }
}

fn yaml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl ConfigSpec {
    pub fn yaml(&self) -> String {
        let mut y = String::new();
        y.push_str(&format!("label: {}\nstages:\n", self.label));
        for s in STAGES {
            y.push_str(&format!("  - {s}\n"));
        }
        if let Some(entry) = &self.entry {
            y.push_str(&format!("entry: {}\n", yaml_list(entry)));
        }
        if let Some(transitions) = &self.transitions {
            y.push_str("transitions:\n");
            for (from, to) in transitions {
                y.push_str(&format!("  {from}: {}\n", yaml_list(to)));
            }
        }
        y.push_str(&format!("mode: {}\n", self.mode));
        y.push_str(&format!(
            "history:\n  annotation: {}\n  limit: {}\n  required: {}\n",
            self.history_annotation, self.history_limit, self.history_required
        ));
        y.push_str(&format!(
            "override:\n  annotation: {OVERRIDE}\n  users: {}\n  groups: {}\n",
            yaml_list(&self.override_users),
            yaml_list(&self.override_groups)
        ));
        y.push_str(&format!("resubmit: {}\n", self.resubmit));
        y
    }
}

// === workflows ===

fn template_spec(templates: usize) -> Value {
    let mut list = vec![json!({
        "name": "pipeline",
        "steps": [[{"name": "implement", "template": "agent"}], [{"name": "review", "template": "agent"}],
                  [{"name": "wait-for-qa", "template": "approval"}], [{"name": "merge", "template": "agent"}]],
    })];
    list.push(json!({"name": "approval", "suspend": {}}));
    for i in 0..templates {
        list.push(json!({
            "name": if i == 0 { "agent".to_string() } else { format!("agent-variant-{i}") },
            "inputs": {"parameters": [{"name": "task-id"}, {"name": "role", "value": "implementer"}]},
            "metadata": {"labels": {"pipeline.example.com/role": "agent"}},
            "container": {
                "image": "registry.example.com/agents/runner:1.4.2",
                "command": ["/bin/agent"],
                "args": ["run", "--task", "{{inputs.parameters.task-id}}", "--role", "{{inputs.parameters.role}}"],
                "env": [{"name": "AGENT_MODE", "value": "pipeline"}, {"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            },
            "retryStrategy": {"limit": "2", "retryPolicy": "OnFailure"},
        }));
    }
    json!({
        "entrypoint": "pipeline",
        "serviceAccountName": "argo-workflow",
        "arguments": {"parameters": [{"name": "repo"}, {"name": "task-id"}]},
        "templates": list,
        "workflowMetadata": {"labels": {"pipeline.example.com/team": "agents"}},
    })
}

fn base_metadata(labels: Value) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("namespace".into(), json!(NS));
    meta.insert("labels".into(), labels);
    meta
}

/// `argo submit --from workflowtemplate/<template>`: a CREATE with `generateName`, no name, uid or
/// creationTimestamp; the stage label only when given.
pub fn workflow_from_template(template: &str, stage: Option<&str>) -> Value {
    let mut labels = json!({
        LABEL_TEMPLATE: template,
        LABEL_CREATOR: "system-serviceaccount-argo-argo-server",
    });
    if let Some(stage) = stage {
        labels[STAGE_LABEL] = json!(stage);
    }
    let mut meta = base_metadata(labels);
    meta.insert("generateName".into(), json!(format!("{template}-")));
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": meta,
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [
                {"name": "repo", "value": "https://git.example.com/acme/shop.git"},
                {"name": "task-id", "value": "play-task-7"},
            ]},
            "serviceAccountName": "argo-workflow",
            "workflowMetadata": {
                "labels": {"pipeline.example.com/team": "agents"},
                "annotations": {"pipeline.example.com/task": "play-task-7"},
            },
        },
    })
}

/// The same with a fixed name.
pub fn workflow_named(name: &str, stage: Option<&str>) -> Value {
    let mut wf = workflow_from_template("agent-pipeline", stage);
    let meta = wf["metadata"].as_object_mut().expect("metadata");
    meta.remove("generateName");
    meta.insert("name".into(), json!(name));
    wf
}

fn node(wf: &str, i: usize, kind: &str, phase: &str) -> (String, Value) {
    let id = format!("{wf}-{}", 1_000_000_000u64 + (i as u64) * 7919);
    let name = if i == 0 {
        wf.to_string()
    } else {
        format!("{wf}[{i}].step-{i}")
    };
    let finished = if phase == "Running" || phase == "Pending" {
        Value::Null
    } else {
        json!("2026-11-26T09:30:02Z")
    };
    let value = json!({
        "id": id,
        "name": name,
        "displayName": if i == 0 { wf.to_string() } else { format!("step-{i}") },
        "type": kind,
        "templateName": if kind == "Suspend" { "approval" } else if i == 0 { "pipeline" } else { "agent" },
        "templateScope": "local/",
        "phase": phase,
        "boundaryID": wf,
        "startedAt": STARTED,
        "finishedAt": finished,
        "progress": if phase == "Succeeded" { "1/1" } else { "0/1" },
        "resourcesDuration": {"cpu": 3 + i as u64, "memory": 12 + i as u64},
        "inputs": {"parameters": [{"name": "task-id", "value": "play-task-7"}, {"name": "role", "value": "implementer"}]},
        "outputs": {"parameters": [{"name": "summary", "value": format!("step {i} finished its part of play-task-7")}], "exitCode": "0"},
        "children": [],
        "hostNodeName": "worker-3.cluster.example.com",
    });
    (id, value)
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("wf")
        .to_string()
}

fn nodes(wf: &str, count: usize) -> Map<String, Value> {
    let mut m = Map::new();
    for i in 0..count {
        let phase = if i + 1 == count {
            "Running"
        } else {
            "Succeeded"
        };
        let kind = if i == 0 { "Steps" } else { "Pod" };
        let (id, v) = node(wf, i, kind, phase);
        m.insert(id, v);
    }
    m
}

fn labels_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    meta.entry("labels").or_insert_with(|| json!({}));
    meta.get_mut("labels")
        .and_then(Value::as_object_mut)
        .expect("labels")
}

fn annotations_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    meta.entry("annotations").or_insert_with(|| json!({}));
    meta.get_mut("annotations")
        .and_then(Value::as_object_mut)
        .expect("annotations")
}

/// The controller's first UPDATE (PUT of the informer copy): phase/completed labels, the
/// `workflowMetadata` labels and annotations, and a first status with the stored template.
pub fn controller_first_update(stored: &Value) -> Value {
    let mut wf = stored.clone();
    let name = name_of(&wf);
    let template = wf
        .pointer("/spec/workflowTemplateRef/name")
        .and_then(Value::as_str)
        .unwrap_or("agent-pipeline")
        .to_string();
    let labels = labels_mut(&mut wf);
    labels.insert(LABEL_PHASE.into(), json!("Running"));
    labels.insert(LABEL_COMPLETED.into(), json!("false"));
    labels.insert(LABEL_TEMPLATE.into(), json!(template));
    labels.insert("pipeline.example.com/team".into(), json!("agents"));
    annotations_mut(&mut wf).insert("pipeline.example.com/task".into(), json!("play-task-7"));
    wf["status"] = json!({
        "phase": "Running",
        "startedAt": STARTED,
        "finishedAt": null,
        "progress": "0/1",
        "nodes": nodes(&name, 1),
        "storedWorkflowTemplateSpec": template_spec(3),
        "artifactRepositoryRef": {"default": true, "artifactRepository": {}},
        "conditions": [{"type": "PodRunning", "status": "False"}],
        "taskResultsCompletionStatus": {},
    });
    wf
}

/// A later status-only UPDATE by the controller: `status.nodes` grows to `count` nodes.
pub fn status_update(stored: &Value, count: usize) -> Value {
    let mut wf = stored.clone();
    let name = name_of(&wf);
    if !wf.get("status").is_some_and(Value::is_object) {
        wf["status"] = json!({"phase": "Running", "startedAt": STARTED});
    }
    wf["status"]["nodes"] = Value::Object(nodes(&name, count));
    wf["status"]["progress"] = json!(format!("{}/{}", count.saturating_sub(1), count));
    wf["status"]["resourcesDuration"] = json!({"cpu": 7 * count, "memory": 31 * count});
    wf
}

/// A status UPDATE that makes the Workflow about `bytes` large (many nodes and a big stored
/// template), as live pipeline Workflows get near Argo's 1 MiB cap.
pub fn large_status_update(stored: &Value, bytes: usize) -> Value {
    let mut wf = stored.clone();
    let name = name_of(&wf);
    let mut status = json!({
        "phase": "Running",
        "startedAt": STARTED,
        "progress": "0/1",
        "storedWorkflowTemplateSpec": template_spec(60),
    });
    let base = serde_json::to_vec(&wf).map(|v| v.len()).unwrap_or(0)
        + serde_json::to_vec(&status).map(|v| v.len()).unwrap_or(0);
    let (_, sample) = node(&name, 1, "Pod", "Succeeded");
    let per_node = serde_json::to_vec(&sample)
        .map(|v| v.len() + 30)
        .unwrap_or(900);
    let count = bytes.saturating_sub(base) / per_node + 1;
    status["nodes"] = Value::Object(nodes(&name, count));
    wf["status"] = status;
    wf
}

/// A status UPDATE after the controller compressed the node status (`status.compressedNodes`).
pub fn compressed_nodes_update(stored: &Value) -> Value {
    let mut wf = stored.clone();
    // Gzip magic plus pseudo-random bytes, base64-encoded, like the controller's packer output.
    let mut raw = vec![0x1f, 0x8b, 0x08, 0x00];
    let mut x: u32 = 0x2545_f491;
    for _ in 0..24_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        raw.push((x & 0xff) as u8);
    }
    use base64::Engine as _;
    let packed = base64::engine::general_purpose::STANDARD.encode(raw);
    if !wf.get("status").is_some_and(Value::is_object) {
        wf["status"] = json!({"phase": "Running", "startedAt": STARTED});
    }
    let status = wf["status"].as_object_mut().expect("status");
    status.remove("nodes");
    status.insert("compressedNodes".into(), json!(packed));
    status.insert("progress".into(), json!("57/80"));
    wf
}

/// The controller's UPDATE that parks the Workflow at its approval step: a `Suspend` node Running.
pub fn suspend_update(stored: &Value) -> Value {
    let mut wf = status_update(stored, 4);
    let name = name_of(&wf);
    let (id, suspend) = node(&name, 4, "Suspend", "Running");
    wf["status"]["nodes"][&id] = suspend;
    wf["status"]["phase"] = json!("Running");
    wf
}

/// `argo resume`: a Get then an UPDATE that marks the Suspend node Succeeded and records the actor.
pub fn resume_update(stored: &Value) -> Value {
    let mut wf = stored.clone();
    if let Some(nodes) = wf
        .pointer_mut("/status/nodes")
        .and_then(Value::as_object_mut)
    {
        for n in nodes.values_mut() {
            if n["type"] == "Suspend" && n["phase"] == "Running" {
                n["phase"] = json!("Succeeded");
                n["finishedAt"] = json!("2026-11-26T10:02:00Z");
                n["message"] =
                    json!("Resumed by: map[User:system:serviceaccount:argo:argo-server]");
                n["progress"] = json!("1/1");
            }
        }
    }
    let labels = labels_mut(&mut wf);
    labels.insert(
        "workflows.argoproj.io/actor".into(),
        json!("system-serviceaccount-argo-argo-server"),
    );
    labels.insert("workflows.argoproj.io/action".into(), json!("Resume"));
    wf
}

/// `argo resubmit`: a CREATE of a new Workflow copying every label (but creator/phase/completed/
/// archiving) and every annotation, plus `resubmitted-from-workflow`.
pub fn resubmitted_from(old: &Value) -> Value {
    let old_name = name_of(old);
    let mut labels = old
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(l) = labels.as_object_mut() {
        for k in [LABEL_CREATOR, LABEL_PHASE, LABEL_COMPLETED, LABEL_ARCHIVING] {
            l.remove(k);
        }
        l.insert(LABEL_RESUBMITTED_FROM.into(), json!(old_name));
        l.insert(
            LABEL_CREATOR.into(),
            json!("system-serviceaccount-argo-argo-server"),
        );
    }
    let mut meta = base_metadata(labels);
    meta.insert("generateName".into(), json!(format!("{old_name}-")));
    if let Some(a) = old.pointer("/metadata/annotations") {
        meta.insert("annotations".into(), a.clone());
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": meta,
        "spec": old.get("spec").cloned().unwrap_or(json!({})),
    })
}

// === client edits ===

/// What a pipeline step sends: `kubectl patch --type=merge -p '{"metadata":{"labels":{...}}}'`.
pub fn stage_merge_patch(stage: &str) -> Value {
    json!({"metadata": {"labels": {STAGE_LABEL: stage}}})
}

/// A stage merge patch carrying the resourceVersion the step read (a stale write gets 409).
pub fn stage_merge_patch_at(stage: &str, rv: &str) -> Value {
    json!({"metadata": {"resourceVersion": rv, "labels": {STAGE_LABEL: stage}}})
}

/// A forced change: the stage plus the override reason.
pub fn override_merge_patch(stage: &str, reason: &str) -> Value {
    json!({"metadata": {"labels": {STAGE_LABEL: stage}, "annotations": {OVERRIDE: reason}}})
}

/// `kubectl patch --type=json` removing the stage label.
pub fn label_removal_json_patch() -> Value {
    json!([{"op": "remove", "path": "/metadata/labels/current-stage"}])
}

pub fn with_label(obj: &Value, key: &str, value: &str) -> Value {
    let mut o = obj.clone();
    labels_mut(&mut o).insert(key.into(), json!(value));
    o
}

pub fn with_stage(obj: &Value, stage: &str) -> Value {
    with_label(obj, STAGE_LABEL, stage)
}

pub fn without_label(obj: &Value, key: &str) -> Value {
    let mut o = obj.clone();
    labels_mut(&mut o).remove(key);
    o
}

pub fn with_annotation(obj: &Value, key: &str, value: &str) -> Value {
    let mut o = obj.clone();
    annotations_mut(&mut o).insert(key.into(), json!(value));
    o
}

pub fn without_annotation(obj: &Value, key: &str) -> Value {
    let mut o = obj.clone();
    annotations_mut(&mut o).remove(key);
    o
}

/// A PUT body built from an older read: the old resourceVersion with a new edit on top.
pub fn stale_put(older_read: &Value, stage: &str) -> Value {
    with_stage(older_read, stage)
}

pub fn history_entry(from: Option<&str>, to: Option<&str>, by: &str, at: &str) -> Value {
    json!({"from": from, "to": to, "at": at, "by": by})
}
