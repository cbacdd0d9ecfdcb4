//! The metrics stage-guard exports, and the check that rules and panels use no other: the lists are
//! held against the webhook's own registry, so a typo in a rule or a panel fails a test.

use super::promql::metric_names;
use super::*;

use stage_guard::admission::Webhook;
use stage_guard::core::Policy;
use stage_guard::core::audit::Finding;
use stage_guard::metrics::{HandshakeFailure, Metrics};
use stage_guard::monitor::metrics::MonitorMetrics;

/// Metric families the webhook exports (README "Observability", `src/metrics.rs`).
pub(super) const WEBHOOK_METRICS: &[&str] = &[
    "stage_guard_admission_requests_total",
    "stage_guard_admission_duration_seconds",
    "stage_guard_transitions_total",
    "stage_guard_denials_total",
    "stage_guard_patches_total",
    "stage_guard_history_edits_discarded_total",
    "stage_guard_tls_reloads_total",
    "stage_guard_tls_handshake_failures_total",
    "stage_guard_tls_cert_not_after_timestamp_seconds",
    "stage_guard_connections_closed_total",
    STAGE_DURATION,
];

/// The webhook's time-in-stage histogram.
pub(super) const STAGE_DURATION: &str = "stage_guard_stage_duration_seconds";

/// Histogram families: their series are `_bucket`, `_sum` and `_count`.
pub(super) const HISTOGRAMS: &[&str] = &["stage_guard_admission_duration_seconds", STAGE_DURATION];

/// Metric families `stage-guard monitor` exports.
pub(super) const MONITOR_METRICS: &[&str] = &[
    "stage_guard_workflows",
    "stage_guard_stage_oldest_seconds",
    "stage_guard_workflows_stuck",
    "stage_guard_audit_findings",
    "stage_guard_monitor_last_sync_timestamp_seconds",
];

/// Prometheus' own series about a target.
pub(super) const PROMETHEUS_METRICS: &[&str] = &["up"];

/// The series names stage-guard's metrics can be selected by: each family, and a histogram's
/// `_bucket`, `_sum` and `_count`.
pub(super) fn exported_series() -> BTreeSet<String> {
    let mut series = BTreeSet::new();
    for family in WEBHOOK_METRICS
        .iter()
        .chain(MONITOR_METRICS)
        .chain(PROMETHEUS_METRICS)
    {
        if HISTOGRAMS.contains(family) {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{family}{suffix}"));
            }
        } else {
            series.insert(family.to_string());
        }
    }
    series
}

/// Every `(where, name)` among `exprs` that is not a series stage-guard exports.
pub(super) fn unknown_metrics(exprs: &[(String, String)]) -> Vec<(String, String)> {
    let known = exported_series();
    exprs
        .iter()
        .flat_map(|(place, expr)| {
            metric_names(expr)
                .into_iter()
                .filter(|name| !known.contains(name))
                .map(|name| (place.clone(), name))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The family a series belongs to.
pub(super) fn family_of(series: &str) -> String {
    HISTOGRAMS
        .iter()
        .find(|h| series.starts_with(*h))
        .map_or_else(|| series.to_string(), |h| h.to_string())
}

/// The largest finite bucket of the webhook's latency histogram, from its own registry.
pub(super) fn largest_latency_bucket() -> f64 {
    let text = Metrics::new(&Policy::default_policy()).encode();
    text.lines()
        .filter(|l| l.starts_with("stage_guard_admission_duration_seconds_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .filter(|le| *le != "+Inf")
        .map(|le| le.parse::<f64>().unwrap())
        .fold(0.0, f64::max)
}

#[test]
fn metric_lists_agree_with_what_the_webhook_exports() {
    let metrics = Metrics::new(&Policy::default_policy());
    // A body that is not a review: the one decision not exported from start-up.
    metrics.invalid(Webhook::Validate, std::time::Duration::from_millis(1));
    let text = metrics.encode();
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| family_of(l.split(['{', ' ']).next().unwrap()))
        .collect();
    let listed: BTreeSet<String> = WEBHOOK_METRICS.iter().map(|s| s.to_string()).collect();
    let unlisted: Vec<&String> = exported.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "exported by the webhook but not in WEBHOOK_METRICS: {unlisted:?}"
    );
    let missing: Vec<&String> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "in WEBHOOK_METRICS but not exported by the webhook: {missing:?}"
    );
    for family in MONITOR_METRICS {
        assert!(!exported.contains(*family), "{family} is the monitor's");
    }
}

#[test]
fn metric_lists_agree_with_what_the_monitor_exports() {
    let text = MonitorMetrics::new(&Policy::default_policy()).encode();
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| family_of(l.split(['{', ' ']).next().unwrap()))
        .collect();
    let listed: BTreeSet<String> = MONITOR_METRICS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        exported, listed,
        "the monitor's registry against MONITOR_METRICS"
    );
}

#[test]
fn a_typo_in_a_metric_name_is_caught() {
    let typo = vec![(
        "a rule".to_string(),
        r#"sum by (reason) (rate(stage_guard_denial_total{job="stage-guard"}[5m])) + stage_guard_workflows"#
            .to_string(),
    )];
    assert_eq!(
        unknown_metrics(&typo),
        [("a rule".to_string(), "stage_guard_denial_total".to_string())]
    );
}

#[test]
fn rules_and_panels_use_only_metrics_stage_guard_exports() {
    let docs = kustomize(&deploy_dir().join("monitoring"));
    let mut exprs = rule_exprs(&rule_groups(&docs, "stage-guard"));
    exprs.extend(rule_exprs(&rule_groups(&docs, "stage-guard-monitor")));
    exprs.extend(dashboard_exprs(&dashboard()));
    assert!(exprs.len() > 20, "{} expressions", exprs.len());
    let unknown = unknown_metrics(&exprs);
    assert!(
        unknown.is_empty(),
        "metrics stage-guard does not export: {unknown:#?}"
    );
}

#[test]
fn label_values_the_alerts_select_are_ones_stage_guard_writes() {
    let docs = kustomize(&deploy_dir().join("monitoring"));
    let webhook = rule_exprs(&rule_groups(&docs, "stage-guard"));
    let expr_of = |alert: &str| {
        webhook
            .iter()
            .find(|(name, _)| name == alert)
            .map(|(_, e)| e.clone())
            .unwrap()
    };
    let metrics = Metrics::new(&Policy::default_policy());
    metrics.invalid(Webhook::Validate, std::time::Duration::from_millis(1));
    let text = metrics.encode();
    assert!(expr_of("StageGuardWebhookInvalidReviews").contains(r#"decision="invalid""#));
    assert!(text.contains(r#"decision="invalid""#));
    assert!(expr_of("StageGuardCertificateReloadFailed").contains(r#"result="failure""#));
    assert!(text.contains(r#"result="failure""#));

    let handshake = expr_of("StageGuardTLSHandshakesFailing");
    let reasons = handshake
        .split("reason=~\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    let known: Vec<&str> = HandshakeFailure::ALL.iter().map(|r| r.as_str()).collect();
    for reason in reasons.split('|') {
        assert!(known.contains(&reason), "handshake reason {reason}");
    }

    let monitor = rule_exprs(&rule_groups(&docs, "stage-guard-monitor"));
    let findings = &monitor
        .iter()
        .find(|(name, _)| name == "StageGuardAuditFindings")
        .unwrap()
        .1;
    assert!(findings.contains(r#"kind!="stuck""#));
    assert!(Finding::KINDS.contains(&"stuck"));
}
