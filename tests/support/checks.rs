//! Assertions shared by the end-to-end tests.

use super::apiserver::ApiError;
use super::fixtures::{HISTORY, STAGE_LABEL};
use super::review::VALIDATING_HOOK;
use super::time::{parse_rfc3339_z, unix_now};
use serde_json::Value;

pub fn name(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub fn rv(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub fn stage(obj: &Value) -> Option<String> {
    label(obj, STAGE_LABEL)
}

pub fn label(obj: &Value, key: &str) -> Option<String> {
    obj.pointer("/metadata/labels")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

pub fn annotation(obj: &Value, key: &str) -> Option<String> {
    obj.pointer("/metadata/annotations")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// The history annotation's raw text.
pub fn history_raw(obj: &Value) -> Option<String> {
    annotation(obj, HISTORY)
}

/// The history entries; panics when the annotation is not a JSON array (the tests that call this
/// expect a well-formed history), empty when there is no annotation.
#[track_caller]
pub fn history(obj: &Value) -> Vec<Value> {
    match history_raw(obj) {
        None => Vec::new(),
        Some(raw) => match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Array(items)) => items,
            _ => panic!("history annotation is not a JSON array: {raw}"),
        },
    }
}

/// An ordinary history entry: exactly `from`, `to`, `at`, `by`, with `at` an RFC 3339 UTC time
/// ending in `Z` close to now.
#[track_caller]
pub fn assert_entry(entry: &Value, from: Option<&str>, to: Option<&str>, by: &str) {
    assert_entry_fields(entry, from, to, by);
    let keys: Vec<&String> = entry
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 4, "entry has extra fields: {entry}");
}

/// A forced-change entry: the ordinary fields plus `override`.
#[track_caller]
pub fn assert_override_entry(
    entry: &Value,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    reason: &str,
) {
    assert_entry_fields(entry, from, to, by);
    assert_eq!(
        entry.get("override").and_then(Value::as_str),
        Some(reason),
        "override in {entry}"
    );
    let keys = entry.as_object().map(|m| m.len()).unwrap_or(0);
    assert_eq!(keys, 5, "entry has extra fields: {entry}");
}

#[track_caller]
fn assert_entry_fields(entry: &Value, from: Option<&str>, to: Option<&str>, by: &str) {
    let opt = |v: Option<&str>| v.map(|s| Value::String(s.into())).unwrap_or(Value::Null);
    assert_eq!(entry.get("from"), Some(&opt(from)), "from in {entry}");
    assert_eq!(entry.get("to"), Some(&opt(to)), "to in {entry}");
    assert_eq!(
        entry.get("by").and_then(Value::as_str),
        Some(by),
        "by in {entry}"
    );
    let at = entry
        .get("at")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no `at` in {entry}"));
    let secs =
        parse_rfc3339_z(at).unwrap_or_else(|| panic!("`at` is not RFC 3339 UTC with Z: {at:?}"));
    let skew = (secs - unix_now()).abs();
    assert!(skew < 3600, "`at` {at} is {skew} s away from now");
}

#[track_caller]
pub fn assert_single_line(text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "not a single line: {text:?}"
    );
}

/// A validating denial as the client sees it: 403 Forbidden with the API server's prefix, a
/// single-line message, and the reason code in the audit annotation `reason`.
#[track_caller]
pub fn assert_denied(err: &ApiError, reason_code: &str) {
    assert_eq!(err.code, 403, "code of {err:?}");
    assert_eq!(err.reason, "Forbidden", "reason of {err:?}");
    let prefix = format!("admission webhook {VALIDATING_HOOK:?} denied the request: ");
    assert!(
        err.message.starts_with(&prefix),
        "message {:?}",
        err.message
    );
    assert!(err.message.len() > prefix.len(), "empty denial message");
    assert_single_line(&err.message);
    assert_eq!(
        err.validating_audit("decision"),
        Some("denied"),
        "audit of {err:?}"
    );
    assert_eq!(
        err.validating_audit("reason"),
        Some(reason_code),
        "audit of {err:?}"
    );
}

/// The `transition` audit value for `O -> N` (`none` for no label).
pub fn transition(from: Option<&str>, to: Option<&str>) -> String {
    format!("{}->{}", from.unwrap_or("none"), to.unwrap_or("none"))
}

// === Prometheus text format ===

/// True when the exposition declares the family (`# TYPE`), under its sample name or, for
/// counters in OpenMetrics style, without the `_total` suffix.
pub fn has_metric_family(text: &str, name: &str) -> bool {
    let base = name.strip_suffix("_total").unwrap_or(name);
    text.lines().any(|l| {
        let mut parts = l.split_whitespace();
        parts.next() == Some("#")
            && parts.next() == Some("TYPE")
            && parts.next().is_some_and(|n| n == name || n == base)
    })
}

/// The sum of the samples named `name` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let found = parse_labels(label_text);
        if labels
            .iter()
            .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
        {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    out
}
