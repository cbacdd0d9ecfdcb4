//! The stage-history annotation (SPEC 4.3): a compact JSON array of entries, oldest first.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One recorded stage change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `None` for "no label"; serialised as `null`, never left out.
    #[serde(deserialize_with = "present")]
    pub from: Option<String>,
    #[serde(deserialize_with = "present")]
    pub to: Option<String>,
    /// RFC 3339, UTC, `Z` suffix.
    pub at: String,
    /// `request.userInfo.username` of the write that made the change.
    pub by: String,
    /// The reason of a forced change; absent on ordinary ones.
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub override_: Option<String>,
}

/// `from` and `to` must be present (a string or `null`); a missing key means the entry is not ours.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

impl Entry {
    pub fn new(from: Option<&str>, to: Option<&str>, by: &str, at: SystemTime) -> Entry {
        Entry {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            at: timestamp(at),
            by: by.to_owned(),
            override_: None,
        }
    }

    /// The entry records this change by this requester (the time and override reason aside).
    pub fn records(&self, from: Option<&str>, to: Option<&str>, by: &str) -> bool {
        self.from.as_deref() == from && self.to.as_deref() == to && self.by == by
    }
}

/// RFC 3339 UTC to the second, as stamped into `at`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Why a stored history does not parse.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON array of stage-history entries: {0}")]
pub struct HistoryError(String);

/// Parses an annotation value. Anything but an array of well-formed entries is an error.
pub fn parse(raw: &str) -> Result<Vec<Entry>, HistoryError> {
    let entries: Vec<Entry> = serde_json::from_str(raw).map_err(|e| HistoryError(e.to_string()))?;
    if let Some(bad) = entries
        .iter()
        .find(|e| humantime::parse_rfc3339(&e.at).is_err())
    {
        return Err(HistoryError(format!(
            "`at` {:?} is not an RFC 3339 UTC time",
            bad.at
        )));
    }
    Ok(entries)
}

/// Compact JSON, as stored in the annotation.
pub fn render(entries: &[Entry]) -> String {
    // Serialising plain strings and options cannot fail.
    serde_json::to_string(entries).unwrap_or_else(|_| String::from("[]"))
}

/// The entries of `base` that stay when one more is appended under `limit`: the newest `limit - 1`.
fn kept_before_append(base: &[Entry], limit: usize) -> &[Entry] {
    let keep = base.len().min(limit.saturating_sub(1));
    &base[base.len() - keep..]
}

/// `base` plus `entry`, keeping the newest `limit` entries.
pub fn append(base: &[Entry], entry: Entry, limit: usize) -> Vec<Entry> {
    let mut out = kept_before_append(base, limit).to_vec();
    out.push(entry);
    out
}

/// The history an appended entry builds on: the stored entries, or a fresh start when the stored
/// history is absent or does not parse.
pub fn base_of(stored: Option<&str>) -> Vec<Entry> {
    stored.and_then(|raw| parse(raw).ok()).unwrap_or_default()
}

/// How long the history says a Workflow has been at `stage` at `now`: since its last entry, when that
/// entry moved it to `stage`. `None` when the history is absent or does not parse, when it ends at
/// another stage (the label moved without the webhook), or when its time is after `now`.
pub fn time_at(stored: Option<&str>, stage: &str, now: SystemTime) -> Option<Duration> {
    let entries = parse(stored?).ok()?;
    let last = entries.last()?;
    if last.to.as_deref() != Some(stage) {
        return None;
    }
    let at = humantime::parse_rfc3339(&last.at).ok()?;
    now.duration_since(at).ok()
}

/// How the incoming history relates to the stored one, as the validating webhook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryWrite {
    /// The annotation is exactly as stored (both absent included).
    Unchanged,
    /// The stored history plus one entry for this change by this requester, trimmed to the limit:
    /// stage-guard's own append.
    Appended(Entry),
    /// Anything else.
    Tampered,
}

/// Classifies the incoming history value against the stored one for the change `from -> to` by `by`.
pub fn classify(
    stored: Option<&str>,
    incoming: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    limit: usize,
    moved: bool,
) -> HistoryWrite {
    if stored == incoming {
        return HistoryWrite::Unchanged;
    }
    // Only a stage change, or a forced move into another pipeline (`moved`), earns an entry.
    if from == to && !moved {
        return HistoryWrite::Tampered;
    }
    match appended_entry(stored, incoming, from, to, by, limit) {
        Some(entry) => HistoryWrite::Appended(entry),
        None => HistoryWrite::Tampered,
    }
}

/// When `incoming` is `stored` (or a fresh start) plus one entry recording `from -> to` by `by`, that entry.
pub fn appended_entry(
    stored: Option<&str>,
    incoming: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    limit: usize,
) -> Option<Entry> {
    let mut new = parse(incoming?).ok()?;
    let last = new.pop()?;
    if !last.records(from, to, by) {
        return None;
    }
    let base = base_of(stored);
    (new.as_slice() == kept_before_append(&base, limit)).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn time_at_a_stage_runs_from_the_last_entry_that_moved_there() {
        let entries = [
            Entry::new(None, Some("a"), "bob", at(1_000)),
            Entry::new(Some("a"), Some("b"), "bob", at(1_600)),
        ];
        let stored = render(&entries);
        let now = at(2_000);
        assert_eq!(
            time_at(Some(&stored), "b", now),
            Some(Duration::from_secs(400))
        );
        // The label says otherwise than the history's end: no time known.
        assert_eq!(time_at(Some(&stored), "a", now), None);
        assert_eq!(time_at(None, "b", now), None);
        assert_eq!(time_at(Some("{not json"), "b", now), None);
        assert_eq!(time_at(Some("[]"), "b", now), None);
        // A clock behind the entry's time.
        assert_eq!(time_at(Some(&stored), "b", at(1_500)), None);
    }

    #[test]
    fn renders_compact_json_with_null_from_and_no_empty_override() {
        let e = Entry::new(None, Some("waiting-pr-created"), "alice", at(1_795_685_000));
        assert_eq!(
            render(&[e]),
            r#"[{"from":null,"to":"waiting-pr-created","at":"2026-11-26T09:23:20Z","by":"alice"}]"#
        );
    }

    #[test]
    fn parses_what_it_renders_and_the_spec_example() {
        let spec = r#"[{"from":null,"to":"waiting-pr-created","at":"2026-11-26T09:22:46Z","by":"system:serviceaccount:argo:argo-workflow"},
 {"from":"waiting-pr-created","to":"waiting-ready-for-qa","at":"2026-11-26T10:01:12Z","by":"alice","override":"QA re-run"}]"#;
        let entries = parse(spec).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].override_.as_deref(), Some("QA re-run"));
        assert_eq!(parse(&render(&entries)).unwrap(), entries);
        // sub-second precision is accepted too
        assert!(
            parse(r#"[{"from":null,"to":"a","at":"2026-11-26T09:22:46.123Z","by":"x"}]"#).is_ok()
        );
    }

    #[test]
    fn refuses_what_is_not_an_array_of_entries() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"["x"]"#,
            r#"[{"to":"a","at":"2026-11-26T09:22:46Z","by":"x"}]"#,
            r#"[{"from":null,"to":"a","at":"yesterday","by":"x"}]"#,
            r#"[{"from":null,"to":"a","at":"2026-11-26T09:22:46Z","by":"x","extra":1}]"#,
            r#"[{"from":null,"to":"a","at":"2026-11-26T09:22:46Z"}]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn append_trims_the_oldest_entries() {
        let base: Vec<Entry> = (0..5)
            .map(|i| Entry::new(None, Some("a"), &format!("u{i}"), at(i)))
            .collect();
        let out = append(&base, Entry::new(Some("a"), Some("b"), "z", at(9)), 3);
        assert_eq!(
            out.iter().map(|e| e.by.as_str()).collect::<Vec<_>>(),
            ["u3", "u4", "z"]
        );
        let out = append(&base, Entry::new(Some("a"), Some("b"), "z", at(9)), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(
            append(&[], Entry::new(None, Some("a"), "z", at(0)), 50).len(),
            1
        );
    }

    #[test]
    fn classify_recognises_only_the_own_append() {
        let stored = render(&[Entry::new(None, Some("a"), "ci", at(1))]);
        let good = render(&append(
            &parse(&stored).unwrap(),
            Entry::new(Some("a"), Some("b"), "bob", at(2)),
            50,
        ));
        let s = Some(stored.as_str());
        assert_eq!(
            classify(s, s, Some("a"), Some("b"), "bob", 50, false),
            HistoryWrite::Unchanged
        );
        assert!(matches!(
            classify(s, Some(&good), Some("a"), Some("b"), "bob", 50, false),
            HistoryWrite::Appended(e) if e.to.as_deref() == Some("b")
        ));
        // another requester, another change, no change at all, a dropped history, a rewritten past
        assert_eq!(
            classify(s, Some(&good), Some("a"), Some("b"), "eve", 50, false),
            HistoryWrite::Tampered
        );
        assert_eq!(
            classify(s, Some(&good), Some("a"), Some("c"), "bob", 50, false),
            HistoryWrite::Tampered
        );
        assert_eq!(
            classify(s, Some(&good), Some("a"), Some("a"), "bob", 50, false),
            HistoryWrite::Tampered
        );
        assert_eq!(
            classify(s, None, Some("a"), Some("b"), "bob", 50, false),
            HistoryWrite::Tampered
        );
        let rewritten = render(&[
            Entry::new(None, Some("a"), "mallory", at(1)),
            Entry::new(Some("a"), Some("b"), "bob", at(2)),
        ]);
        assert_eq!(
            classify(s, Some(&rewritten), Some("a"), Some("b"), "bob", 50, false),
            HistoryWrite::Tampered
        );
    }

    #[test]
    fn classify_accepts_a_fresh_start_over_a_corrupt_history_and_trimming() {
        let fresh = render(&[Entry::new(Some("a"), Some("b"), "bob", at(2))]);
        assert!(matches!(
            classify(
                Some("garbage"),
                Some(&fresh),
                Some("a"),
                Some("b"),
                "bob",
                50,
                false
            ),
            HistoryWrite::Appended(_)
        ));
        let full: Vec<Entry> = (0..3)
            .map(|i| Entry::new(None, Some("a"), &format!("u{i}"), at(i)))
            .collect();
        let stored = render(&full);
        let trimmed = render(&append(
            &full,
            Entry::new(Some("a"), Some("b"), "bob", at(5)),
            3,
        ));
        assert!(matches!(
            classify(
                Some(&stored),
                Some(&trimmed),
                Some("a"),
                Some("b"),
                "bob",
                3,
                false
            ),
            HistoryWrite::Appended(_)
        ));
    }
}
