//! AdmissionReview v1 on the wire (SPEC 5, apiserver-contract.md 1 and 2).
//!
//! Workflows reach 1 MiB and the Argo controller rewrites them constantly, so the request is decoded
//! lazily: a small walker follows the envelope (review → request → object/oldObject → metadata), hands
//! the few values the decisions use to serde_json in place, and skips everything else (`spec`, `status`,
//! `managedFields`, …) with [`skip`], which checks the JSON without building anything. Annotation values
//! stay borrowed raw JSON until one is needed.

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

/// The parts of a review the decisions read, as found by [`walk::review`].
#[derive(Default)]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RequestIn<'a>>,
}

#[derive(Default)]
struct RequestIn<'a> {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: Option<Operation>,
    user_info: UserInfo,
    object: Option<ObjectIn<'a>>,
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

#[derive(Default)]
struct ObjectIn<'a> {
    metadata: Option<MetaIn<'a>>,
}

#[derive(Default)]
struct MetaIn<'a> {
    name: Option<String>,
    generate_name: Option<String>,
    resource_version: Option<String>,
    labels: Option<HashMap<Cow<'a, str>, Cow<'a, str>>>,
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
    let review = walk::review(body)
        .map_err(|e| BadReview(format!("body is not an AdmissionReview: {e}")))?;
    checked(review)
}

/// The checks on a well-formed review: version, kind, and the members every answer needs.
fn checked(review: ReviewIn<'_>) -> Result<Request<'_>, BadReview> {
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(BadReview(format!(
                "apiVersion must be {API_VERSION}, got {:?}",
                crate::core::show(other)
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

/// The envelope walk: the members of the review, the request, the objects and their metadata, in
/// document order. Values the decisions use go to serde_json where they stand; the rest is skipped.
/// Errors are plain text for [`BadReview`].
mod walk {
    use std::borrow::Cow;

    use serde::Deserialize;

    use super::{MetaIn, ObjectIn, RequestIn, ReviewIn, skip};

    pub(super) struct Walker<'a> {
        b: &'a [u8],
        i: usize,
    }

    /// Marks a member as seen; a second one is an error, as serde's derive makes it.
    fn once(seen: &mut bool, key: &'static str) -> Result<&'static str, String> {
        if std::mem::replace(seen, true) {
            return Err(format!("duplicate field `{key}`"));
        }
        Ok(key)
    }

    impl<'a> Walker<'a> {
        /// The next byte after whitespace.
        fn peek(&mut self) -> Option<u8> {
            self.i = skip::whitespace(self.b, self.i);
            self.b.get(self.i).copied()
        }

        fn skip(&mut self) -> Result<(), String> {
            self.i = skip::value(self.b, self.i).map_err(|e| e.to_string())?;
            Ok(())
        }

        /// Deserialises the next value where it stands.
        fn leaf<T: Deserialize<'a>>(&mut self, field: &str) -> Result<T, String> {
            let start = skip::whitespace(self.b, self.i);
            let rest = self.b.get(start..).unwrap_or_default();
            let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
            match values.next() {
                Some(Ok(v)) => {
                    self.i = start + values.byte_offset();
                    Ok(v)
                }
                Some(Err(e)) => Err(format!("{field}: {e}")),
                None => Err(format!("EOF while parsing {field}")),
            }
        }

        /// A member name, as bytes. Escapes and non-ASCII names go through serde_json, which decoded and
        /// checked every name on these levels before.
        fn key(&mut self) -> Result<Cow<'a, [u8]>, String> {
            match self.peek() {
                Some(b'"') => {}
                Some(_) => return Err(format!("key must be a string at byte {}", self.i)),
                None => return Err("EOF while parsing an object".into()),
            }
            let start = self.i;
            let end = skip::string(self.b, start + 1).map_err(|e| e.to_string())?;
            self.i = end;
            let quoted = self.b.get(start..end).unwrap_or_default();
            let raw = quoted
                .get(1..quoted.len().saturating_sub(1))
                .unwrap_or_default();
            if raw.is_ascii() && !raw.contains(&b'\\') {
                return Ok(Cow::Borrowed(raw));
            }
            serde_json::from_slice::<String>(quoted)
                .map(|k| Cow::Owned(k.into_bytes()))
                .map_err(|e| format!("key at byte {start}: {e}"))
        }

        /// Walks an object, `member` consuming each value; `null` is `None` (an absent optional struct).
        fn object(
            &mut self,
            what: &str,
            mut member: impl FnMut(&mut Walker<'a>, &[u8]) -> Result<(), String>,
        ) -> Result<Option<()>, String> {
            match self.peek() {
                Some(b'{') => self.i += 1,
                Some(b'n') => {
                    self.skip()?;
                    return Ok(None);
                }
                Some(_) => {
                    let at = self.i;
                    // Bad JSON is reported as such before the type.
                    self.skip()?;
                    return Err(format!(
                        "invalid type at byte {at}: {what} must be an object"
                    ));
                }
                None => return Err(format!("EOF while parsing {what}")),
            }
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Some(()));
            }
            loop {
                let key = self.key()?;
                match self.peek() {
                    Some(b':') => self.i += 1,
                    Some(_) => return Err(format!("expected `:` at byte {}", self.i)),
                    None => return Err(format!("EOF while parsing {what}")),
                }
                member(self, &key)?;
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        return Ok(Some(()));
                    }
                    Some(_) => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
                    None => return Err(format!("EOF while parsing {what}")),
                }
            }
        }
    }

    pub(super) fn review(body: &[u8]) -> Result<ReviewIn<'_>, String> {
        let mut w = Walker { b: body, i: 0 };
        let mut r = ReviewIn::default();
        let mut seen = [false; 3];
        let present = w.object("the review", |w, key| {
            match key {
                b"apiVersion" => {
                    let key = once(&mut seen[0], "apiVersion")?;
                    r.api_version = w.leaf(key)?;
                }
                b"kind" => {
                    let key = once(&mut seen[1], "kind")?;
                    r.kind = w.leaf(key)?;
                }
                b"request" => {
                    once(&mut seen[2], "request")?;
                    r.request = request(w)?;
                }
                _ => w.skip()?,
            }
            Ok(())
        })?;
        if present.is_none() {
            return Err("the review is null".into());
        }
        if w.peek().is_some() {
            return Err(format!("trailing characters at byte {}", w.i));
        }
        Ok(r)
    }

    fn request<'a>(w: &mut Walker<'a>) -> Result<Option<RequestIn<'a>>, String> {
        let mut r = RequestIn::default();
        let mut seen = [false; 7];
        let present = w.object("request", |w, key| {
            match key {
                b"uid" => {
                    let key = once(&mut seen[0], "uid")?;
                    r.uid = w.leaf(key)?;
                }
                b"name" => {
                    let key = once(&mut seen[1], "name")?;
                    r.name = w.leaf(key)?;
                }
                b"namespace" => {
                    let key = once(&mut seen[2], "namespace")?;
                    r.namespace = w.leaf(key)?;
                }
                b"operation" => {
                    let key = once(&mut seen[3], "operation")?;
                    r.operation = w.leaf(key)?;
                }
                b"userInfo" => {
                    let key = once(&mut seen[4], "userInfo")?;
                    r.user_info = w.leaf(key)?;
                }
                b"object" => {
                    once(&mut seen[5], "object")?;
                    r.object = object(w, "request.object")?;
                }
                b"oldObject" => {
                    once(&mut seen[6], "oldObject")?;
                    r.old_object = object(w, "request.oldObject")?;
                }
                _ => w.skip()?,
            }
            Ok(())
        })?;
        Ok(present.map(|()| r))
    }

    fn object<'a>(w: &mut Walker<'a>, what: &str) -> Result<Option<ObjectIn<'a>>, String> {
        let mut o = ObjectIn::default();
        let mut seen = false;
        let present = w.object(what, |w, key| {
            if key == b"metadata" {
                once(&mut seen, "metadata")?;
                o.metadata = metadata(w)?;
            } else {
                w.skip()?;
            }
            Ok(())
        })?;
        Ok(present.map(|()| o))
    }

    fn metadata<'a>(w: &mut Walker<'a>) -> Result<Option<MetaIn<'a>>, String> {
        let mut m = MetaIn::default();
        let mut seen = [false; 5];
        let present = w.object("metadata", |w, key| {
            match key {
                b"name" => {
                    let key = once(&mut seen[0], "name")?;
                    m.name = w.leaf(key)?;
                }
                b"generateName" => {
                    let key = once(&mut seen[1], "generateName")?;
                    m.generate_name = w.leaf(key)?;
                }
                b"resourceVersion" => {
                    let key = once(&mut seen[2], "resourceVersion")?;
                    m.resource_version = w.leaf(key)?;
                }
                b"labels" => {
                    let key = once(&mut seen[3], "labels")?;
                    m.labels = w.leaf(key)?;
                }
                b"annotations" => {
                    let key = once(&mut seen[4], "annotations")?;
                    m.annotations = w.leaf(key)?;
                }
                _ => w.skip()?,
            }
            Ok(())
        })?;
        Ok(present.map(|()| m))
    }
}

/// Skipping a JSON value without building it, accepting exactly what serde_json accepts when it ignores
/// a value (strict numbers, literals and escapes; skipped strings are not checked for UTF-8, nesting has
/// no depth limit). About 1.3x faster than serde_json's own skipping, which dominated the cost of a
/// review: one function call per token instead of several.
mod skip {
    use std::fmt;

    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct SkipError {
        at: usize,
        what: &'static str,
    }

    impl fmt::Display for SkipError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} at byte {}", self.what, self.at)
        }
    }

    #[cold]
    fn err<T>(at: usize, what: &'static str) -> Result<T, SkipError> {
        Err(SkipError { at, what })
    }

    #[inline(always)]
    pub(super) fn whitespace(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
            i += 1;
        }
        i
    }

    const ONES: u64 = u64::MAX / 255;

    /// The high bit of every byte of `chunk` that is `"`, `\` or a control character.
    #[inline(always)]
    fn ends_run(chunk: u64) -> u64 {
        let control = chunk.wrapping_sub(ONES * 0x20) & !chunk;
        let q = chunk ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = chunk ^ (ONES * u64::from(b'\\'));
        let backslash = s.wrapping_sub(ONES) & !s;
        (control | quote | backslash) & (ONES << 7)
    }

    /// A string's rest: `i` is just past the opening quote; returns the index just past the closing one.
    #[inline(always)]
    pub(super) fn string(b: &[u8], mut i: usize) -> Result<usize, SkipError> {
        loop {
            // Eight bytes at a time while they hold nothing special.
            if let Some(chunk) = b.get(i..i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let m = ends_run(u64::from_le_bytes(word));
                if m == 0 {
                    i += 8;
                    continue;
                }
                i += (m.trailing_zeros() / 8) as usize;
            } else {
                while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
                    i += 1;
                }
            }
            match b.get(i) {
                Some(b'"') => return Ok(i + 1),
                Some(b'\\') => i = escape(b, i)?,
                Some(_) => {
                    return err(
                        i,
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    );
                }
                None => return err(b.len(), "EOF while parsing a string"),
            }
        }
    }

    #[inline(never)]
    fn escape(b: &[u8], i: usize) -> Result<usize, SkipError> {
        match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
            Some(b'u') => match b.get(i + 2..i + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(i + 6),
                Some(_) => err(i, "invalid escape"),
                None => err(b.len(), "EOF while parsing a string"),
            },
            Some(_) => err(i + 1, "invalid escape"),
            None => err(b.len(), "EOF while parsing a string"),
        }
    }

    #[inline(always)]
    fn digits(b: &[u8], mut i: usize) -> usize {
        while let Some(b'0'..=b'9') = b.get(i) {
            i += 1;
        }
        i
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` starting at `i`.
    fn number(b: &[u8], mut i: usize) -> Result<usize, SkipError> {
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                if let Some(b'0'..=b'9') = b.get(i) {
                    return err(i, "invalid number");
                }
            }
            Some(b'1'..=b'9') => i = digits(b, i + 1),
            _ => return err(i, "invalid number"),
        }
        if b.get(i) == Some(&b'.') {
            let j = digits(b, i + 1);
            if j == i + 1 {
                return err(j, "invalid number");
            }
            i = j;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let j = digits(b, i);
            if j == i {
                return err(i, "invalid number");
            }
            i = j;
        }
        Ok(i)
    }

    fn literal(b: &[u8], i: usize, word: &'static [u8]) -> Result<usize, SkipError> {
        for (k, &c) in word.iter().enumerate() {
            match b.get(i + k) {
                Some(&x) if x == c => {}
                Some(_) => return err(i + k, "expected ident"),
                None => return err(b.len(), "EOF while parsing a value"),
            }
        }
        Ok(i + word.len())
    }

    /// After `{` or `,` in an object: a member name and its colon; returns the index of the value.
    #[inline(always)]
    fn key(b: &[u8], i: usize) -> Result<usize, SkipError> {
        let i = whitespace(b, i);
        let i = match b.get(i) {
            Some(b'"') => string(b, i + 1)?,
            Some(_) => return err(i, "key must be a string"),
            None => return err(i, "EOF while parsing an object"),
        };
        let i = whitespace(b, i);
        match b.get(i) {
            Some(b':') => Ok(whitespace(b, i + 1)),
            Some(_) => err(i, "expected `:`"),
            None => err(i, "EOF while parsing an object"),
        }
    }

    /// Skips the value at `i` (after any whitespace); returns the index just past it.
    pub(super) fn value(b: &[u8], i: usize) -> Result<usize, SkipError> {
        let mut i = whitespace(b, i);
        // The open containers around the current one, one bit each (1 = object), innermost lowest;
        // a full word moves to `spill`, so nesting has no limit.
        let mut bits: u64 = 0;
        let mut spill: Vec<u64> = Vec::new();
        let mut depth: usize = 0;
        let mut in_object = false;
        loop {
            match b.get(i) {
                Some(b'"') => i = string(b, i + 1)?,
                Some(&open @ (b'{' | b'[')) => {
                    let close = if open == b'{' { b'}' } else { b']' };
                    let j = whitespace(b, i + 1);
                    if b.get(j) == Some(&close) {
                        i = j + 1;
                    } else {
                        if depth > 0 && depth.is_multiple_of(64) {
                            spill.push(bits);
                            bits = 0;
                        }
                        bits = (bits << 1) | u64::from(in_object);
                        depth += 1;
                        in_object = open == b'{';
                        i = if in_object { key(b, j)? } else { j };
                        continue;
                    }
                }
                Some(b'-' | b'0'..=b'9') => i = number(b, i)?,
                Some(b't') => i = literal(b, i, b"true")?,
                Some(b'f') => i = literal(b, i, b"false")?,
                Some(b'n') => i = literal(b, i, b"null")?,
                Some(_) => return err(i, "expected value"),
                None => return err(i, "EOF while parsing a value"),
            }
            // A value is complete: close containers until one has a next member.
            loop {
                if depth == 0 {
                    return Ok(i);
                }
                i = whitespace(b, i);
                match b.get(i) {
                    Some(b',') => {
                        i = if in_object {
                            key(b, i + 1)?
                        } else {
                            whitespace(b, i + 1)
                        };
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    Some(_) if in_object => return err(i, "expected `,` or `}`"),
                    Some(_) => return err(i, "expected `,` or `]`"),
                    None if in_object => return err(i, "EOF while parsing an object"),
                    None => return err(i, "EOF while parsing a list"),
                }
                i += 1;
                depth -= 1;
                in_object = bits & 1 == 1;
                bits >>= 1;
                if depth > 0 && depth.is_multiple_of(64) {
                    bits = spill.pop().unwrap_or_default();
                }
            }
        }
    }
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

    /// The decoder this module had before the walker: serde's derive over the whole body. Kept as the
    /// oracle the walker must agree with.
    mod oracle {
        use super::super::{MetaIn, ObjectIn, RequestIn, ReviewIn, UserInfo};
        use kube::core::admission::Operation;
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
                    annotations: m.annotations,
                }),
            })
        }

        pub fn review(body: &[u8]) -> Result<ReviewIn<'_>, String> {
            let r: Review<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
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
            let annotations: BTreeMap<_, _> =
                m.annotations.iter().map(|(k, v)| (k, v.get())).collect();
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
            .map_err(|e| BadReview(format!("body is not an AdmissionReview: {e}")))
            .and_then(checked);
        match (&new, &old) {
            (Ok(n), Ok(o)) if summary(n) == summary(o) => Ok(()),
            (Err(_), Err(_)) => Ok(()),
            // serde's derive also reads a struct from a JSON array of its fields in order; the walker
            // refuses that form, which no API server sends.
            (Err(BadReview(e)), Ok(_)) if e.contains("must be an object") => Ok(()),
            _ => Err(format!(
                "{}\nnew: {:?}\nold: {:?}",
                String::from_utf8_lossy(body),
                new.map(|r| summary(&r)),
                old.map(|r| summary(&r))
            )),
        }
    }

    /// The skipper accepts a document exactly when serde_json does, and ends where the value ends.
    fn skip_agrees(doc: &[u8]) -> Result<(), String> {
        let serde_ok = serde_json::from_slice::<serde::de::IgnoredAny>(doc).is_ok();
        let ours = skip::value(doc, 0).map(|end| skip::whitespace(doc, end) == doc.len());
        if ours.as_ref().is_ok_and(|&whole| whole) == serde_ok {
            Ok(())
        } else {
            Err(format!(
                "{:?}: serde {serde_ok}, skip {ours:?}",
                String::from_utf8_lossy(doc)
            ))
        }
    }

    #[test]
    fn skipping_accepts_exactly_what_serde_json_accepts() {
        let cases: &[&[u8]] = &[
            b"null",
            b"true",
            b"false",
            b"nul",
            b"nulll",
            b"tru",
            b"0",
            b"-0",
            b"01",
            b"-",
            b"1.",
            b"1.5",
            b".5",
            b"1e5",
            b"1E+5",
            b"1e",
            b"1e+",
            b"-1.5e-7",
            b"12345678901234567890123",
            b"\"\"",
            b"\"a",
            b"\"\\u00e9\"",
            b"\"\\u00g9\"",
            b"\"\\x\"",
            b"\"\\/\"",
            b"\"tab\there\"",
            b"\"\xff\xfe\"",
            b"\"\\ud800\"",
            b"[]",
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            b"{}",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{1:2}",
            b"{\"a\":1}}",
            b"[[[[]]]]",
            b" [ 1 , { \"b\" : [ null ] } ] ",
            b"{\"a\":[1,{\"b\":\"c\\\"d\"}],\"e\":-0.0e0}",
            b"",
            b"   ",
            b"]",
            b"\"abcdefghijklmnop\\\"qrstuvwxyz\"",
            b"\"abcdefgh\x01\"",
        ];
        for doc in cases {
            skip_agrees(doc).unwrap();
        }
        // Nesting far past one word of the container stack, and unbalanced at the end.
        let deep = format!("{}{}", "[{\"k\":".repeat(200), "1}]".repeat(200));
        skip_agrees(deep.as_bytes()).unwrap();
        skip_agrees(&deep.as_bytes()[..deep.len() - 1]).unwrap();
        let swapped = format!("{}{}", "[{\"k\":".repeat(70), "1]}".repeat(70));
        skip_agrees(swapped.as_bytes()).unwrap();
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
            let alphabet: &'static [u8] = b"{}[]:,\"\\ \n0-1.eE+tnfula\x01\x7f\xc3\xa9u";
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
