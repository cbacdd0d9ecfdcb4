//! The envelope walk: the members of the review, the request, the objects and their metadata, in
//! document order. Values the decisions use go to serde_json where they stand; the rest is skipped.
//! Errors keep what went wrong where: the skipper's, serde_json's, or the envelope's shape.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::core::Operation;
use serde::Deserialize;

use super::skip::{self, SkipError};

/// Why a body is not a well-formed review envelope.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// Malformed JSON in a skipped value.
    #[error(transparent)]
    Skip(#[from] SkipError),
    /// A value that decisions read did not deserialise.
    #[error("{field}: {source}")]
    Value {
        field: String,
        source: serde_json::Error,
    },
    /// A member name that did not decode.
    #[error("key at byte {at}: {source}")]
    Key {
        at: usize,
        source: serde_json::Error,
    },
    /// The envelope is not shaped like a review (a missing `:`, a duplicate member, ...).
    #[error("{0}")]
    Shape(String),
}

fn shape<T>(message: impl Into<String>) -> Result<T, WalkError> {
    Err(WalkError::Shape(message.into()))
}

/// The parts of a review the decisions read, as [`review`] finds them.
#[derive(Default)]
pub(crate) struct ReviewIn<'a> {
    pub(crate) api_version: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) request: Option<RequestIn<'a>>,
}

#[derive(Default)]
pub(crate) struct RequestIn<'a> {
    pub(crate) uid: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) operation: Option<Operation>,
    pub(crate) user_info: UserInfo,
    pub(crate) object: Option<ObjectIn<'a>>,
    pub(crate) old_object: Option<ObjectIn<'a>>,
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
pub(crate) struct ObjectIn<'a> {
    pub(crate) metadata: Option<MetaIn<'a>>,
}

/// `metadata.labels`: values borrowed from the body where they are plain.
pub(crate) type Labels<'a> = HashMap<Cow<'a, str>, Cow<'a, str>>;
/// `metadata.annotations`: each value's raw JSON text.
pub(crate) type Annotations<'a> = HashMap<Cow<'a, str>, &'a str>;

#[derive(Default)]
pub(crate) struct MetaIn<'a> {
    pub(crate) name: Option<String>,
    pub(crate) generate_name: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) labels: Option<Labels<'a>>,
    /// Annotation values as their raw JSON text (checked by the skipper), decoded when read.
    pub(crate) annotations: Option<Annotations<'a>>,
}

pub(crate) struct Walker<'a> {
    b: &'a [u8],
    i: usize,
}

/// Marks a member as seen; a second one is an error, as serde's derive makes it.
fn once(seen: &mut bool, key: &'static str) -> Result<&'static str, WalkError> {
    if std::mem::replace(seen, true) {
        return shape(format!("duplicate field `{key}`"));
    }
    Ok(key)
}

impl<'a> Walker<'a> {
    /// The next byte after whitespace.
    fn peek(&mut self) -> Option<u8> {
        self.i = skip::whitespace(self.b, self.i);
        self.b.get(self.i).copied()
    }

    fn skip(&mut self) -> Result<(), WalkError> {
        self.i = skip::value(self.b, self.i)?;
        Ok(())
    }

    /// Deserialises the next value where it stands.
    fn leaf<T: Deserialize<'a>>(&mut self, field: &str) -> Result<T, WalkError> {
        let start = skip::whitespace(self.b, self.i);
        let rest = self.b.get(start..).unwrap_or_default();
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        match values.next() {
            Some(Ok(v)) => {
                self.i = start + values.byte_offset();
                Ok(v)
            }
            Some(Err(source)) => Err(WalkError::Value {
                field: field.to_owned(),
                source,
            }),
            None => shape(format!("EOF while parsing {field}")),
        }
    }

    /// A string value where it stands, when it is plain (no escapes, valid UTF-8): borrowed after one
    /// scan. `None` (nothing consumed) for anything else, which [`Walker::leaf`] then decodes or refuses
    /// as serde_json does. Most values a review carries are plain, and a serde_json deserializer per
    /// value cost more than the scan (see BENCHMARKS.md, "Where the time goes").
    fn plain_str(&mut self) -> Result<Option<&'a str>, WalkError> {
        if self.peek() != Some(b'"') {
            return Ok(None);
        }
        let end = skip::string(self.b, self.i + 1)?;
        let raw = self.b.get(self.i + 1..end - 1).unwrap_or_default();
        if raw.contains(&b'\\') {
            return Ok(None);
        }
        match std::str::from_utf8(raw) {
            Ok(s) => {
                self.i = end;
                Ok(Some(s))
            }
            Err(_) => Ok(None),
        }
    }

    /// An optional string member (`null` is `None`).
    fn string(&mut self, field: &str) -> Result<Option<String>, WalkError> {
        match self.plain_str()? {
            Some(s) => Ok(Some(s.to_owned())),
            None => self.leaf(field),
        }
    }

    /// A map of strings (`labels`), values borrowed where they are plain; `null` is `None`. A repeated
    /// key keeps its last value, as serde_json's map does.
    fn string_map(&mut self, field: &str) -> Result<Option<Labels<'a>>, WalkError> {
        let mut map = HashMap::new();
        let present = self.object(field, |w, key| {
            let value = match w.plain_str()? {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(w.leaf::<String>(field)?),
            };
            map.insert(key_str(key)?, value);
            Ok(())
        })?;
        Ok(present.map(|()| map))
    }

    /// A map of raw JSON values (`annotations`): each value checked by the skipper and kept as text.
    fn raw_map(&mut self, field: &str) -> Result<Option<Annotations<'a>>, WalkError> {
        let mut map = HashMap::new();
        let present = self.object(field, |w, key| {
            let start = skip::whitespace(w.b, w.i);
            w.skip()?;
            let raw = w.b.get(start..w.i).unwrap_or_default();
            let raw = std::str::from_utf8(raw)
                .map_err(|e| WalkError::Shape(format!("{field}: value at byte {start}: {e}")))?;
            map.insert(key_str(key)?, raw);
            Ok(())
        })?;
        Ok(present.map(|()| map))
    }

    /// A member name, as bytes. Escapes and non-ASCII names go through serde_json, which decoded and
    /// checked every name on these levels before.
    fn key(&mut self) -> Result<Cow<'a, [u8]>, WalkError> {
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return shape(format!("key must be a string at byte {}", self.i)),
            None => return shape("EOF while parsing an object"),
        }
        let start = self.i;
        let end = skip::string(self.b, start + 1)?;
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
            .map_err(|source| WalkError::Key { at: start, source })
    }

    /// Walks an object, `member` consuming each value; `null` is `None` (an absent optional struct).
    fn object(
        &mut self,
        what: &str,
        mut member: impl FnMut(&mut Walker<'a>, Cow<'a, [u8]>) -> Result<(), WalkError>,
    ) -> Result<Option<()>, WalkError> {
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
                return shape(format!(
                    "invalid type at byte {at}: {what} must be an object"
                ));
            }
            None => return shape(format!("EOF while parsing {what}")),
        }
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Some(()));
        }
        loop {
            let key = self.key()?;
            match self.peek() {
                Some(b':') => self.i += 1,
                Some(_) => return shape(format!("expected `:` at byte {}", self.i)),
                None => return shape(format!("EOF while parsing {what}")),
            }
            member(self, key)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Some(()));
                }
                Some(_) => return shape(format!("expected `,` or `}}` at byte {}", self.i)),
                None => return shape(format!("EOF while parsing {what}")),
            }
        }
    }
}

/// A member name as text: [`Walker::key`] hands out borrowed ASCII or a decoded (so valid) string.
fn key_str(key: Cow<'_, [u8]>) -> Result<Cow<'_, str>, WalkError> {
    match key {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|e| WalkError::Shape(format!("key: {e}"))),
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|e| WalkError::Shape(format!("key: {e}"))),
    }
}

pub(crate) fn review(body: &[u8]) -> Result<ReviewIn<'_>, WalkError> {
    let mut w = Walker { b: body, i: 0 };
    let mut r = ReviewIn::default();
    let mut seen = [false; 3];
    let present = w.object("the review", |w, key| {
        match &*key {
            b"apiVersion" => {
                let key = once(&mut seen[0], "apiVersion")?;
                r.api_version = w.string(key)?;
            }
            b"kind" => {
                let key = once(&mut seen[1], "kind")?;
                r.kind = w.string(key)?;
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
        return shape("the review is null");
    }
    if w.peek().is_some() {
        return shape(format!("trailing characters at byte {}", w.i));
    }
    Ok(r)
}

fn request<'a>(w: &mut Walker<'a>) -> Result<Option<RequestIn<'a>>, WalkError> {
    let mut r = RequestIn::default();
    let mut seen = [false; 7];
    let present = w.object("request", |w, key| {
        match &*key {
            b"uid" => {
                let key = once(&mut seen[0], "uid")?;
                r.uid = w.string(key)?;
            }
            b"name" => {
                let key = once(&mut seen[1], "name")?;
                r.name = w.string(key)?;
            }
            b"namespace" => {
                let key = once(&mut seen[2], "namespace")?;
                r.namespace = w.string(key)?;
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

fn object<'a>(w: &mut Walker<'a>, what: &str) -> Result<Option<ObjectIn<'a>>, WalkError> {
    let mut o = ObjectIn::default();
    let mut seen = false;
    let present = w.object(what, |w, key| {
        if &*key == b"metadata" {
            once(&mut seen, "metadata")?;
            o.metadata = metadata(w)?;
        } else {
            w.skip()?;
        }
        Ok(())
    })?;
    Ok(present.map(|()| o))
}

fn metadata<'a>(w: &mut Walker<'a>) -> Result<Option<MetaIn<'a>>, WalkError> {
    let mut m = MetaIn::default();
    let mut seen = [false; 5];
    let present = w.object("metadata", |w, key| {
        match &*key {
            b"name" => {
                let key = once(&mut seen[0], "name")?;
                m.name = w.string(key)?;
            }
            b"generateName" => {
                let key = once(&mut seen[1], "generateName")?;
                m.generate_name = w.string(key)?;
            }
            b"resourceVersion" => {
                let key = once(&mut seen[2], "resourceVersion")?;
                m.resource_version = w.string(key)?;
            }
            b"labels" => {
                let key = once(&mut seen[3], "labels")?;
                m.labels = w.string_map(key)?;
            }
            b"annotations" => {
                let key = once(&mut seen[4], "annotations")?;
                m.annotations = w.raw_map(key)?;
            }
            _ => w.skip()?,
        }
        Ok(())
    })?;
    Ok(present.map(|()| m))
}
