//! AdmissionReview v1 as kube-apiserver builds it (`CreateV1AdmissionReview`) and checks the answer
//! (`VerifyAdmissionResponse`, the dispatchers' patch and denial handling), per
//! shared/reference/apiserver-contract.md sections 1 and 2.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const MUTATING_HOOK: &str = "mutate.stage-guard.io";
pub const VALIDATING_HOOK: &str = "validate.stage-guard.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Mutating,
    Validating,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Mutating => MUTATING_HOOK,
            Hook::Validating => VALIDATING_HOOK,
        }
    }

    /// The URL path as the API server requests it: it always appends the remaining time, which is
    /// the configurations' `timeoutSeconds` (5 in deploy/base/webhooks.yaml).
    pub fn path(self) -> &'static str {
        match self {
            Hook::Mutating => "/mutate?timeout=5s",
            Hook::Validating => "/validate?timeout=5s",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// `request.userInfo` (authentication/v1 UserInfo); empty fields are omitted on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(username: &str, groups: &[&str]) -> Self {
        UserInfo {
            username: username.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    fn service_account(ns: &str, name: &str) -> Self {
        let mut user = Self::new(
            &format!("system:serviceaccount:{ns}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{ns}"),
                "system:authenticated",
            ],
        );
        user.uid = uuid::Uuid::new_v4().to_string();
        user.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![format!("{name}-7d9f8c6b5-x2x4q")],
        );
        user
    }

    /// A workflow step's service account (runs `kubectl patch` on its own Workflow).
    pub fn workflow_step() -> Self {
        Self::service_account("argo", "argo-workflow")
    }

    /// The workflow controller.
    pub fn controller() -> Self {
        Self::service_account("argo", "argo")
    }

    /// argo-server (`argo resume`, `argo resubmit` through the UI/API).
    pub fn argo_server() -> Self {
        Self::service_account("argo", "argo-server")
    }

    pub fn human(name: &str) -> Self {
        Self::new(name, &["system:authenticated"])
    }

    pub fn alice() -> Self {
        Self::human("alice")
    }

    pub fn bob() -> Self {
        Self::human("bob")
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.username.is_empty() {
            m.insert("username".into(), json!(self.username));
        }
        if !self.uid.is_empty() {
            m.insert("uid".into(), json!(self.uid));
        }
        if !self.groups.is_empty() {
            m.insert("groups".into(), json!(self.groups));
        }
        if !self.extra.is_empty() {
            m.insert("extra".into(), json!(self.extra));
        }
        Value::Object(m)
    }
}

/// What one webhook call is about; `object`/`old_object` are `Value::Null` where the API server
/// sends JSON null (oldObject on CREATE, object on DELETE).
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub hook: Hook,
    pub operation: Operation,
    pub user: UserInfo,
    pub namespace: String,
    pub name: Option<String>,
    pub object: Value,
    pub old_object: Value,
    pub dry_run: bool,
    pub options: Value,
}

/// `options` as the API server sends it: the operation's options with TypeMeta; PATCH sends
/// `UpdateOptions`, never `PatchOptions`.
pub fn options(kind: &str, dry_run: bool) -> Value {
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if dry_run {
        o["dryRun"] = json!(["All"]);
    }
    o
}

pub fn workflow_gvk() -> Value {
    json!({"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"})
}

pub fn workflow_gvr() -> Value {
    json!({"group": "argoproj.io", "version": "v1alpha1", "resource": "workflows"})
}

/// The full AdmissionReview envelope for one call.
pub fn build_review(uid: &str, req: &ReviewRequest) -> Value {
    let mut r = Map::new();
    r.insert("uid".into(), json!(uid));
    r.insert("kind".into(), workflow_gvk());
    r.insert("resource".into(), workflow_gvr());
    r.insert("requestKind".into(), workflow_gvk());
    r.insert("requestResource".into(), workflow_gvr());
    if let Some(name) = req.name.as_deref().filter(|n| !n.is_empty()) {
        r.insert("name".into(), json!(name));
    }
    r.insert("namespace".into(), json!(req.namespace));
    r.insert("operation".into(), json!(req.operation.as_str()));
    r.insert("userInfo".into(), req.user.to_json());
    r.insert("object".into(), req.object.clone());
    r.insert("oldObject".into(), req.old_object.clone());
    r.insert("dryRun".into(), json!(req.dry_run));
    r.insert("options".into(), req.options.clone());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": Value::Object(r),
    })
}

/// A response that passed the API server's checks.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub allowed: bool,
    /// `response.status` (only consulted for denials).
    pub status: Option<Value>,
    /// The decoded JSON Patch (`None` when the response carries none or an empty one).
    pub patch: Option<Value>,
    /// Warnings the API server would pass on (invalid ones are dropped and listed in `problems`).
    pub warnings: Vec<String>,
    /// Audit annotations with valid keys, as `<key> -> value` (not yet prefixed with the hook).
    pub audit: BTreeMap<String, String>,
    /// Contract breaches the API server tolerates silently (dropped warnings, dropped audit keys,
    /// `patch`/`patchType` keys present but empty).
    pub problems: Vec<String>,
}

/// Checks one HTTP answer the way `VerifyAdmissionResponse` and the dispatchers do. `Err` is the
/// reason the API server would report as `failed calling webhook` (HTTP 500 under failurePolicy Fail).
pub fn verify_response(
    hook: Hook,
    uid: &str,
    http_status: u16,
    body: &[u8],
) -> Result<Verified, String> {
    if http_status != 200 {
        let text = String::from_utf8_lossy(body);
        return Err(format!(
            "received non-200 HTTP status {http_status}: {}",
            truncate(&text, 200)
        ));
    }
    let review: Value = serde_json::from_slice(body)
        .map_err(|e| format!("received invalid webhook response: body does not decode: {e}"))?;
    let envelope = review
        .as_object()
        .ok_or("received invalid webhook response: body is not a JSON object")?;
    let api_version = envelope
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = envelope.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(format!(
            "received invalid webhook response: expected webhook response of admission.k8s.io/v1, \
             Kind=AdmissionReview, got apiVersion={api_version:?} kind={kind:?}"
        ));
    }
    let response = match envelope.get("response") {
        Some(Value::Object(r)) => r,
        Some(Value::Null) | None => {
            return Err("received invalid webhook response: webhook response was absent".into());
        }
        Some(other) => {
            return Err(format!(
                "received invalid webhook response: response is {}",
                super::patch::kind_of(other)
            ));
        }
    };
    let got_uid = match response.get("uid") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err("received invalid webhook response: response.uid is not a string".into());
        }
    };
    if got_uid != uid {
        return Err(format!(
            "received invalid webhook response: expected response.uid={uid:?}, got {got_uid:?}"
        ));
    }
    let allowed = match response.get("allowed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(
                "received invalid webhook response: response.allowed is not a boolean".into(),
            );
        }
    };
    let mut out = Verified {
        allowed,
        ..Verified::default()
    };

    let patch_bytes = match response.get("patch") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|e| {
                format!("received invalid webhook response: response.patch is not base64: {e}")
            })?,
        // Go decodes a JSON array of numbers into []byte too (kube-rs sends that form).
        Some(Value::Array(items)) => items
            .iter()
            .map(|n| n.as_u64().filter(|n| *n <= 255).map(|n| n as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or("received invalid webhook response: response.patch array is not bytes")?,
        Some(_) => {
            return Err(
                "received invalid webhook response: response.patch has the wrong type".into(),
            );
        }
    };
    let patch_type = match response.get("patchType") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(
                "received invalid webhook response: response.patchType is not a string".into(),
            );
        }
    };
    match hook {
        Hook::Mutating => {
            if !patch_bytes.is_empty() && patch_type.is_empty() {
                return Err("received invalid webhook response: webhook returned response.patch but not response.patchType".into());
            }
            if patch_bytes.is_empty() && !patch_type.is_empty() {
                return Err("received invalid webhook response: webhook returned response.patchType but not response.patch".into());
            }
            if !patch_type.is_empty() && patch_type != "JSONPatch" {
                return Err(format!("unsupported patch type {patch_type:?}"));
            }
            if response.contains_key("patch") != response.contains_key("patchType") {
                out.problems.push(
                    "mutating response has only one of the `patch` and `patchType` keys".into(),
                );
            }
            if !patch_bytes.is_empty() {
                let ops: Value = serde_json::from_slice(&patch_bytes)
                    .map_err(|e| format!("failed to decode the patch: {e}"))?;
                if !ops.is_array() {
                    return Err(format!(
                        "the patch is {}, not a JSON Patch array",
                        super::patch::kind_of(&ops)
                    ));
                }
                if ops.as_array().is_some_and(|a| !a.is_empty()) {
                    out.patch = Some(ops);
                }
            }
        }
        Hook::Validating => {
            if !patch_bytes.is_empty() {
                return Err("received invalid webhook response: validating webhook may not return response.patch".into());
            }
            if !patch_type.is_empty() {
                return Err("received invalid webhook response: validating webhook may not return response.patchType".into());
            }
            for key in ["patch", "patchType"] {
                if response.contains_key(key) {
                    out.problems
                        .push(format!("validating response carries a `{key}` key"));
                }
            }
        }
    }

    match response.get("warnings") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for w in items {
                let Some(text) = w.as_str() else {
                    return Err(
                        "received invalid webhook response: a warning is not a string".into(),
                    );
                };
                match check_warning(text) {
                    Ok(()) => {
                        if !out.warnings.iter().any(|seen| seen == text) {
                            out.warnings.push(text.to_string());
                        }
                    }
                    Err(why) => out
                        .problems
                        .push(format!("warning {:?} dropped: {why}", truncate(text, 80))),
                }
            }
        }
        Some(_) => {
            return Err("received invalid webhook response: warnings is not an array".into());
        }
    }
    match response.get("auditAnnotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let Some(value) = value.as_str() else {
                    return Err(format!(
                        "received invalid webhook response: audit annotation {key:?} is not a string"
                    ));
                };
                match check_audit_key(key) {
                    Ok(()) => {
                        out.audit.insert(key.clone(), value.to_string());
                    }
                    Err(why) => out
                        .problems
                        .push(format!("audit annotation key {key:?} dropped: {why}")),
                }
            }
        }
        Some(_) => {
            return Err("received invalid webhook response: auditAnnotations is not a map".into());
        }
    }
    out.status = response.get("status").filter(|s| !s.is_null()).cloned();
    Ok(out)
}

/// How the API server turns a denial into the error the client sees (`ToStatusErr`).
pub fn denial(hook: Hook, status: Option<&Value>) -> (u16, String, String) {
    let field = |k: &str| {
        status
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let code = if code < 400 { 400 } else { code as u16 };
    let reason = field("reason");
    let message = field("message");
    let text = if !message.is_empty() {
        format!(
            "admission webhook {:?} denied the request: {message}",
            hook.name()
        )
    } else if !reason.is_empty() {
        format!(
            "admission webhook {:?} denied the request: {reason}",
            hook.name()
        )
    } else {
        format!(
            "admission webhook {:?} denied the request without explanation",
            hook.name()
        )
    };
    (code, reason, text)
}

/// SPEC 4.7 and the API server's warning header rules: valid single-line UTF-8 without control
/// characters (else dropped), at most 120 characters.
pub fn check_warning(text: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    let n = text.chars().count();
    if n > 120 {
        return Err(format!("{n} characters, more than 120"));
    }
    if text.is_empty() {
        return Err("empty".into());
    }
    Ok(())
}

/// The part of an audit annotation key after `<hook>/`: a qualified-name name part.
pub fn check_audit_key(key: &str) -> Result<(), String> {
    if key.contains('/') {
        return Err("contains '/'".into());
    }
    if key.is_empty() || key.len() > 63 {
        return Err(format!("length {} outside 1..=63", key.len()));
    }
    let b = key.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("must start and end with an alphanumeric character".into());
    }
    if !b
        .iter()
        .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
    {
        return Err("characters outside [-A-Za-z0-9_.]".into());
    }
    Ok(())
}

pub fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head}…")
    }
}
