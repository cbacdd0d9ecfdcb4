//! Argo Workflows as dynamic objects, and what the rules read of them (`core::audit::Stored`).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use kube::{Api, Client};
use std::collections::BTreeMap;

use crate::core::Policy;
use crate::core::audit::Stored;

/// `argoproj.io/v1alpha1` `Workflow`, plural `workflows`.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

/// Workflows in one namespace, or in all of them (`None`).
pub fn api(client: Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    }
}

/// What the rules read of a stored Workflow.
pub fn stored(policy: &Policy, w: &DynamicObject) -> Stored {
    stored_from_meta(policy, &w.metadata)
}

/// What the rules read of a stored Workflow's metadata (all they read: the monitor watches metadata
/// only).
pub fn stored_from_meta(policy: &Policy, meta: &ObjectMeta) -> Stored {
    Stored {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        labels: meta
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        history: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(&policy.history.annotation))
            .cloned(),
        created: meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| humantime::parse_rfc3339(&t.0.to_string()).ok()),
    }
}

/// The merge patch that moves a Workflow to `stage`: conditional on `resource_version`, the version
/// just read (the API server answers 409 Conflict if the Workflow changed since), and with `reason`
/// in the override annotation for a forced change. The history is the mutating webhook's to write.
pub fn stage_patch(
    policy: &Policy,
    stage: &str,
    reason: Option<&str>,
    resource_version: &str,
) -> serde_json::Value {
    let mut metadata = serde_json::json!({
        "resourceVersion": resource_version,
        "labels": { policy.label.as_str(): stage },
    });
    if let Some(reason) = reason {
        metadata["annotations"] =
            serde_json::json!({ policy.override_.annotation.as_str(): reason });
    }
    serde_json::json!({ "metadata": metadata })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stage_patch_is_conditional_and_carries_the_reason_in_the_override_annotation() {
        let p = Policy::from_yaml(
            "label: stage\nstages: [a, b]\noverride:\n  annotation: example.com/why\n",
        )
        .unwrap();
        assert_eq!(
            stage_patch(&p, "b", None, "42"),
            json!({"metadata": {"resourceVersion": "42", "labels": {"stage": "b"}}})
        );
        assert_eq!(
            stage_patch(&p, "a", Some("QA re-run"), "43"),
            json!({"metadata": {"resourceVersion": "43", "labels": {"stage": "a"},
                                "annotations": {"example.com/why": "QA re-run"}}})
        );
    }
}
