//! The reference decoder for the differential check: serde's derive over the review envelope, reading a
//! `&str` (so UTF-8 is checked everywhere), then the same checks `request::decode` makes on a
//! well-formed envelope. Written here from SPEC 5 and apiserver-contract.md 1, not shared with the
//! decoder it judges.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use stage_guard::core::Operation;

#[derive(Deserialize)]
struct Review<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: Option<Operation>,
    #[serde(default)]
    user_info: User,
    #[serde(borrow)]
    object: Option<Object<'a>>,
    #[serde(borrow)]
    old_object: Option<Object<'a>>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow)]
    metadata: Option<Meta<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    name: Option<String>,
    generate_name: Option<String>,
    resource_version: Option<String>,
    #[serde(borrow)]
    labels: Option<std::collections::HashMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    annotations: Option<std::collections::HashMap<Cow<'a, str>, &'a RawValue>>,
}

/// What the reference decoder read off one object.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ObjectSeen {
    pub present: bool,
    pub has_metadata: bool,
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub resource_version: Option<String>,
    pub has_labels: bool,
    pub has_annotations: bool,
    pub labels: BTreeMap<String, String>,
    /// Each value as `Meta::annotation` reads it: the string, or the raw JSON of a non-string.
    pub annotations: BTreeMap<String, String>,
}

/// What the reference decoder read off a review it accepts.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub uid: String,
    pub operation: Operation,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub username: String,
    pub groups: Vec<String>,
    pub object: ObjectSeen,
    pub old_object: ObjectSeen,
}

fn object(o: Option<Object<'_>>) -> ObjectSeen {
    let Some(o) = o else {
        return ObjectSeen::default();
    };
    let Some(m) = o.metadata else {
        return ObjectSeen {
            present: true,
            ..ObjectSeen::default()
        };
    };
    ObjectSeen {
        present: true,
        has_metadata: true,
        name: m.name,
        generate_name: m.generate_name,
        resource_version: m.resource_version,
        has_labels: m.labels.is_some(),
        has_annotations: m.annotations.is_some(),
        labels: m
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        annotations: m
            .annotations
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let text =
                    serde_json::from_str::<String>(v.get()).unwrap_or_else(|_| v.get().to_owned());
                (k.into_owned(), text)
            })
            .collect(),
    }
}

/// Reads a body the way the decoder must: `Ok` exactly when it must answer it.
pub fn review(body: &[u8]) -> Result<Seen, String> {
    let other = |e: &dyn std::fmt::Display| e.to_string();
    let text = std::str::from_utf8(body).map_err(|e| other(&e))?;
    let r: Review<'_> = serde_json::from_str(text).map_err(|e| other(&e))?;
    if r.api_version.as_deref() != Some("admission.k8s.io/v1") {
        return Err(other(&"apiVersion"));
    }
    if r.kind.as_deref() != Some("AdmissionReview") {
        return Err(other(&"kind"));
    }
    let q = r.request.ok_or_else(|| other(&"no request"))?;
    let uid = q
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| other(&"no uid"))?;
    let operation = q.operation.ok_or_else(|| other(&"no operation"))?;
    let (object, old_object) = (object(q.object), object(q.old_object));
    let needs_object = matches!(operation, Operation::Create | Operation::Update);
    if needs_object && !object.present {
        return Err(other(&"no object"));
    }
    if operation == Operation::Update && !old_object.present {
        return Err(other(&"no oldObject"));
    }
    Ok(Seen {
        uid,
        operation,
        namespace: q.namespace,
        name: q.name,
        username: q.user_info.username,
        groups: q.user_info.groups,
        object,
        old_object,
    })
}
