//! The Workflows, kept current by a watch: kube's watcher (list, then watch, relist when the API
//! server has forgotten the resource version, with backoff on errors) feeding a reflector's store.
//! Only metadata is requested (the monitor reads labels, the history annotation and the creation
//! time), and the store keeps of each Workflow only what the census reads (a [`Stored`] with the
//! labels pipelines select by), so 10,000 Workflows stay a few MiB.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::{Scope, Shared};
use crate::cluster::workflows;
use crate::core::Policy;
use crate::core::audit::Stored;

/// A Workflow as the watch delivers it: metadata only.
type Meta = PartialObjectMeta<DynamicObject>;

/// A Workflow as the store keeps it: what the census reads, nothing else.
#[derive(Debug, Clone)]
pub struct Watched(pub Stored);

/// The store's key is namespace and name; the resource is always Argo's Workflow, so the key needs
/// no type information of its own (a dynamic resource's would be five strings per Workflow).
impl Lookup for Watched {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        "Workflow".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "argoproj.io".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "workflows".into()
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.0.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.0.namespace))
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// What a stored Workflow keeps: the stage label, the labels pipelines select by, the history
/// annotation and the creation time.
#[derive(Debug, Clone)]
pub struct Lean {
    policy: Policy,
    labels: BTreeSet<String>,
}

impl Lean {
    pub fn new(policy: &Policy) -> Lean {
        let mut labels = BTreeSet::from([policy.label.clone()]);
        for pipeline in &policy.pipelines {
            labels.extend(pipeline.selector.labels.iter().map(|(key, _)| key.clone()));
        }
        Lean {
            policy: policy.clone(),
            labels,
        }
    }

    pub fn watched(&self, w: &Meta) -> Watched {
        let mut stored = workflows::stored_from_meta(&self.policy, &w.metadata);
        stored.labels.retain(|key, _| self.labels.contains(key));
        Watched(stored)
    }

    /// The event with each Workflow made lean.
    fn event(&self, event: Event<Meta>) -> Event<Watched> {
        match event {
            Event::Apply(w) => Event::Apply(self.watched(&w)),
            Event::Delete(w) => Event::Delete(self.watched(&w)),
            Event::Init => Event::Init,
            Event::InitApply(w) => Event::InitApply(self.watched(&w)),
            Event::InitDone => Event::InitDone,
        }
    }
}

/// Whether storing `new` over `old` changes what the census reads: a new Workflow, or other (kept)
/// labels or history. The Argo controller's status writes change neither, so they wait for the timer.
pub fn changes_census(old: Option<&Watched>, new: &Watched) -> bool {
    old.is_none_or(|old| old.0.labels != new.0.labels || old.0.history != new.0.history)
}

/// The Workflows of the scope, metadata only.
pub fn api(client: Client, scope: &Scope) -> Api<Meta> {
    let resource = workflows::resource();
    match scope {
        Scope::All => Api::all_with(client, &resource),
        Scope::Namespace(ns) => Api::namespaced_with(client, ns, &resource),
    }
}

/// A store and its writer for [`watch`].
pub fn store() -> (Store<Watched>, Writer<Watched>) {
    let writer = Writer::new(());
    (writer.as_reader(), writer)
}

/// Keeps the store current until the task is stopped, telling `shared` how the watch goes and when
/// something the census reads has changed.
pub async fn watch(api: Api<Meta>, writer: Writer<Watched>, shared: Arc<Shared>) {
    let reader = writer.as_reader();
    let lean = Lean::new(&shared.policy);
    // Set while an event passes on its way to the store (the store still holds the old Workflow),
    // read once the reflector has applied it.
    let dirty = Arc::new(AtomicBool::new(false));
    let events = {
        let (reader, dirty) = (reader.clone(), dirty.clone());
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| {
                let event = event.map(|e| lean.event(e));
                let changed = match &event {
                    Ok(Event::Apply(w)) => {
                        changes_census(reader.get(&ObjectRef::from_obj(w)).as_deref(), w)
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
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Meta {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        Meta {
            types: None,
            metadata: ObjectMeta {
                name: Some("w".into()),
                namespace: Some("argo".into()),
                uid: Some("u-1".into()),
                resource_version: Some("7".into()),
                labels: map(labels),
                annotations: map(annotations),
                finalizers: Some(vec!["f".into()]),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    fn lean() -> Lean {
        Lean::new(
            &Policy::from_yaml(
                "stages: [a, b]\npipelines:\n  - name: qa\n    match: {labels: {tmpl: qa}}\n    stages: [x]\n",
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_watched_workflow_keeps_what_the_rules_read_and_nothing_else() {
        let w = lean().watched(&meta(
            &[
                ("current-stage", "a"),
                ("tmpl", "qa"),
                ("workflows.argoproj.io/phase", "Running"),
            ],
            &[
                ("stage-guard.io/history", "[]"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{…}"),
            ],
        ));
        assert_eq!(
            w.0.labels.keys().collect::<Vec<_>>(),
            ["current-stage", "tmpl"]
        );
        assert_eq!(w.0.history.as_deref(), Some("[]"));
        assert_eq!((w.0.namespace.as_str(), w.0.name.as_str()), ("argo", "w"));
        let key = ObjectRef::from_obj(&w);
        assert_eq!(
            (key.name.as_str(), key.namespace.as_deref()),
            ("w", Some("argo"))
        );
    }

    #[test]
    fn only_a_new_workflow_or_changed_labels_or_history_change_the_census() {
        let lean = lean();
        let at_a = lean.watched(&meta(&[("current-stage", "a")], &[]));
        let mut status_write = meta(
            &[
                ("current-stage", "a"),
                ("workflows.argoproj.io/phase", "Succeeded"),
            ],
            &[],
        );
        status_write.metadata.resource_version = Some("8".into());
        assert!(!changes_census(Some(&at_a), &lean.watched(&status_write)));
        assert!(changes_census(None, &at_a));
        let at_b = lean.watched(&meta(&[("current-stage", "b")], &[]));
        assert!(changes_census(Some(&at_a), &at_b));
        let stamped = lean.watched(&meta(
            &[("current-stage", "a")],
            &[("stage-guard.io/history", "[]")],
        ));
        assert!(changes_census(Some(&at_a), &stamped));
    }
}
