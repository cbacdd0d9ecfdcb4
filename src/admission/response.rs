//! The AdmissionReview v1 response (SPEC 5, apiserver-contract 2): the envelope, allow and deny,
//! and the JSON Patch in the form the API server accepts (base64 with `patchType: JSONPatch`).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

use super::request::{API_VERSION, KIND};

/// An AdmissionReview v1 response.
#[derive(Debug, Serialize)]
pub struct ReviewOut {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    pub response: ResponseOut,
}

/// `response.status` of a denial (meta/v1 Status): what the API server turns into the client's error.
#[derive(Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
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
        // 403 Forbidden: any code under 400 would reach the client as 400, and 409 would be read as a
        // conflict to retry (apiserver-contract 2).
        let status = Status {
            status: "Failure",
            code: 403,
            reason: "Forbidden",
            message,
        };
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
