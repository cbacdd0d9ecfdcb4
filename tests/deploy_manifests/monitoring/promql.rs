//! The metric names a PromQL expression selects: enough of PromQL to read them out of valid
//! expressions (promtool checks validity separately).

use std::collections::BTreeSet;

const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Modifiers whose parenthesised list holds label names, not expressions.
const PROMQL_LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the group that starts at `start` (an opening `{`, `[` or `(`), skipping quoted
/// strings inside it.
fn past_group(chars: &[char], start: usize) -> usize {
    let (open, close) = (chars[start], matching(chars[start]));
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = past_string(chars, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced {open} in {}", chars.iter().collect::<String>());
}

fn matching(open: char) -> char {
    match open {
        '{' => '}',
        '[' => ']',
        '(' => ')',
        other => panic!("no group opens with {other}"),
    }
}

/// The index just past the quoted string that starts at `start`.
fn past_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    panic!(
        "unterminated string in {}",
        chars.iter().collect::<String>()
    );
}

/// The metric names a PromQL expression selects. Enough of PromQL for valid expressions (promtool
/// checks that separately): strings, label matchers `{…}`, ranges `[…]` and the label lists of
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` are skipped; of the identifiers left,
/// one followed by `(` is a function, keywords and aggregations are keywords, numbers and durations
/// start with a digit; the rest are metric names.
pub(super) fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = past_string(&chars, i);
        } else if c == '{' || c == '[' {
            i = past_group(&chars, i);
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = next < chars.len() && chars[next] == '(';
            if called && PROMQL_LABEL_LISTS.contains(&word.as_str()) {
                i = past_group(&chars, next);
            } else if !called && !PROMQL_KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |expr: &str| metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (job, webhook) (rate(stage_guard_admission_requests_total{job="x", decision=~"in{va}lid"}[5m])) > 0"#
        ),
        ["stage_guard_admission_requests_total"]
    );
    assert_eq!(
        names(r#"max by (job) (up{job="a"}) == 0 or absent(up{job="a"})"#),
        ["up"]
    );
    assert_eq!(
        names("a_total / on (pod) group_left (node) b_info offset 1d > 7 * 86400"),
        ["a_total", "b_info"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum(rate(h_bucket[5m])) by (le)) > 2.5e-1"),
        ["h_bucket"]
    );
    assert_eq!(
        names(r#"label_replace(m, "dst", "$1", "src", "(.*)") unless on (dst) n"#),
        ["m", "n"]
    );
    assert_eq!(
        names("time() - max(stage_guard_monitor_last_sync_timestamp_seconds)"),
        ["stage_guard_monitor_last_sync_timestamp_seconds"]
    );
}
