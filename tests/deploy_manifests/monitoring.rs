//! The monitoring package: `deploy/monitoring/` (kustomize) and the chart's ServiceMonitors,
//! PrometheusRules and Grafana dashboard, checked with the real `promtool` of Debian's `prometheus`
//! package (`.ci/install-promtool`; a missing one fails with the command that installs it).
//!
//! - the rules of every rendering pass `promtool check rules`, and the promtool unit tests in
//!   `tests/fixtures/monitoring/` (series that must fire an alert and series that must not), with the
//!   job names of that rendering; a copy of the rules with one alert broken (never firing, or without
//!   its `for:`) must fail them, so every alert is tested both ways;
//! - every Grafana panel and variable query, made into a recording rule, passes `promtool check rules`;
//! - every metric name in rules and panels is one that stage-guard exports (the lists in `metrics.rs`, checked
//!   against the webhook's own registry);
//! - the manifests are schema-validated like the others (ServiceMonitor and PrometheusRule exempt, as
//!   custom resources), select the Services they scrape, and the chart renders what kustomize renders.

mod chart;
mod dashboard;
mod metrics;
mod promql;
mod promtool;
mod rules;

use super::*;
use dashboard::*;
use metrics::*;
use promtool::*;
use rules::*;

/// The jobs of the kustomize package: the webhook Service's name, and the monitor's (set by its
/// ServiceMonitor).
const WEBHOOK_JOB: &str = "stage-guard";
const MONITOR_JOB: &str = "stage-guard-monitor";

/// The monitor ServiceMonitor's job: the relabeling that sets it.
fn relabelled_job(monitor: &Value) -> String {
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let relabel: Vec<&Value> = endpoints[0]["relabelings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["targetLabel"] == "job")
        .collect();
    assert_eq!(relabel.len(), 1, "{}", short(monitor));
    assert_eq!(relabel[0]["action"], "replace");
    assert!(relabel[0].get("sourceLabels").is_none());
    str_at(relabel[0], "/replacement").to_string()
}

#[test]
fn kustomize_package_validates_and_scrapes_the_webhook_service() {
    let docs = kustomize(&deploy_dir().join("monitoring"));
    let kinds: BTreeSet<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                str_at(d, "/kind").to_string(),
                str_at(d, "/metadata/name").to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("ConfigMap", "stage-guard-dashboard"),
        ("PrometheusRule", "stage-guard"),
        ("PrometheusRule", "stage-guard-monitor"),
        ("ServiceMonitor", "stage-guard"),
        ("ServiceMonitor", "stage-guard-monitor"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(kinds, expected);
    for doc in &docs {
        assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{}", short(doc));
    }
    schema_validate("monitoring", &docs);
    let webhook_only = kustomize(&deploy_dir().join("monitoring/webhook"));
    assert!(all_of(&webhook_only, "PrometheusRule").len() == 1);
    assert!(find(&webhook_only, "ServiceMonitor", "stage-guard")["kind"] == "ServiceMonitor");
    let monitor_only = kustomize(&deploy_dir().join("monitoring/monitor"));
    assert_eq!(
        kinds_of(&monitor_only),
        ["PrometheusRule", "ServiceMonitor"]
    );

    // The webhook's ServiceMonitor selects the Service of deploy/base on its admin port, and the
    // webhook's alerts select that Service's name as the job.
    let base = kustomize(&deploy_dir().join("base"));
    let service = find(&base, "Service", SERVICE);
    let monitor = find(&docs, "ServiceMonitor", "stage-guard");
    assert!(labels_match(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [str_at(service, "/metadata/namespace")]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the scraped port is a port of the Service");
    let container = the_container(find(&base, "Deployment", SERVICE));
    assert_eq!(resolve_port(container, &port["targetPort"]), ADMIN_PORT);
    assert_eq!(
        selected_job(&rule_groups(&docs, "stage-guard")),
        str_at(service, "/metadata/name")
    );
    assert_eq!(WEBHOOK_JOB, SERVICE);

    // The monitor's ServiceMonitor sets the job its alerts select.
    let monitor = find(&docs, "ServiceMonitor", "stage-guard-monitor");
    assert_eq!(relabelled_job(monitor), MONITOR_JOB);
    assert_eq!(
        selected_job(&rule_groups(&docs, "stage-guard-monitor")),
        MONITOR_JOB
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");

    check_dashboard_configmap(
        "monitoring",
        find(&docs, "ConfigMap", "stage-guard-dashboard"),
    );
}

fn kinds_of(docs: &[Value]) -> Vec<String> {
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| str_at(d, "/kind").to_string())
        .collect();
    kinds.into_iter().collect()
}

#[test]
fn kustomize_rules_pass_promtool_check_and_the_alert_unit_tests() {
    let docs = kustomize(&deploy_dir().join("monitoring"));
    let jobs = Jobs {
        webhook: WEBHOOK_JOB,
        monitor: MONITOR_JOB,
    };
    for (name, fixture) in [
        ("stage-guard", "webhook"),
        ("stage-guard-monitor", "monitor"),
    ] {
        let groups = rule_groups(&docs, name);
        let label = format!("kustomize {name}");
        assert_eq!(check_rules(fixture, &groups), rules_of(&groups).len());
        check_alert_fields(&label, &groups, "README.md");
        check_unit_tests(&label, fixture, &groups, &jobs);
    }
}

#[test]
fn latency_alert_fires_below_the_timeout_and_the_largest_bucket() {
    let docs = kustomize(&deploy_dir().join("monitoring"));
    let threshold = slow_threshold(&rule_groups(&docs, "stage-guard"));
    let base = kustomize(&deploy_dir().join("base"));
    for kind in [MUTATING, VALIDATING] {
        let timeout = webhook(&base, kind)["timeoutSeconds"].as_f64().unwrap();
        assert!(
            threshold <= timeout / 2.0,
            "{kind}: {threshold} s of {timeout} s"
        );
    }
    let largest = largest_latency_bucket();
    assert!(largest > 0.0);
    assert!(
        threshold < largest,
        "a p99 beyond the largest finite bucket ({largest} s) reads as {largest}: the threshold {threshold} s could never be crossed"
    );
}

#[test]
fn readme_lists_every_alert_with_its_severity_and_for() {
    let docs = kustomize(&deploy_dir().join("monitoring"));
    let webhook = rule_groups(&docs, "stage-guard");
    let monitor = rule_groups(&docs, "stage-guard-monitor");
    assert_eq!(readme_alert_table(), alert_table(&[&webhook, &monitor]));
}
