//! Skipping a JSON value without building it, accepting exactly what serde_json accepts when it ignores
//! a value (strict numbers, literals and escapes; skipped strings are not checked for UTF-8, nesting has
//! no depth limit). About 1.3x faster than serde_json's own skipping, which dominated the cost of a
//! review: one function call per token instead of several.
//!
//! UTF-8 is checked once for the whole body before the walk (`request::decode`): std's check runs word
//! by word over ASCII text and costs less than tracking it here string by string (measured:
//! BENCHMARKS.md, "Which decoder").

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub struct SkipError {
    at: usize,
    what: &'static str,
}

impl fmt::Display for SkipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for SkipError {}

#[cold]
fn err<T>(at: usize, what: &'static str) -> Result<T, SkipError> {
    Err(SkipError { at, what })
}

#[inline(always)]
pub(crate) fn whitespace(b: &[u8], mut i: usize) -> usize {
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
pub(crate) fn string(b: &[u8], mut i: usize) -> Result<usize, SkipError> {
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
pub(crate) fn value(b: &[u8], i: usize) -> Result<usize, SkipError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The skipper accepts a document exactly when serde_json does, and ends where the value ends.
    pub(crate) fn skip_agrees(doc: &[u8]) -> Result<(), String> {
        let serde_ok = serde_json::from_slice::<serde::de::IgnoredAny>(doc).is_ok();
        let ours = value(doc, 0).map(|end| whitespace(doc, end) == doc.len());
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
            // UTF-8 is not the skipper's job (`request::decode` checks the whole body first): text of
            // every kind, valid or not, is skipped as serde_json skips it.
            b"\"h\xc3\xa9llo w\xc3\xb6rld, long enough to span words \xf0\x9f\x98\x80\"",
            b"[\"ok\", \"a\xc3\"]",
            b"[\"0123456789abcdef\xc3\", 1]",
            b"{\"k\xe9y\":1}",
            b"\"\xed\xa0\x80\"",
            b"\"\xc0\xaf\"",
            b"\"abcdefg\x80\"",
            b"\"ab\\\"\xff\"",
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
}
