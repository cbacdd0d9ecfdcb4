//! The API server's field manager, as far as webhooks can see it: before mutating admission, every
//! write records in `metadata.managedFields` which manager owns which fields (one entry per manager
//! and operation). A manager gets the fields its write changed, the others lose them, and an entry
//! left owning nothing is dropped. Managers are named as kubectl names them (`kubectl-create`,
//! `kubectl-replace`, `kubectl-patch`).
//!
//! Fields are tracked at the granularity Argo's CRD gives them: each label and annotation, and
//! `spec` and `status` as wholes (both `x-kubernetes-map-type: atomic`).

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

type Path = Vec<String>;

/// The fields of `obj` that ownership is tracked for, with their values.
fn leaves(obj: Option<&Value>) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    let Some(obj) = obj else { return out };
    for key in ["labels", "annotations"] {
        if let Some(map) = obj
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_object)
        {
            for (k, v) in map {
                out.insert(vec!["metadata".into(), key.into(), k.clone()], v.clone());
            }
        }
    }
    for key in ["spec", "status"] {
        if let Some(v) = obj.get(key) {
            out.insert(vec![key.into()], v.clone());
        }
    }
    out
}

/// `fieldsV1` (`{"f:metadata": {"f:labels": {"f:x": {}}}, "f:spec": {}}`) as a set of paths.
fn owned(fields_v1: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = v.as_object() else { return };
        if map.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, child) in map {
            if let Some(name) = k.strip_prefix("f:") {
                prefix.push(name.to_string());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(fields_v1, &mut Vec::new(), &mut out);
    out
}

fn fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for segment in path {
            node = node
                .entry(format!("f:{segment}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Records `manager`'s write of `obj` over `stored` (None on CREATE) in `obj`'s managedFields.
pub fn record_manager(obj: &mut Value, stored: Option<&Value>, manager: &str) {
    let before = leaves(stored);
    let after = leaves(Some(obj));
    let changed: BTreeSet<Path> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .cloned()
        .collect();

    let previous: Vec<Value> = stored
        .and_then(|s| s.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entries: Vec<(Value, BTreeSet<Path>)> = previous
        .into_iter()
        .map(|e| {
            let set = owned(&e["fieldsV1"]);
            (e, set)
        })
        .collect();
    let mine = entries
        .iter()
        .position(|(e, _)| e["manager"] == manager && e["operation"] == "Update");
    for (i, (_, set)) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            set.retain(|p| !changed.contains(p));
        }
    }
    let gained: BTreeSet<Path> = changed
        .iter()
        .filter(|p| after.contains_key(*p))
        .cloned()
        .collect();
    let entry = |set: &BTreeSet<Path>| {
        json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": "argoproj.io/v1alpha1",
            "time": super::time::now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(set),
        })
    };
    match mine {
        Some(i) => {
            let set: BTreeSet<Path> = entries[i]
                .1
                .iter()
                .filter(|p| after.contains_key(*p))
                .chain(&gained)
                .cloned()
                .collect();
            entries[i] = (entry(&set), set);
        }
        None if !gained.is_empty() => entries.push((entry(&gained), gained)),
        None => {}
    }
    let kept: Vec<Value> = entries
        .into_iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|(mut e, set)| {
            e["fieldsV1"] = fields_v1(&set);
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if kept.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(kept));
        }
    }
}
