//! The JSON Patch that carries out the core's mutation [`Plan`] on the object as sent (SPEC 4.2).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::{Map, Value};

use crate::core::{HistoryEdit, Plan, Policy};

use super::request::Request;

/// The JSON Patch that carries out a plan on the object as sent. Paths are escaped (`~1`, `~0`) and
/// missing parents are created, so the patch applies under strict RFC 6902 semantics.
pub fn patch_for(policy: &Policy, plan: &Plan, req: &Request<'_>) -> Patch {
    let obj = &req.object;
    let mut ops = Vec::new();
    let path = |parts: &[&str]| PointerBuf::from_tokens(parts.iter().copied());
    if plan.remove_stage_label && obj.label(&policy.label).is_some() {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: path(&["metadata", "labels", &policy.label]),
        }));
    }
    if plan.remove_override && obj.annotation(&policy.override_.annotation).is_some() {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: path(&["metadata", "annotations", &policy.override_.annotation]),
        }));
    }
    let key = policy.history.annotation.as_str();
    match &plan.history {
        HistoryEdit::Keep => {}
        HistoryEdit::Remove => {
            if obj.annotation(key).is_some() {
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: path(&["metadata", "annotations", key]),
                }));
            }
        }
        HistoryEdit::Set(value) => {
            let value = Value::String(value.clone());
            // `add` on an existing member replaces it (RFC 6902 4.1); a missing parent is created whole.
            let (p, v) = if obj.has_annotations {
                (path(&["metadata", "annotations", key]), value)
            } else if obj.has_metadata {
                (
                    path(&["metadata", "annotations"]),
                    Value::Object(Map::from_iter([(key.to_owned(), value)])),
                )
            } else {
                let annotations = Value::Object(Map::from_iter([(key.to_owned(), value)]));
                (
                    path(&["metadata"]),
                    Value::Object(Map::from_iter([("annotations".to_owned(), annotations)])),
                )
            };
            ops.push(PatchOperation::Add(AddOperation { path: p, value: v }));
        }
    }
    Patch(ops)
}
