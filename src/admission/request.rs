//! The AdmissionReview v1 request (SPEC 5, apiserver-contract.md 1): what a review must hold to be
//! answered, and the parts of it the decisions read.
//!
//! Workflows reach 1 MiB and the Argo controller rewrites them constantly, so the request is decoded
//! lazily: [`super::walk`] follows the envelope (review → request → object/oldObject → metadata), hands
//! the few values the decisions use to serde_json in place, and skips everything else (`spec`, `status`,
//! `managedFields`, …) with [`super::skip`], which checks the JSON without building anything. Annotation
//! values stay borrowed raw JSON until one is needed.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::core::Operation;

use super::walk;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview this webhook can answer (HTTP 400), one variant per check.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("body is not an AdmissionReview: {0}")]
    NotAReview(#[from] WalkError),
    #[error("body is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("apiVersion must be {API_VERSION}, got {:?}", crate::core::show(.0))]
    ApiVersion(String),
    #[error("apiVersion is missing (want {API_VERSION})")]
    NoApiVersion,
    #[error("kind must be {KIND}")]
    Kind,
    #[error("request is missing")]
    NoRequest,
    #[error("request.uid is missing")]
    NoUid,
    #[error("request.operation is missing")]
    NoOperation,
    #[error("request.object is missing for {0:?}")]
    NoObject(Operation),
    #[error("request.oldObject is missing for Update")]
    NoOldObject,
    /// Offline only: the file is not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
}

pub use super::walk::UserInfo;
use super::walk::{ObjectIn, ReviewIn, WalkError};

/// The metadata of `object` or `oldObject` that decisions use.
#[derive(Debug, Default)]
pub struct Meta<'a> {
    pub present: bool,
    pub has_metadata: bool,
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub resource_version: Option<String>,
    pub has_labels: bool,
    pub has_annotations: bool,
    labels: HashMap<Cow<'a, str>, Cow<'a, str>>,
    /// Raw JSON text of each value, decoded when read.
    annotations: HashMap<Cow<'a, str>, &'a str>,
}

impl<'a> Meta<'a> {
    fn from_object(obj: Option<ObjectIn<'a>>) -> Meta<'a> {
        let Some(obj) = obj else {
            return Meta::default();
        };
        let Some(m) = obj.metadata else {
            return Meta {
                present: true,
                ..Meta::default()
            };
        };
        Meta {
            present: true,
            has_metadata: true,
            name: m.name,
            generate_name: m.generate_name,
            resource_version: m.resource_version,
            has_labels: m.labels.is_some(),
            has_annotations: m.annotations.is_some(),
            labels: m.labels.unwrap_or_default(),
            annotations: m.annotations.unwrap_or_default(),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(|v| v.as_ref())
    }

    /// An annotation's value. A value that is not a JSON string (the API server never stores one) is
    /// read as its raw JSON text, so it still counts as present and different.
    pub fn annotation(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw: &'a str = self.annotations.get(key)?;
        // A plain string borrows; one with escapes is decoded.
        if let Some(plain) = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|r| !r.contains('\\'))
        {
            return Some(Cow::Borrowed(plain));
        }
        Some(match serde_json::from_str::<String>(raw) {
            Ok(s) => Cow::Owned(s),
            Err(_) => Cow::Borrowed(raw),
        })
    }
}

/// One decoded admission request: what the decisions need, nothing more.
#[derive(Debug)]
pub struct Request<'a> {
    pub uid: String,
    pub operation: Operation,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub user: UserInfo,
    pub object: Meta<'a>,
    pub old_object: Meta<'a>,
}

impl Request<'_> {
    /// `namespace/name` for messages; a CREATE with generateName has no name yet at the mutating webhook.
    pub fn workflow(&self) -> String {
        let name = self
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| self.object.name.clone().filter(|n| !n.is_empty()))
            .or_else(|| self.old_object.name.clone().filter(|n| !n.is_empty()))
            .or_else(|| {
                self.object
                    .generate_name
                    .as_ref()
                    .map(|g| format!("{g}(generated)"))
            })
            .unwrap_or_else(|| "(unnamed)".to_owned());
        match self.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        }
    }
}

/// Decodes an AdmissionReview v1 request body.
pub fn decode(body: &[u8]) -> Result<Request<'_>, BadReview> {
    // SPEC 5: malformed anywhere is a 400, also in the parts the walker skips without reading them.
    std::str::from_utf8(body).map_err(BadReview::NotUtf8)?;
    checked(walk::review(body)?)
}

/// The checks on a well-formed review: version, kind, and the members every answer needs.
pub(crate) fn checked(review: ReviewIn<'_>) -> Result<Request<'_>, BadReview> {
    match review.api_version {
        Some(v) if v == API_VERSION => {}
        Some(other) => return Err(BadReview::ApiVersion(other)),
        None => return Err(BadReview::NoApiVersion),
    }
    if review.kind.as_deref() != Some(KIND) {
        return Err(BadReview::Kind);
    }
    let req = review.request.ok_or(BadReview::NoRequest)?;
    let uid = req.uid.filter(|u| !u.is_empty()).ok_or(BadReview::NoUid)?;
    let operation = req.operation.ok_or(BadReview::NoOperation)?;
    let object = Meta::from_object(req.object);
    let old_object = Meta::from_object(req.old_object);
    match operation {
        Operation::Create | Operation::Update if !object.present => {
            return Err(BadReview::NoObject(operation));
        }
        Operation::Update if !old_object.present => return Err(BadReview::NoOldObject),
        _ => {}
    }
    Ok(Request {
        uid,
        operation,
        namespace: req.namespace,
        name: req.name,
        user: req.user_info,
        object,
        old_object,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admission::skip::tests::skip_agrees;

    /// The decoder this module had before the walker: serde's derive over the whole body. Kept as the
    /// oracle the walker must agree with.
    mod oracle {
        use super::super::walk::{MetaIn, ObjectIn, RequestIn, ReviewIn, UserInfo};
        use crate::core::Operation;
        use serde::Deserialize;
        use serde_json::value::RawValue;
        use std::borrow::Cow;
        use std::collections::HashMap;

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
            user_info: UserInfo,
            #[serde(borrow)]
            object: Option<Object<'a>>,
            #[serde(borrow)]
            old_object: Option<Object<'a>>,
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
            labels: Option<HashMap<Cow<'a, str>, Cow<'a, str>>>,
            #[serde(borrow)]
            annotations: Option<HashMap<Cow<'a, str>, &'a RawValue>>,
        }

        fn object(o: Option<Object<'_>>) -> Option<ObjectIn<'_>> {
            o.map(|o| ObjectIn {
                metadata: o.metadata.map(|m| MetaIn {
                    name: m.name,
                    generate_name: m.generate_name,
                    resource_version: m.resource_version,
                    labels: m.labels,
                    annotations: m
                        .annotations
                        .map(|a| a.into_iter().map(|(k, v)| (k, v.get())).collect()),
                }),
            })
        }

        pub fn review(body: &[u8]) -> Result<ReviewIn<'_>, String> {
            // serde_json reads a `&str`: UTF-8 is checked everywhere, as the walker does.
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            let r: Review<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            Ok(ReviewIn {
                api_version: r.api_version.map(Cow::into_owned),
                kind: r.kind.map(Cow::into_owned),
                request: r.request.map(|q| RequestIn {
                    uid: q.uid,
                    name: q.name,
                    namespace: q.namespace,
                    operation: q.operation,
                    user_info: q.user_info,
                    object: object(q.object),
                    old_object: object(q.old_object),
                }),
            })
        }
    }

    /// Everything a decision can read off a decoded request, comparable.
    fn summary(r: &Request<'_>) -> String {
        let meta = |m: &Meta<'_>| {
            let labels: BTreeMap<_, _> = m.labels.iter().collect();
            let annotations: BTreeMap<_, _> = m.annotations.iter().map(|(k, v)| (k, *v)).collect();
            format!(
                "{} {} {:?} {:?} {:?} {} {} {labels:?} {annotations:?}",
                m.present,
                m.has_metadata,
                m.name,
                m.generate_name,
                m.resource_version,
                m.has_labels,
                m.has_annotations
            )
        };
        format!(
            "{} {:?} {:?} {:?} {} {:?} | {} | {}",
            r.uid,
            r.operation,
            r.namespace,
            r.name,
            r.user.username,
            r.user.groups,
            meta(&r.object),
            meta(&r.old_object)
        )
    }

    /// Both decoders on one body: the same verdict (Ok or a 400), and on Ok the same request.
    fn agree(body: &[u8]) -> Result<(), String> {
        let new = decode(body);
        let old = oracle::review(body)
            .map_err(|e| BadReview::NotAReview(WalkError::Shape(e)))
            .and_then(checked);
        match (&new, &old) {
            (Ok(n), Ok(o)) if summary(n) == summary(o) => Ok(()),
            (Err(_), Err(_)) => Ok(()),
            // serde's derive also reads a struct from a JSON array of its fields in order; the walker
            // refuses that form, which no API server sends.
            (Err(e), Ok(_)) if e.to_string().contains("must be an object") => Ok(()),
            _ => Err(format!(
                "{}\nnew: {:?}\nold: {:?}",
                String::from_utf8_lossy(body),
                new.map(|r| summary(&r)),
                old.map(|r| summary(&r))
            )),
        }
    }

    #[test]
    fn walker_reads_what_serde_derive_read() {
        let cases = [
            body(r#"{"uid":"u","operation":"UPDATE","object":{"metadata":null},"oldObject":null}"#),
            body(r#"{"uid":"u","operation":"UPDATE","object":{"metadata":{"labels":null,"annotations":{}}},"oldObject":{}}"#),
            body(r#"{"uid":"u","uid":"v","operation":"CREATE","object":{}}"#),
            body(r#"{"\u0075id":"u","operation":"CREATE","object":{"metadata":{"na\u006de":"x"}}}"#),
            body(r#"{"uid":"u","operation":"CREATE","object":{"metadata":{"name":"x","name":"y"}}}"#),
            body(r#"{"uid":"u","operation":"CREATE","userInfo":null,"object":{}}"#),
            body(r#"{"uid":"u","operation":"CREATE","object":{"spec":{"x":[1,2,{"y":"\ud800"}]},"metadata":{}}}"#),
            body(r#"{"uid":"u","operation":"CREATE","object":{"metadata":{"annotations":{"a":{"not":"a string"}}}}}"#),
            body(r#"{"uid":"u","operation":"CREATE","object":"x"}"#),
            body(r#"{"uid":"u","operation":"CREATE","object":{}} "#) + " x",
            body(r#"{"uid":7,"operation":"CREATE","object":{}}"#),
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":null}"#.to_owned(),
            "null".to_owned(),
            "[]".to_owned(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{}},"apiVersion":"x"}"#.to_owned(),
        ];
        for b in cases {
            agree(b.as_bytes()).unwrap();
        }
        assert!(decode(body(r#"{"uid":"u","operation":"CREATE","object":{}}"#).as_bytes()).is_ok());
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                (-1e9f64..1e9).prop_map(Value::from),
                "[a-z\"\\\\/é\\n\\t\\u{1}-]{0,12}".prop_map(Value::String),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(4, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map("[a-zA-Z]{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn workflow() -> impl Strategy<Value = Value> {
            let labels = prop::collection::btree_map("[a-z./-]{1,12}", "[a-z0-9.-]{0,12}", 0..4);
            let annotations =
                prop::collection::btree_map("[a-z./-]{1,12}", "[a-z0-9\"\\[\\]{}:,]{0,20}", 0..4);
            (labels, annotations, value(), value(), any::<bool>()).prop_map(|(l, a, spec, status, with_meta)| {
                let mut o = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "spec": spec, "status": status});
                if with_meta {
                    o["metadata"] = json!({"name": "wf", "resourceVersion": "5", "labels": l, "annotations": a,
                        "managedFields": [{"manager": "argo", "fieldsV1": {"f:metadata": {}}}]});
                }
                o
            })
        }

        fn review() -> impl Strategy<Value = Vec<u8>> {
            let op = prop_oneof![
                Just("CREATE"),
                Just("UPDATE"),
                Just("DELETE"),
                Just("PATCH")
            ];
            (op, workflow(), workflow(), any::<bool>()).prop_map(|(op, object, old, pretty)| {
                let r = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
                    "request": {"uid": "u-1", "kind": {"group": "argoproj.io"}, "namespace": "argo", "operation": op,
                        "userInfo": {"username": "bob", "groups": ["g"], "extra": {"x": ["y"]}},
                        "object": object, "oldObject": old, "dryRun": false}});
                if pretty { serde_json::to_vec_pretty(&r) } else { serde_json::to_vec(&r) }.unwrap_or_default()
            })
        }

        /// Byte edits that tend to break JSON in interesting places.
        fn mutated(doc: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
            let alphabet: &'static [u8] =
                b"{}[]:,\"\\ \n0-1.eE+tnfula\x01\x7f\xc3\xa9u\xff\x80\xed";
            let edit = (
                any::<prop::sample::Index>(),
                0..3u8,
                prop::sample::select(alphabet),
            );
            (doc, prop::collection::vec(edit, 0..4)).prop_map(|(mut d, edits)| {
                for (at, kind, byte) in edits {
                    if d.is_empty() {
                        break;
                    }
                    let i = at.index(d.len());
                    match kind {
                        0 => d[i] = byte,
                        1 => d.insert(i, byte),
                        _ => {
                            d.remove(i);
                        }
                    }
                }
                d
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn skipping_agrees_with_serde_json(doc in mutated(value().prop_map(|v| v.to_string().into_bytes()))) {
                prop_assert!(skip_agrees(&doc).is_ok(), "{}", skip_agrees(&doc).unwrap_err());
            }

            #[test]
            fn decoding_agrees_with_the_serde_derive_decoder(doc in mutated(review())) {
                prop_assert!(agree(&doc).is_ok(), "{}", agree(&doc).unwrap_err());
            }
        }
    }

    fn body(request: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#
        )
    }

    #[test]
    fn decodes_metadata_and_skips_the_rest() {
        let b = body(
            r#"{"uid":"u1","kind":{"group":"argoproj.io","version":"v1alpha1","kind":"Workflow"},"namespace":"argo",
            "operation":"UPDATE","userInfo":{"username":"alice","groups":["g"],"extra":{"k":["v"]}},"dryRun":false,
            "options":{"kind":"UpdateOptions","apiVersion":"meta.k8s.io/v1"},
            "object":{"apiVersion":"argoproj.io/v1alpha1","kind":"Workflow","metadata":{"name":"wf","resourceVersion":"7",
              "labels":{"current-stage":"a"},"annotations":{"stage-guard.io/history":"[{\"x\":1}]","big":"\u00e9"}},
              "spec":{"templates":[{"name":"t"}]},"status":{"nodes":{"n":{"phase":"Running"}}}},
            "oldObject":{"metadata":{"name":"wf","resourceVersion":"7"}}}"#,
        );
        let r = decode(b.as_bytes()).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.operation, Operation::Update);
        assert_eq!(r.user.username, "alice");
        assert_eq!(r.object.label("current-stage"), Some("a"));
        assert_eq!(
            r.object.annotation("stage-guard.io/history").as_deref(),
            Some(r#"[{"x":1}]"#)
        );
        assert_eq!(r.object.annotation("big").as_deref(), Some("é"));
        assert!(r.old_object.present && !r.old_object.has_labels);
        assert_eq!(r.workflow(), "argo/wf");
    }

    #[test]
    fn refuses_what_is_not_a_v1_review() {
        let cases = [
            ("not json".to_owned(), "not an AdmissionReview"),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_owned(),
                "request is missing",
            ),
            (
                body(r#"{"operation":"CREATE","object":{}}"#),
                "request.uid is missing",
            ),
            (
                body(r#"{"uid":"","operation":"CREATE","object":{}}"#),
                "request.uid is missing",
            ),
            (
                body(r#"{"uid":"x","operation":"CREATE","object":{}}"#)
                    .replace("/v1\"", "/v1beta1\""),
                "apiVersion must be admission.k8s.io/v1",
            ),
            (
                body(r#"{"uid":"x","operation":"CREATE"}"#),
                "request.object is missing",
            ),
            (
                body(r#"{"uid":"x","operation":"UPDATE","object":{}}"#),
                "oldObject is missing",
            ),
            (
                body(r#"{"uid":"x","operation":"PATCH","object":{}}"#),
                "not an AdmissionReview",
            ),
            (
                body(
                    r#"{"uid":"x","operation":"CREATE","object":{"metadata":{"labels":{"a":1}}}}"#,
                ),
                "not an AdmissionReview",
            ),
        ];
        for (b, want) in cases {
            let e = decode(b.as_bytes()).expect_err(&b).to_string();
            assert!(e.contains(want), "{b}: {e:?} should contain {want:?}");
        }
        assert!(decode(&[0xff, 0xfe, b'{']).is_err());
    }
}
