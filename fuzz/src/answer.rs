//! The whole answer, for both webhooks and several policies, checked the way kube-apiserver checks a
//! webhook's response (apiserver-contract.md 2, SPEC 4.7): HTTP 400 exactly for the bodies the decoder
//! refuses; otherwise the uid echoed, `apiVersion` and `kind` set, `patch` only from the mutating
//! webhook and always with `patchType: JSONPatch`, a patch that applies to the object sent, a mutating
//! webhook that never denies, a denial with code 403, warnings single-line and at most 120
//! characters, audit annotation keys that the API server keeps.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::Value;
use stage_guard::admission::{self, Webhook, request};
use stage_guard::core::Policy;

/// The default policy and ones that reach the other branches: a graph with a loop, overrides
/// permitted to a user and a group, warn mode, resubmit `keep`, a short history.
const POLICIES: [&str; 2] = [
    "",
    r#"
label: current-stage
stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved, merged]
entry: [waiting-pr-created, waiting-ready-for-qa]
transitions:
  waiting-pr-created: [waiting-ready-for-qa]
  waiting-ready-for-qa: [waiting-pr-approved, waiting-pr-created]
  waiting-pr-approved: [merged, waiting-ready-for-qa]
mode: warn
history:
  annotation: stage-guard.io/history
  limit: 2
  required: true
override:
  annotation: stage-guard.io/override-reason
  users: [alice]
  groups: [system:masters]
resubmit: keep
"#,
];

fn policies() -> &'static [Policy] {
    static POLICIES_READ: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES_READ.get_or_init(|| {
        POLICIES
            .iter()
            .map(|yaml| {
                if yaml.is_empty() {
                    Policy::default_policy()
                } else {
                    Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("fuzz policy: {e}"))
                }
            })
            .collect()
    })
}

/// A fixed time, so a finding replays the same.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn answer(data: &[u8]) -> Result<(), String> {
    let decoded = request::decode(data);
    for policy in policies() {
        for webhook in [Webhook::Validate, Webhook::Mutate] {
            let answered = admission::answer(policy, webhook, data, now());
            match (&decoded, answered) {
                (Err(_), Err(_)) => {}
                (Ok(req), Ok(a)) => check_response(webhook, &req.uid, data, &a.body, a.allowed)
                    .map_err(|e| format!("{} webhook: {e}", webhook.as_str()))?,
                (Ok(_), Err(e)) => {
                    return Err(format!("decoded, but answer failed: {e}"));
                }
                (Err(e), Ok(_)) => return Err(format!("answered a body decode refuses: {e}")),
            }
        }
    }
    Ok(())
}

fn check_response(
    webhook: Webhook,
    uid: &str,
    request_body: &[u8],
    body: &[u8],
    allowed: bool,
) -> Result<(), String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err("apiVersion/kind missing or wrong".into());
    }
    let response = &review["response"];
    if response["uid"] != uid {
        return Err(format!("uid {} not echoed as {uid:?}", response["uid"]));
    }
    if response["allowed"] != Value::Bool(allowed) {
        return Err(format!("allowed is {}", response["allowed"]));
    }
    if !allowed {
        if webhook == Webhook::Mutate {
            return Err("the mutating webhook denied".into());
        }
        if response["status"]["code"] != 403 {
            return Err(format!("denied with code {}", response["status"]["code"]));
        }
    }
    let (patch, patch_type) = (&response["patch"], &response["patchType"]);
    match webhook {
        Webhook::Validate if !patch.is_null() || !patch_type.is_null() => {
            return Err("a validating response carries patch or patchType".into());
        }
        Webhook::Mutate if patch.is_null() != patch_type.is_null() => {
            return Err("patch and patchType do not come together".into());
        }
        Webhook::Mutate if !patch.is_null() => {
            if patch_type != "JSONPatch" {
                return Err(format!("patchType {patch_type}"));
            }
            applies(patch, request_body)?;
        }
        _ => {}
    }
    if let Some(warnings) = response.get("warnings") {
        for w in warnings.as_array().ok_or("warnings is not a list")? {
            let w = w.as_str().ok_or("a warning is not a string")?;
            if w.chars().any(char::is_control) || w.chars().count() > 120 || w.is_empty() {
                return Err(format!("warning the API server drops or cuts: {w:?}"));
            }
        }
    }
    if let Some(audit) = response.get("auditAnnotations") {
        for (key, value) in audit.as_object().ok_or("auditAnnotations is not a map")? {
            if !value.is_string() || !audit_key_kept(key) {
                return Err(format!("audit annotation the API server drops: {key:?}"));
            }
        }
    }
    Ok(())
}

/// `<key>` of `<webhook>/<key>`: a qualified name's name part, no `/`, at most 63 characters.
fn audit_key_kept(key: &str) -> bool {
    let b = key.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner)
}

/// The patch is base64 of an RFC 6902 JSON Patch that applies, strictly, to `request.object`: the API
/// server answers 500 to any write whose patch does not apply.
fn applies(patch: &Value, request_body: &[u8]) -> Result<(), String> {
    let text = patch.as_str().ok_or("patch is not a base64 string")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    let ops: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON Patch: {e}"))?;
    // The API server applies the patch to the object it decoded; serde_json's reading (the last of
    // duplicate members wins) is Go's too.
    let review: Value = serde_json::from_slice(request_body)
        .map_err(|e| format!("a body decode accepts is not JSON to serde_json: {e}"))?;
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &ops).map_err(|e| {
        format!(
            "patch {} does not apply: {e}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"UPDATE","object":{"metadata":{"name":"wf"}},"oldObject":{"metadata":{"name":"wf"}}}}"#;

    fn response(webhook: Webhook, response: Value) -> Result<(), String> {
        let allowed = response["allowed"].as_bool().unwrap_or(false);
        let body = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
        check_response(
            webhook,
            "u1",
            REQUEST.as_bytes(),
            body.to_string().as_bytes(),
            allowed,
        )
    }

    fn patch(ops: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(ops)
    }

    #[test]
    fn the_api_servers_refusals_are_findings() {
        let good_patch = patch(r#"[{"op":"add","path":"/metadata/labels","value":{}}]"#);
        let ok = [
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u1", "allowed": true}),
            ),
            (
                Webhook::Mutate,
                serde_json::json!({"uid": "u1", "allowed": true, "patch": good_patch, "patchType": "JSONPatch"}),
            ),
        ];
        for (w, r) in ok {
            assert_eq!(response(w, r), Ok(()));
        }
        let bad = [
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u2", "allowed": true}),
            ),
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u1", "allowed": true, "patch": good_patch, "patchType": "JSONPatch"}),
            ),
            (
                Webhook::Mutate,
                serde_json::json!({"uid": "u1", "allowed": true, "patch": good_patch}),
            ),
            (
                Webhook::Mutate,
                serde_json::json!({"uid": "u1", "allowed": true, "patch": patch(r#"[{"op":"remove","path":"/metadata/labels/x"}]"#), "patchType": "JSONPatch"}),
            ),
            (
                Webhook::Mutate,
                serde_json::json!({"uid": "u1", "allowed": false}),
            ),
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u1", "allowed": false, "status": {"code": 409}}),
            ),
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u1", "allowed": true, "warnings": ["two\nlines"]}),
            ),
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u1", "allowed": true, "warnings": ["x".repeat(121)]}),
            ),
            (
                Webhook::Validate,
                serde_json::json!({"uid": "u1", "allowed": true, "auditAnnotations": {"a/b": "x"}}),
            ),
        ];
        for (w, r) in bad {
            assert!(response(w, r.clone()).is_err(), "{r} passed");
        }
    }
}
