//! The API server's storage: objects by namespace/name, one global resourceVersion counter, and a
//! log of every successful write so tests can inspect each stored version.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    /// The stored resourceVersion moved since the caller read it.
    Conflict,
}

/// One successful write; `object` is `None` for a deletion.
#[derive(Debug, Clone)]
pub struct Write {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub object: Option<Value>,
}

#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<(String, String), Value>,
    last_rv: u64,
    writes: Vec<Write>,
}

impl Inner {
    fn next_rv(&mut self) -> String {
        // etcd revisions are large numbers; starting high keeps them from looking like counters.
        if self.last_rv == 0 {
            self.last_rv = 40_000;
        }
        self.last_rv += 1;
        self.last_rv.to_string()
    }

    fn record(&mut self, ns: &str, name: &str, rv: &str, object: Option<Value>) {
        self.writes.push(Write {
            namespace: ns.to_string(),
            name: name.to_string(),
            resource_version: rv.to_string(),
            object,
        });
    }
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
}

fn set_resource_version(obj: &mut Value, rv: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv));
    }
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the store from the assertions that follow.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&(ns.into(), name.into())).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new object with a fresh resourceVersion.
    pub fn insert_new(&self, ns: &str, name: &str, mut obj: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        let rv = inner.next_rv();
        set_resource_version(&mut obj, &rv);
        inner.objects.insert(key, obj.clone());
        inner.record(ns, name, &rv, Some(obj.clone()));
        Ok(obj)
    }

    /// Replaces the object only if its stored resourceVersion is still `expected_rv` (etcd's
    /// optimistic put); the new object gets a fresh resourceVersion.
    pub fn compare_and_swap(
        &self,
        ns: &str,
        name: &str,
        expected_rv: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let current = inner.objects.get(&key).ok_or(StoreError::NotFound)?;
        if resource_version(current) != Some(expected_rv) {
            return Err(StoreError::Conflict);
        }
        let rv = inner.next_rv();
        set_resource_version(&mut obj, &rv);
        inner.objects.insert(key, obj.clone());
        inner.record(ns, name, &rv, Some(obj.clone()));
        Ok(obj)
    }

    pub fn delete(&self, ns: &str, name: &str, expected_rv: &str) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (ns.to_string(), name.to_string());
        let current = inner.objects.get(&key).ok_or(StoreError::NotFound)?;
        if resource_version(current) != Some(expected_rv) {
            return Err(StoreError::Conflict);
        }
        let removed = inner.objects.remove(&key).ok_or(StoreError::NotFound)?;
        let rv = inner.next_rv();
        inner.record(ns, name, &rv, None);
        Ok(removed)
    }

    /// Writes an object as if it had been stored before the webhook was installed (no admission).
    pub fn seed(&self, mut obj: Value) -> Value {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("argo")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        assert!(!name.is_empty(), "a seeded object needs metadata.name");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!(ns));
            meta.entry("uid")
                .or_insert_with(|| json!(uuid::Uuid::new_v4().to_string()));
            meta.entry("creationTimestamp")
                .or_insert_with(|| json!(super::time::now_rfc3339()));
            meta.entry("generation").or_insert(json!(1));
        }
        let mut inner = self.lock();
        let rv = inner.next_rv();
        set_resource_version(&mut obj, &rv);
        inner
            .objects
            .insert((ns.clone(), name.clone()), obj.clone());
        inner.record(&ns, &name, &rv, Some(obj.clone()));
        obj
    }

    /// Every successful write, oldest first.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// The stored versions of one object, oldest first (deletions left out).
    pub fn versions(&self, ns: &str, name: &str) -> Vec<Value> {
        self.lock()
            .writes
            .iter()
            .filter(|w| w.namespace == ns && w.name == name)
            .filter_map(|w| w.object.clone())
            .collect()
    }
}
