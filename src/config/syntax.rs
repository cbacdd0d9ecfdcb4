//! The YAML parser's errors as one line each: where (line and column, apart), what, and for a
//! misspelt key or value the word that was probably meant. The parser's own text carries a
//! multi-line snippet, a `<input>` file name and hints about its options; none of that belongs in
//! a configuration error.

use serde_saphyr::Error;

use crate::suggest;

/// Line and column (when known) and the one-line message of a parse error.
pub(crate) fn describe(error: &Error) -> (Option<(u64, u64)>, String) {
    let error = error.without_snippet();
    let at = error
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line(), l.column()));
    let message = match error {
        Error::SerdeUnknownField {
            field, expected, ..
        } => unknown_key(field, expected),
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => unknown_value(variant, expected),
        Error::DuplicateMappingKey { key: Some(key), .. } => format!("duplicate key {key:?}"),
        Error::DuplicateMappingKey { key: None, .. } => "duplicate key".to_owned(),
        Error::MultipleDocuments { .. } => {
            "more than one YAML document; a configuration is a single document".to_owned()
        }
        other => plain(other, at),
    };
    (at, message)
}

/// The section a set of expected keys belongs to, as a prefix of the key's path.
fn section(expected: &[&str]) -> &'static str {
    if expected.contains(&"stages") {
        ""
    } else if expected.contains(&"limit") {
        "history."
    } else if expected.contains(&"users") {
        "override."
    } else {
        ""
    }
}

fn unknown_key(field: &str, expected: &[&str]) -> String {
    let prefix = section(expected);
    match suggest::closest(field, expected.iter().copied()) {
        Some(near) => format!("unknown key \"{prefix}{field}\"; did you mean \"{prefix}{near}\"?"),
        None => format!(
            "unknown key \"{prefix}{field}\" (expected one of: {})",
            expected.join(", ")
        ),
    }
}

/// An unknown `mode` or `resubmit` value.
fn unknown_value(value: &str, expected: &[&str]) -> String {
    let key = if expected.contains(&"enforce") {
        "mode: "
    } else if expected.contains(&"reset") {
        "resubmit: "
    } else {
        ""
    };
    let choices = expected.join(" or ");
    match suggest::closest(value, expected.iter().copied()) {
        Some(near) => format!("{key}unknown value {value:?}; did you mean {near:?}? ({choices})"),
        None => format!("{key}unknown value {value:?} (expected {choices})"),
    }
}

/// Any other error in the parser's words, without its own `at line L, column C`.
fn plain(error: &Error, at: Option<(u64, u64)>) -> String {
    let text = error.to_string();
    let text = text.lines().next().unwrap_or_default();
    let text = match at {
        Some((line, column)) => text
            .strip_suffix(&format!(" at line {line}, column {column}"))
            .unwrap_or(text),
        None => text,
    };
    text.to_owned()
}
