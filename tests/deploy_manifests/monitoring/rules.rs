//! The PrometheusRules' groups: reading them, and what every alert must have and pass.

use super::*;

pub(super) fn rules_of(groups: &Value) -> Vec<&Value> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

pub(super) fn alert_names(groups: &Value) -> Vec<String> {
    rules_of(groups)
        .iter()
        .map(|r| str_at(r, "/alert").to_string())
        .collect()
}

/// The PrometheusRule of that name in `docs`, as the `groups` a rule file holds.
pub(super) fn rule_groups(docs: &[Value], name: &str) -> Value {
    let rule = find(docs, "PrometheusRule", name);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    rule["spec"].clone()
}

/// `groups` with one alert changed by `edit`.
pub(super) fn with_alert_edited(groups: &Value, alert: &str, edit: impl Fn(&mut Value)) -> Value {
    let mut groups = groups.clone();
    for group in groups["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            if rule["alert"] == alert {
                edit(rule);
            }
        }
    }
    groups
}

pub(super) fn rule_exprs(groups: &Value) -> Vec<(String, String)> {
    rules_of(groups)
        .iter()
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            (name.to_string(), str_at(r, "/expr").to_string())
        })
        .collect()
}

/// The anchors GitHub gives the README's headings: lower case, spaces to `-`, other punctuation
/// dropped.
pub(super) fn readme_anchors() -> BTreeSet<String> {
    let text = fs::read_to_string(repo().join("README.md")).unwrap();
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let anchor: String = heading
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

/// Each alert: `for:` longer than zero, a severity, a summary and description, and a runbook_url
/// `<base>#<alert in lower case>` whose anchor is a README heading.
pub(super) fn check_alert_fields(label: &str, groups: &Value, runbook_base: &str) {
    let anchors = readme_anchors();
    for rule in rules_of(groups) {
        let alert = str_at(rule, "/alert");
        let what = format!("{label}: {alert}");
        let wait = str_at(rule, "/for");
        assert!(
            !wait.is_empty()
                && wait
                    .trim_start_matches('0')
                    .chars()
                    .any(|c| c.is_ascii_digit()),
            "{what}: for: {wait}"
        );
        assert!(
            ["critical", "warning"].contains(&str_at(rule, "/labels/severity")),
            "{what}: severity"
        );
        let annotations = rule["annotations"].as_object().unwrap();
        let keys: BTreeSet<&str> = annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["summary", "description", "runbook_url"]),
            "{what}"
        );
        for key in ["summary", "description"] {
            let text = str_at(rule, &format!("/annotations/{key}"));
            assert!(
                !text.trim().is_empty() && !text.contains('\n'),
                "{what}: {key} is one line: {text:?}"
            );
        }
        let runbook = str_at(rule, "/annotations/runbook_url");
        let anchor = alert.to_lowercase();
        assert_eq!(runbook, format!("{runbook_base}#{anchor}"), "{what}");
        assert!(
            anchors.contains(&anchor),
            "{what}: README.md has no section {anchor:?}"
        );
    }
}

/// The rules pass promtool's unit tests with these jobs, and fail them when any one alert never
/// fires or fires without waiting for its `for:`: every alert is tested where it must fire and
/// where it must not yet.
pub(super) fn check_unit_tests(label: &str, fixture: &str, groups: &Value, jobs: &Jobs) {
    unit_test(fixture, groups, jobs)
        .unwrap_or_else(|e| panic!("{label}: promtool test rules ({fixture}) failed:\n{e}"));
    for alert in alert_names(groups) {
        let never = with_alert_edited(groups, &alert, |rule| {
            rule["expr"] = json!("vector(1) == 0");
        });
        assert!(
            unit_test(fixture, &never, jobs).is_err(),
            "{label}: the unit tests pass with {alert} never firing"
        );
        let at_once = with_alert_edited(groups, &alert, |rule| {
            rule["for"] = json!("0s");
        });
        assert!(
            unit_test(fixture, &at_once, jobs).is_err(),
            "{label}: the unit tests pass with {alert} firing without its for:"
        );
    }
}

/// The job the rules select with `job="…"`: one value for all of them.
pub(super) fn selected_job(groups: &Value) -> String {
    let jobs: BTreeSet<String> = rule_exprs(groups)
        .iter()
        .flat_map(|(_, expr)| {
            expr.split("job=\"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one job for all rules: {jobs:?}");
    jobs.into_iter().next().unwrap()
}

/// The latency alert's threshold, in seconds.
pub(super) fn slow_threshold(groups: &Value) -> f64 {
    let rule = rules_of(groups)
        .into_iter()
        .find(|r| r["alert"] == "StageGuardWebhookSlow")
        .expect("StageGuardWebhookSlow");
    let expr = str_at(rule, "/expr");
    let (_, threshold) = expr.rsplit_once(" > ").unwrap();
    threshold.trim().parse().unwrap()
}

/// The README's table of alerts: (alert, severity, for) per row.
pub(super) fn readme_alert_table() -> BTreeSet<(String, String, String)> {
    let text = fs::read_to_string(repo().join("README.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `StageGuard"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "README alert row: {l}");
            (
                cells[0].trim_matches('`').to_string(),
                cells[1].to_string(),
                cells[3].to_string(),
            )
        })
        .collect()
}

/// (alert, severity, for) of every alert in `groups`.
pub(super) fn alert_table(groups: &[&Value]) -> BTreeSet<(String, String, String)> {
    groups
        .iter()
        .flat_map(|g| rules_of(g))
        .map(|r| {
            (
                str_at(r, "/alert").to_string(),
                str_at(r, "/labels/severity").to_string(),
                str_at(r, "/for").to_string(),
            )
        })
        .collect()
}
