//! The imitation in `tests/support/` against the real thing: the same operations go through the
//! real kube-apiserver and through `support::ApiServer`, each calling a webhook that only records,
//! and the AdmissionReviews they send must have the same shape (the fields stage-guard may read,
//! which object states each hook sees, options, dry-run, user).

use crate::Scenario;
use crate::harness::*;
use crate::recorder::Recorder;
use crate::support::apiserver::{ApiServer, Patch};
use crate::support::review::{Hook, UserInfo};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, ALICE, BOB};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "the_imitation_sends_what_the_api_server_sends",
    run: the_imitation_sends_what_the_api_server_sends,
}];

/// Deletes the webhook configurations when dropped.
struct Registered<'a>(&'a stage_guard_testenv::ControlPlane);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let _ = self.0.unregister_stage_guard();
    }
}

/// The parts of a review that describe what the API server sends, independent of values that
/// differ on every run (uids, timestamps, resourceVersions).
fn shape(review: &Value) -> Value {
    let r = &review["request"];
    let keys = |v: &Value| -> Value {
        match v.as_object() {
            Some(m) => json!(m.keys().collect::<Vec<_>>()),
            None => v.clone(),
        }
    };
    let meta = |v: &Value| -> Value {
        if v.is_null() {
            return Value::Null;
        }
        json!({
            "object keys": keys(v),
            "metadata keys": keys(&v["metadata"]),
            "labels": v["metadata"]["labels"],
            "generation": v["metadata"]["generation"],
            "managedFields managers": v["metadata"]["managedFields"]
                .as_array()
                .map(|m| m.iter().map(|e| json!([e["manager"], e["operation"]])).collect::<Vec<_>>()),
        })
    };
    json!({
        "request keys": keys(r),
        "kind": r["kind"],
        "resource": r["resource"],
        "requestKind": r["requestKind"],
        "requestResource": r["requestResource"],
        "operation": r["operation"],
        "name present": r.get("name").is_some(),
        "userInfo": r["userInfo"],
        "dryRun": r["dryRun"],
        "options": {"kind": r["options"]["kind"], "apiVersion": r["options"]["apiVersion"], "dryRun": r["options"]["dryRun"]},
        "object": meta(&r["object"]),
        "oldObject": meta(&r["oldObject"]),
    })
}

fn static_token_user(name: &str, key: &str, groups: &[&str]) -> UserInfo {
    let mut user = UserInfo::new(name, groups);
    user.uid = format!("uid-{key}");
    user
}

fn the_imitation_sends_what_the_api_server_sends(suite: &Suite) -> Result<()> {
    let cp = suite.control_plane()?;
    let ns = suite.fresh_namespace("imitation")?;
    let certs = tempfile::tempdir()?;
    let bundle = issue_serving_cert(certs.path())?;
    let recorder = Recorder::start(certs.path())?;
    cp.apply(webhook_configurations_for(recorder.addr.port(), &bundle)?)?;
    let _registered = Registered(cp);
    // Labelled, or the objectSelector would not send it.
    let probe = workflow("probe", &[(STAGE_LABEL, PR_CREATED)], &[]).to_string();
    wait_until(Duration::from_secs(30), "the recorder is called", || {
        cp.kubectl(ADMIN)?
            .args(["-n", &ns, "create", "--dry-run=server", "-f", "-"])
            .stdin(probe.clone())
            .run()?;
        Ok(!recorder.reviews().is_empty())
    })?;
    recorder.clear();

    // === the real API server, through kubectl ===
    let kubectl = |user: &str| cp.kubectl(user).map(|k| k.args(["-n", &ns]));
    let mut created = workflow_at("unused", Some(PR_CREATED));
    created["metadata"]
        .as_object_mut()
        .context("metadata")?
        .remove("name");
    created["metadata"]["generateName"] = "diff-".into();
    let mut real: Vec<(&str, Vec<(String, Value)>)> = Vec::new();
    let out = kubectl(ALICE)?
        .args(["create", "-o", "json", "-f", "-"])
        .stdin(created.to_string())
        .ok()?;
    let stored: Value = serde_json::from_str(&out)?;
    let name = stored["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_string();
    real.push(("create", recorder.reviews()));
    recorder.clear();
    let patch = json!({"metadata": {"labels": {STAGE_LABEL: READY_FOR_QA}}});
    kubectl(BOB)?
        .args(["patch", "workflow", &name, "--type", "merge", "-p"])
        .arg(patch.to_string())
        .ok()?;
    real.push(("merge patch", recorder.reviews()));
    recorder.clear();
    let mut put = kubectl(ADMIN)?
        .args(["get", "workflow", &name, "-o", "json"])
        .json()?;
    put["metadata"]["labels"][STAGE_LABEL] = PR_APPROVED.into();
    kubectl(ALICE)?
        .args(["replace", "-f", "-"])
        .stdin(put.to_string())
        .ok()?;
    real.push(("put", recorder.reviews()));
    recorder.clear();
    let dry = json!({"metadata": {"labels": {STAGE_LABEL: PR_CREATED}}});
    kubectl(ALICE)?
        .args([
            "patch",
            "workflow",
            &name,
            "--dry-run=server",
            "--type",
            "merge",
            "-p",
        ])
        .arg(dry.to_string())
        .ok()?;
    real.push(("dry-run patch", recorder.reviews()));

    // === the imitation, the same operations by the same users ===
    let seen: Arc<Mutex<Vec<(Hook, Value)>>> = Arc::default();
    let kept = seen.clone();
    let api = ApiServer::with_fake(move |hook, review| {
        kept.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((hook, review.clone()));
        let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": true}});
        (200, answer.to_string().into_bytes())
    });
    let alice = static_token_user(
        "alice",
        "alice",
        &["pipeline-admins", "system:authenticated"],
    );
    let bob = static_token_user("bob", "bob", &["developers", "system:authenticated"]);
    let take = || -> Vec<(String, Value)> {
        let mut calls = seen.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .drain(..)
            .map(|(hook, review)| (hook.path().to_string(), review))
            .collect()
    };
    let mut imitated: Vec<(&str, Vec<(String, Value)>)> = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut object = created.clone();
        object["metadata"]["namespace"] = ns.clone().into();
        let stored = api
            .create(&alice, object, false)
            .await
            .map_err(|e| anyhow::anyhow!("imitation create: {e:?}"))?
            .object;
        let name = stored["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        imitated.push(("create", take()));
        api.patch(&bob, &ns, &name, Patch::Merge(patch.clone()), false)
            .await
            .map_err(|e| anyhow::anyhow!("imitation patch: {e:?}"))?;
        imitated.push(("merge patch", take()));
        let mut put = api.store().get(&ns, &name).context("stored")?;
        put["metadata"]["labels"][STAGE_LABEL] = PR_APPROVED.into();
        api.update(&alice, put, false)
            .await
            .map_err(|e| anyhow::anyhow!("imitation put: {e:?}"))?;
        imitated.push(("put", take()));
        api.patch(&alice, &ns, &name, Patch::Merge(dry.clone()), true)
            .await
            .map_err(|e| anyhow::anyhow!("imitation dry-run: {e:?}"))?;
        imitated.push(("dry-run patch", take()));
        anyhow::Ok(())
    })?;

    let mut differences = Vec::new();
    for ((op, real_calls), (_, imitated_calls)) in real.iter().zip(&imitated) {
        let hooks = |calls: &[(String, Value)]| -> Vec<String> {
            calls.iter().map(|(t, _)| t.clone()).collect()
        };
        if hooks(real_calls) != hooks(imitated_calls) {
            differences.push(format!(
                "{op}: the API server called {:?}, the imitation {:?}",
                hooks(real_calls),
                hooks(imitated_calls)
            ));
            continue;
        }
        for ((target, r), (_, i)) in real_calls.iter().zip(imitated_calls) {
            let (r, i) = (shape(r), shape(i));
            let mut fields: BTreeMap<&str, (Value, Value)> = BTreeMap::new();
            for (key, value) in r.as_object().into_iter().flatten() {
                if i.get(key) != Some(value) {
                    fields.insert(key, (value.clone(), i[key].clone()));
                }
            }
            for (key, (real_value, imitated_value)) in fields {
                differences.push(format!(
                    "{op} {target} {key}:\n    real      {real_value}\n    imitation {imitated_value}"
                ));
            }
        }
    }
    ensure!(
        differences.is_empty(),
        "{} differences between the API server and tests/support:\n{}",
        differences.len(),
        differences.join("\n")
    );
    Ok(())
}
