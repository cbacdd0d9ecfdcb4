//! RFC 6902 and RFC 7386 application with the API server's strictness.

use serde_json::Value;

/// Applies a JSON Patch (RFC 6902) strictly, as kube-apiserver's `Apply` does: every operation must
/// apply to the document as it stands (no parent is created, a missing target is an error), and a
/// failure leaves nothing applied.
pub fn apply_json_patch(doc: &Value, ops: &Value) -> Result<Value, String> {
    let list = ops
        .as_array()
        .ok_or_else(|| format!("a JSON Patch must be an array, got {}", kind_of(ops)))?;
    for (index, op) in list.iter().enumerate() {
        reject_dash_target(doc, index, op)?;
    }
    let patch: json_patch::Patch =
        serde_json::from_value(ops.clone()).map_err(|e| format!("not a JSON Patch: {e}"))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch.0).map_err(|e| format!("JSON Patch failed: {e}"))?;
    Ok(out)
}

/// json-patch lets `-` name the last array element for remove/replace/test; RFC 6902 says it names
/// an element that does not exist, so those operations must fail.
fn reject_dash_target(doc: &Value, index: usize, op: &Value) -> Result<(), String> {
    let key = match op.get("op").and_then(Value::as_str) {
        Some("remove" | "replace" | "test") => "path",
        Some("move" | "copy") => "from",
        _ => return Ok(()),
    };
    let Some(path) = op.get(key).and_then(Value::as_str) else {
        return Ok(());
    };
    if let Some(parent) = path.strip_suffix("/-")
        && doc.pointer(parent).is_some_and(Value::is_array)
    {
        return Err(format!("operation {index}: `-` names no element in {path}"));
    }
    Ok(())
}

/// Applies a JSON Merge Patch (RFC 7386).
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// Escapes one JSON Pointer reference token (RFC 6901).
pub fn pointer_token(raw: &str) -> String {
    raw.replace('~', "~0").replace('/', "~1")
}

/// The JSON Pointers (at most `limit`) where two documents differ, for readable failure messages.
pub fn differing_paths(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk_diff(a, b, String::new(), limit, &mut out);
    out
}

fn walk_diff(a: &Value, b: &Value, at: String, limit: usize, out: &mut Vec<String>) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let next = format!("{at}/{}", pointer_token(key));
                match (x.get(key), y.get(key)) {
                    (Some(l), Some(r)) => walk_diff(l, r, next, limit, out),
                    (None, _) if out.len() < limit => out.push(format!("{next} (added)")),
                    (_, None) if out.len() < limit => out.push(format!("{next} (removed)")),
                    _ => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                walk_diff(l, r, format!("{at}/{i}"), limit, out);
            }
        }
        _ => out.push(if at.is_empty() { "/".to_string() } else { at }),
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
