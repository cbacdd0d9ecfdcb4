//! The chart's monitoring values: the same rules and dashboard as `deploy/monitoring/`, with names and
//! jobs that follow the release.

use super::super::helm::{
    RELEASE, notes, template, try_template, try_template_as, validate_rendering,
};
use super::*;

const MONITORING_ON: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "serviceMonitor.monitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
];

#[test]
fn chart_renders_the_kustomize_rules_for_the_release_stage_guard() {
    let chart = template(MONITORING_ON);
    validate_rendering("chart-monitoring", &chart);
    let kustomized = kustomize(&deploy_dir().join("monitoring"));
    for name in ["stage-guard", "stage-guard-monitor"] {
        assert_eq!(
            rule_groups(&chart, name),
            rule_groups(&kustomized, name),
            "PrometheusRule {name}: the chart and deploy/monitoring differ"
        );
    }
    let config_map = find(&chart, "ConfigMap", "stage-guard-dashboard");
    check_dashboard_configmap("chart", config_map);
    assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        relabelled_job(find(&chart, "ServiceMonitor", "stage-guard-monitor")),
        MONITOR_JOB
    );
}

#[test]
fn chart_monitoring_is_off_by_default_and_each_part_switches_on_alone() {
    let kinds_named = |docs: &[Value]| -> BTreeSet<String> {
        docs.iter()
            .filter(|d| {
                ["PrometheusRule", "ServiceMonitor"].contains(&str_at(d, "/kind"))
                    || d["metadata"]["labels"]["grafana_dashboard"].is_string()
            })
            .map(|d| format!("{}/{}", str_at(d, "/kind"), str_at(d, "/metadata/name")))
            .collect()
    };
    let set = |args: &[&str]| kinds_named(&template(args));
    assert!(set(&[]).is_empty());
    assert_eq!(
        set(&["--set", "prometheusRule.enabled=true"]),
        BTreeSet::from(["PrometheusRule/stage-guard".to_string()])
    );
    assert_eq!(
        set(&["--set", "grafanaDashboard.enabled=true"]),
        BTreeSet::from(["ConfigMap/stage-guard-dashboard".to_string()])
    );
    assert_eq!(
        set(&["--set", "serviceMonitor.monitor.enabled=true"]),
        BTreeSet::from(["ServiceMonitor/stage-guard-monitor".to_string()])
    );
    // The monitor's alerts come with the monitor's scraping, never without it.
    assert_eq!(
        set(&[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "serviceMonitor.monitor.enabled=true"
        ]),
        BTreeSet::from([
            "PrometheusRule/stage-guard".to_string(),
            "PrometheusRule/stage-guard-monitor".to_string(),
            "ServiceMonitor/stage-guard-monitor".to_string(),
        ])
    );
}

#[test]
fn chart_rules_follow_the_release_name_and_pass_the_unit_tests() {
    let docs = try_template_as("ci", "pipelines", MONITORING_ON)
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    validate_rendering("chart-monitoring-ci", &docs);
    let service = find(&docs, "Service", "ci-stage-guard");
    let webhook_rules = rule_groups(&docs, "ci-stage-guard");
    let monitor_rules = rule_groups(&docs, "ci-stage-guard-monitor");
    assert_eq!(
        selected_job(&webhook_rules),
        str_at(service, "/metadata/name")
    );
    let monitor = find(&docs, "ServiceMonitor", "ci-stage-guard-monitor");
    assert_eq!(relabelled_job(monitor), "ci-stage-guard-monitor");
    assert_eq!(selected_job(&monitor_rules), "ci-stage-guard-monitor");
    for doc in &docs {
        if ["PrometheusRule", "ServiceMonitor"].contains(&str_at(doc, "/kind")) {
            assert_eq!(doc["metadata"]["namespace"], "pipelines");
        }
    }
    let jobs = Jobs {
        webhook: "ci-stage-guard",
        monitor: "ci-stage-guard-monitor",
    };
    for (groups, fixture) in [(&webhook_rules, "webhook"), (&monitor_rules, "monitor")] {
        let label = format!("chart ci {fixture}");
        assert_eq!(check_rules(fixture, groups), rules_of(groups).len());
        check_alert_fields(&label, groups, "README.md");
        unit_test(fixture, groups, &jobs)
            .unwrap_or_else(|e| panic!("{label}: promtool test rules failed:\n{e}"));
    }
}

#[test]
fn chart_latency_threshold_follows_timeout_seconds_below_the_largest_bucket() {
    let largest = largest_latency_bucket();
    for timeout in [1, 2, 4, 5, 10, 30] {
        let timeout_value = format!("webhooks.timeoutSeconds={timeout}");
        let docs = template(&[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            &timeout_value,
        ]);
        let groups = rule_groups(&docs, RELEASE);
        let threshold = slow_threshold(&groups);
        let expected = (f64::from(timeout) / 2.0).min(2.0);
        assert_eq!(threshold, expected, "timeoutSeconds {timeout}");
        assert!(threshold < largest, "timeoutSeconds {timeout}");
        check_rules(&format!("timeout-{timeout}"), &groups);
        let slow = rules_of(&groups)
            .into_iter()
            .find(|r| r["alert"] == "StageGuardWebhookSlow")
            .unwrap();
        assert!(
            str_at(slow, "/annotations/description")
                .contains(&format!("gives up after {timeout} s")),
            "timeoutSeconds {timeout}"
        );
    }
}

#[test]
fn chart_service_monitors_select_their_services_and_never_the_same_one() {
    let docs = template(MONITORING_ON);
    let service = find(&docs, "Service", SERVICE);
    let webhook_monitor = find(&docs, "ServiceMonitor", RELEASE);
    let monitor = find(&docs, "ServiceMonitor", "stage-guard-monitor");
    let selector = &webhook_monitor["spec"]["selector"];
    assert!(labels_match(
        &selector["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        selector["matchExpressions"],
        json!([{"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["monitor"]}])
    );
    // By default the monitor's ServiceMonitor selects the Service of monitor.enabled, which the
    // webhook's ServiceMonitor does not: no Service is scraped twice, and the webhook's never by it.
    let with_monitor: Vec<&str> = MONITORING_ON
        .iter()
        .copied()
        .chain(["--set", "monitor.enabled=true"])
        .collect();
    let rendered = template(&with_monitor);
    let named = |kind: &str, name: &str| {
        rendered
            .iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .count()
    };
    assert_eq!(named("ServiceMonitor", "stage-guard-monitor"), 1);
    let monitor_service = find(&rendered, "Service", "stage-guard-monitor");
    let monitor_selector =
        &find(&rendered, "ServiceMonitor", "stage-guard-monitor")["spec"]["selector"];
    assert_eq!(monitor_selector, &monitor["spec"]["selector"]);
    assert!(labels_match(
        &monitor_selector["matchLabels"],
        &monitor_service["metadata"]["labels"]
    ));
    assert!(!labels_match(
        &monitor_selector["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert!(!labels_match(
        &selector["matchLabels"],
        &monitor_service["metadata"]["labels"]
    ));
    // monitor.enabled with serviceMonitor.enabled scrapes the monitor without being asked twice.
    let implied = template(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "monitor.enabled=true",
    ]);
    assert_eq!(
        find(&implied, "ServiceMonitor", "stage-guard-monitor")["spec"]["selector"],
        monitor["spec"]["selector"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [NAMESPACE]
    );

    let custom = template(&[
        "--set",
        "serviceMonitor.monitor.enabled=true",
        "--set",
        "serviceMonitor.monitor.selector.matchLabels.app=my-monitor",
        "--set",
        "serviceMonitor.monitor.port=http-metrics",
        "--set",
        "serviceMonitor.labels.release=kube-prometheus-stack",
    ]);
    let monitor = find(&custom, "ServiceMonitor", "stage-guard-monitor");
    assert_eq!(
        monitor["spec"]["selector"],
        json!({"matchLabels": {"app": "my-monitor"}})
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(relabelled_job(monitor), MONITOR_JOB);
}

#[test]
fn chart_rule_and_dashboard_values_reach_their_objects() {
    let docs = template(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "--set",
        "prometheusRule.runbookUrl=https://git.example.com/stage-guard/blob/main/README.md",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.namespace=monitoring",
        "--set",
        "grafanaDashboard.annotations.grafana_folder=Pipelines",
    ]);
    let rule = find(&docs, "PrometheusRule", RELEASE);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    check_alert_fields(
        "chart runbookUrl",
        &rule["spec"],
        "https://git.example.com/stage-guard/blob/main/README.md",
    );
    let config_map = find(&docs, "ConfigMap", "stage-guard-dashboard");
    assert_eq!(config_map["metadata"]["namespace"], "monitoring");
    assert_eq!(
        config_map["metadata"]["annotations"]["grafana_folder"],
        "Pipelines"
    );
    check_dashboard_configmap("chart namespace", config_map);

    let relabelled = template(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.labels.grafana_dashboard=null",
        "--set",
        "grafanaDashboard.labels.dashboards=stage-guard",
    ]);
    let config_map = find(&relabelled, "ConfigMap", "stage-guard-dashboard");
    assert_eq!(
        config_map["metadata"]["labels"]["dashboards"],
        "stage-guard"
    );
    assert!(
        config_map["metadata"]["labels"]
            .get("grafana_dashboard")
            .is_none()
    );
}

#[test]
fn chart_refuses_bad_monitoring_values_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "prometheusRule.runbookUrl=README.md#alerts"],
            "runbookUrl",
        ),
        (&["--set", "prometheusRule.runbookUrl=a b"], "runbookUrl"),
        (&["--set", "prometheusRule.severity=page"], "severity"),
        (
            &["--set", "serviceMonitor.monitor.selector.app=x"],
            "selector",
        ),
        (
            &["--set", "grafanaDashboard.enabled=yes"],
            "grafanaDashboard",
        ),
    ];
    for (args, named) in cases {
        match try_template(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(err) => assert!(err.contains(named), "{args:?}: {err}"),
        }
    }
}

#[test]
fn notes_warn_of_alerts_on_a_job_nothing_scrapes() {
    let warning = "WARNING: prometheusRule.enabled without serviceMonitor.enabled";
    let alone = notes(&["--set", "prometheusRule.enabled=true"]);
    assert!(alone.contains(warning), "{alone}");
    assert!(alone.contains(r#"job="stage-guard""#), "{alone}");
    let scraped = notes(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ]);
    assert!(!scraped.contains(warning), "{scraped}");
}
