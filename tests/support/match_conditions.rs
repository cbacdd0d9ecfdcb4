//! The webhook configurations' `matchConditions`, evaluated the way kube-apiserver evaluates them
//! before it calls a hook (`matchconditions/matcher.go`): every condition true sends the request,
//! one false skips the hook, an error fails the request (failurePolicy Fail: 403).
//!
//! The conditions are read from `deploy/base/webhooks.yaml`, so the imitation filters with the
//! very expressions the cluster gets. CEL is evaluated by the `cel` crate, not by the API server's
//! cel-go; `tests/e2e_apiserver` checks the outcome against the real thing.

use super::review::Hook;
use serde_json::Value;
use std::path::Path;

pub struct MatchConditions {
    mutating: Vec<(String, cel::Program)>,
    validating: Vec<(String, cel::Program)>,
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
        MatchConditions {
            mutating: of("MutatingWebhookConfiguration"),
            validating: of("ValidatingWebhookConfiguration"),
        }
    }

    /// Whether the API server calls `hook` for this `request` (the AdmissionReview's `request`).
    pub fn sends(&self, hook: Hook, request: &Value) -> Result<bool, String> {
        let conditions = match hook {
            Hook::Mutating => &self.mutating,
            Hook::Validating => &self.validating,
        };
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
