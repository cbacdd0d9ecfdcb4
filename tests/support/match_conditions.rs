//! The webhook configurations' `objectSelector` and `matchConditions`, applied the way kube-apiserver
//! applies them before it calls a hook: the selector must match the object or the old object
//! (`object/matcher.go`), then every condition true sends the request, one false skips the hook, an
//! error fails the request (failurePolicy Fail: 403; `matchconditions/matcher.go`).
//!
//! Both are read from `deploy/base/webhooks.yaml`, so the imitation filters with the very selector
//! and expressions the cluster gets. CEL is evaluated by the `cel` crate, not by the API server's
//! cel-go; `tests/e2e_apiserver` checks the outcome against the real thing.

use super::review::Hook;
use serde_json::Value;
use std::path::Path;

pub struct MatchConditions {
    mutating: Vec<(String, cel::Program)>,
    validating: Vec<(String, cel::Program)>,
    /// The `Exists` keys of each configuration's objectSelector (the only operator deploy/ uses).
    mutating_selector: Vec<String>,
    validating_selector: Vec<String>,
}

impl MatchConditions {
    /// The conditions of both configurations in `deploy/base/webhooks.yaml`.
    pub fn from_deploy_base() -> MatchConditions {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/webhooks.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        let of = |kind: &str| -> Vec<(String, cel::Program)> {
            let doc = docs
                .iter()
                .find(|d| d["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} in {}", path.display()));
            doc["webhooks"][0]["matchConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or_default().to_string();
                    let expression = c["expression"].as_str().unwrap_or_default();
                    let program = cel::Program::compile(expression)
                        .unwrap_or_else(|e| panic!("{kind} condition {name}: {e}"));
                    (name, program)
                })
                .collect()
        };
        let selector = |kind: &str| -> Vec<String> {
            let doc = docs.iter().find(|d| d["kind"] == kind).unwrap();
            let selector = &doc["webhooks"][0]["objectSelector"];
            assert!(
                selector.get("matchLabels").is_none(),
                "{kind}: only matchExpressions with Exists are imitated"
            );
            selector["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    assert_eq!(e["operator"], "Exists", "{kind}: only Exists is imitated");
                    e["key"].as_str().unwrap_or_default().to_string()
                })
                .collect()
        };
        MatchConditions {
            mutating: of("MutatingWebhookConfiguration"),
            validating: of("ValidatingWebhookConfiguration"),
            mutating_selector: selector("MutatingWebhookConfiguration"),
            validating_selector: selector("ValidatingWebhookConfiguration"),
        }
    }

    /// Whether the API server calls `hook` for this `request` (the AdmissionReview's `request`).
    pub fn sends(&self, hook: Hook, request: &Value) -> Result<bool, String> {
        let (conditions, selector) = match hook {
            Hook::Mutating => (&self.mutating, &self.mutating_selector),
            Hook::Validating => (&self.validating, &self.validating_selector),
        };
        let selected = |object: &Value| {
            !object.is_null()
                && selector
                    .iter()
                    .all(|key| object["metadata"]["labels"].get(key).is_some())
        };
        if !selected(&request["object"]) && !selected(&request["oldObject"]) {
            return Ok(false);
        }
        let mut request = request.clone();
        let fields = request
            .as_object_mut()
            .ok_or("the request is not an object")?;
        let object = fields.remove("object").unwrap_or(Value::Null);
        let old_object = fields.remove("oldObject").unwrap_or(Value::Null);
        let mut context = cel::Context::default();
        for (name, value) in [
            ("object", &object),
            ("oldObject", &old_object),
            ("request", &request),
        ] {
            context
                .add_variable(name, value)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let mut sends = true;
        for (name, program) in conditions {
            match program.execute(&context) {
                Ok(cel::Value::Bool(value)) => sends &= value,
                Ok(other) => {
                    return Err(format!("matchCondition {name} gave {other:?}, not a bool"));
                }
                Err(e) => return Err(format!("matchCondition {name}: {e:?}")),
            }
        }
        Ok(sends)
    }
}
