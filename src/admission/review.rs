//! AdmissionReview v1 on the wire (SPEC 5, apiserver-contract.md 1 and 2).
//!
//! Workflows reach 1 MiB and the Argo controller rewrites them constantly, so the request is decoded
//! lazily: of `object` and `oldObject` only `metadata` is read, `spec` and `status` are skipped without
//! building a value tree, and annotation values stay borrowed raw JSON until one is needed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use kube::core::Status;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview this webhook can answer (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadReview(pub String);

#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(rename = "apiVersion", borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: Option<Operation>,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(borrow)]
    object: Option<ObjectIn<'a>>,
    #[serde(borrow)]
    old_object: Option<ObjectIn<'a>>,
}

/// `request.userInfo`: who is writing.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Deserialize)]
struct ObjectIn<'a> {
    #[serde(borrow)]
    metadata: Option<MetaIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn<'a> {
    name: Option<String>,
    generate_name: Option<String>,
    resource_version: Option<String>,
    #[serde(borrow)]
    labels: Option<HashMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(borrow)]
    annotations: Option<HashMap<Cow<'a, str>, &'a RawValue>>,
}

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
    annotations: HashMap<Cow<'a, str>, &'a RawValue>,
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
        let raw = *self.annotations.get(key)?;
        Some(match serde_json::from_str::<Cow<'a, str>>(raw.get()) {
            Ok(s) => s,
            Err(_) => Cow::Borrowed(raw.get()),
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
    let review: ReviewIn<'_> = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("body is not an AdmissionReview: {e}")))?;
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(BadReview(format!(
                "apiVersion must be {API_VERSION}, got {:?}",
                crate::verdict::show(other)
            )));
        }
        None => {
            return Err(BadReview(format!(
                "apiVersion is missing (want {API_VERSION})"
            )));
        }
    }
    if review.kind.as_deref() != Some(KIND) {
        return Err(BadReview(format!("kind must be {KIND}")));
    }
    let req = review
        .request
        .ok_or_else(|| BadReview("request is missing".into()))?;
    let uid = req
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| BadReview("request.uid is missing".into()))?;
    let operation = req
        .operation
        .ok_or_else(|| BadReview("request.operation is missing".into()))?;
    let object = Meta::from_object(req.object);
    let old_object = Meta::from_object(req.old_object);
    match operation {
        Operation::Create | Operation::Update if !object.present => {
            return Err(BadReview(format!(
                "request.object is missing for {operation:?}"
            )));
        }
        Operation::Update if !old_object.present => {
            return Err(BadReview("request.oldObject is missing for Update".into()));
        }
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

/// An AdmissionReview v1 response.
#[derive(Debug, Serialize)]
pub struct ReviewOut {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    pub response: ResponseOut,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of a JSON Patch, as Go's `[]byte` expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ResponseOut {
    pub fn allow(uid: &str) -> ResponseOut {
        ResponseOut {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            audit_annotations: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// A denial the API server shows as `Error from server (Forbidden): admission webhook ... denied the request: <message>`.
    pub fn deny(uid: &str, message: String) -> ResponseOut {
        let mut status = Status::failure(&message, "Forbidden");
        status.code = 403;
        ResponseOut {
            allowed: false,
            status: Some(status),
            ..ResponseOut::allow(uid)
        }
    }

    /// Adds a JSON Patch; an empty patch adds nothing (no `patch`, no `patchType`).
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> ResponseOut {
        if !patch.0.is_empty() {
            // Serialising a Patch of strings and maps cannot fail.
            let bytes = serde_json::to_vec(patch).unwrap_or_default();
            self.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            self.patch_type = Some("JSONPatch");
        }
        self
    }

    pub fn into_review(self) -> ReviewOut {
        ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let e = decode(b.as_bytes()).expect_err(&b).0;
            assert!(e.contains(want), "{b}: {e:?} should contain {want:?}");
        }
        assert!(decode(&[0xff, 0xfe, b'{']).is_err());
    }

    #[test]
    fn responses_have_the_envelope_and_patch_rules() {
        let allow = serde_json::to_value(ResponseOut::allow("u").into_review()).unwrap();
        assert_eq!(allow["apiVersion"], API_VERSION);
        assert_eq!(allow["kind"], KIND);
        assert_eq!(allow["response"]["uid"], "u");
        assert_eq!(allow["response"]["allowed"], true);
        assert!(
            allow["response"].get("patch").is_none()
                && allow["response"].get("patchType").is_none()
        );

        let empty = ResponseOut::allow("u").with_patch(&json_patch::Patch(vec![]));
        assert!(empty.patch.is_none() && empty.patch_type.is_none());

        let deny = serde_json::to_value(ResponseOut::deny("u", "no".into()).into_review()).unwrap();
        assert_eq!(deny["response"]["allowed"], false);
        assert_eq!(deny["response"]["status"]["code"], 403);
        assert_eq!(deny["response"]["status"]["reason"], "Forbidden");
        assert_eq!(deny["response"]["status"]["message"], "no");
    }
}
