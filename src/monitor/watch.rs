//! The Workflows' metadata, kept current by a watch: kube's watcher (list, then watch, relist when
//! the API server has forgotten the resource version, with backoff on errors) feeding a reflector's
//! store. Only metadata is requested (the monitor reads labels, the history annotation and the
//! creation time), and each object is stripped further before it is stored, so the store of 10,000
//! Workflows stays a few MiB.

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Api, Client};

use super::{Scope, Shared};
use crate::cluster::workflows;
use crate::core::Policy;

/// A Workflow as the monitor stores it: metadata only.
pub type Workflow = PartialObjectMeta<DynamicObject>;

/// What a stored Workflow keeps: the stage label, the labels pipelines select by, and the history
/// annotation; every other label and annotation, managed fields, owners and finalizers go.
#[derive(Debug, Clone)]
pub struct Lean {
    labels: BTreeSet<String>,
    history: String,
}

impl Lean {
    pub fn new(policy: &Policy) -> Lean {
        let mut labels = BTreeSet::from([policy.label.clone()]);
        for pipeline in &policy.pipelines {
            labels.extend(pipeline.selector.labels.iter().map(|(key, _)| key.clone()));
        }
        Lean {
            labels,
            history: policy.history.annotation.clone(),
        }
    }

    pub fn strip(&self, w: &mut Workflow) {
        let meta = std::mem::take(&mut w.metadata);
        let labels = meta
            .labels
            .map(|all| {
                all.into_iter()
                    .filter(|(key, _)| self.labels.contains(key))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .filter(|kept| !kept.is_empty());
        let annotations = meta
            .annotations
            .and_then(|mut all| all.remove(&self.history))
            .map(|history| std::collections::BTreeMap::from([(self.history.clone(), history)]));
        w.types = None;
        w.metadata = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            creation_timestamp: meta.creation_timestamp,
            labels,
            annotations,
            ..ObjectMeta::default()
        };
    }
}

/// Whether storing `new` over `old` changes what the census reads: a new Workflow, or other (kept)
/// labels or history. The Argo controller's status writes change neither, so they wait for the timer.
pub fn changes_census(old: Option<&Workflow>, new: &Workflow) -> bool {
    old.is_none_or(|old| {
        old.metadata.labels != new.metadata.labels
            || old.metadata.annotations != new.metadata.annotations
    })
}

/// The Workflows of the scope, metadata only.
pub fn api(client: Client, scope: &Scope) -> Api<Workflow> {
    let resource = workflows::resource();
    match scope {
        Scope::All => Api::all_with(client, &resource),
        Scope::Namespace(ns) => Api::namespaced_with(client, ns, &resource),
    }
}

/// A store and its writer for [`watch`].
pub fn store() -> (Store<Workflow>, Writer<Workflow>) {
    let writer = Writer::new(workflows::resource());
    (writer.as_reader(), writer)
}

/// Keeps the store current until the task is stopped, telling `shared` how the watch goes and when
/// something the census reads has changed.
pub async fn watch(api: Api<Workflow>, writer: Writer<Workflow>, shared: Arc<Shared>) {
    let reader = writer.as_reader();
    let lean = Lean::new(&shared.policy);
    let resource: ApiResource = workflows::resource();
    // Set while an event passes on its way to the store (the store still holds the old object), read
    // once the reflector has applied it.
    let dirty = Arc::new(AtomicBool::new(false));
    let events = {
        let (reader, dirty) = (reader.clone(), dirty.clone());
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |w| lean.strip(w))
            .map(move |event| {
                let changed = match &event {
                    Ok(Event::Apply(w)) => {
                        let key = ObjectRef::from_obj_with(w, resource.clone());
                        changes_census(reader.get(&key).as_deref(), w)
                    }
                    Ok(Event::Delete(_) | Event::InitDone) => true,
                    Ok(Event::Init | Event::InitApply(_)) | Err(_) => false,
                };
                if changed {
                    dirty.store(true, Ordering::SeqCst);
                }
                event
            })
    };
    let started = Instant::now();
    let mut events = pin!(reflector::reflector(writer, events));
    while let Some(event) = events.next().await {
        let now = Instant::now();
        match event {
            Ok(event) => {
                let list_done = matches!(event, Event::InitDone);
                let first = list_done && !shared.health().listed();
                shared.health().event(now, list_done);
                if first {
                    tracing::info!(
                        workflows = reader.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Workflows listed; watching for changes"
                    );
                }
            }
            Err(e) => {
                shared.health().error(now);
                tracing::warn!(error = %e, "watching Workflows failed; retrying with backoff");
            }
        }
        if dirty.swap(false, Ordering::SeqCst) {
            shared.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn workflow(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Workflow {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        Workflow {
            types: None,
            metadata: ObjectMeta {
                name: Some("w".into()),
                namespace: Some("argo".into()),
                uid: Some("u-1".into()),
                resource_version: Some("7".into()),
                labels: map(labels),
                annotations: map(annotations),
                finalizers: Some(vec!["f".into()]),
                generate_name: Some("w-".into()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn a_lean_workflow_keeps_what_the_rules_read_and_nothing_else() {
        let policy = Policy::from_yaml(
            "stages: [a, b]\npipelines:\n  - name: qa\n    match: {labels: {tmpl: qa}}\n    stages: [x]\n",
        )
        .unwrap();
        let mut w = workflow(
            &[
                ("current-stage", "a"),
                ("tmpl", "qa"),
                ("workflows.argoproj.io/phase", "Running"),
            ],
            &[
                ("stage-guard.io/history", "[]"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{…}"),
            ],
        );
        Lean::new(&policy).strip(&mut w);
        let m = &w.metadata;
        assert_eq!(
            m.labels.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["current-stage", "tmpl"]
        );
        assert_eq!(
            m.annotations.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["stage-guard.io/history"]
        );
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
            (Some("w"), Some("argo"), Some("u-1"))
        );
        assert_eq!(m.resource_version.as_deref(), Some("7"));
        assert!(m.finalizers.is_none() && m.generate_name.is_none());
        // Nothing kept: no empty maps either.
        let mut bare = workflow(&[("other", "x")], &[("other", "y")]);
        Lean::new(&policy).strip(&mut bare);
        assert!(bare.metadata.labels.is_none() && bare.metadata.annotations.is_none());
    }

    #[test]
    fn only_a_new_workflow_or_changed_labels_or_history_change_the_census() {
        let at_a = workflow(&[("current-stage", "a")], &[]);
        let mut status_write = at_a.clone();
        status_write.metadata.resource_version = Some("8".into());
        assert!(!changes_census(Some(&at_a), &status_write));
        assert!(changes_census(None, &at_a));
        let at_b = workflow(&[("current-stage", "b")], &[]);
        assert!(changes_census(Some(&at_a), &at_b));
        let stamped = workflow(
            &[("current-stage", "a")],
            &[("stage-guard.io/history", "[]")],
        );
        assert!(changes_census(Some(&at_a), &stamped));
    }
}
