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
