//! The Grafana dashboard: one JSON file, shipped by kustomize and the chart; its panels and variables.

use super::promql::metric_names;
use super::*;

/// Panels and alerts the dashboard must have, by the metric family they show.
pub(super) const DASHBOARD_MUST_SHOW: &[&str] = &[
    "stage_guard_transitions_total",
    "stage_guard_denials_total",
    "stage_guard_admission_duration_seconds",
    "stage_guard_workflows",
    "stage_guard_workflows_stuck",
    STAGE_DURATION,
    "stage_guard_audit_findings",
    "stage_guard_tls_cert_not_after_timestamp_seconds",
];

pub(super) const DASHBOARD_FILE: &str = "deploy/monitoring/webhook/dashboards/stage-guard.json";
pub(super) const CHART_DASHBOARD_FILE: &str = "deploy/helm/stage-guard/dashboards/stage-guard.json";

/// Grafana's own variables, which need no definition in the dashboard.
pub(super) const GRAFANA_BUILTIN_VARIABLES: &[&str] = &["__rate_interval", "__range", "__interval"];

pub(super) fn dashboard() -> Value {
    let text = fs::read_to_string(repo().join(DASHBOARD_FILE)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD_FILE}: {e}"))
}

/// Every panel, rows' collapsed panels included.
pub(super) fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

pub(super) fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .collect()
}

/// A variable's query text (Grafana stores it as a string or as `{query: …}`).
pub(super) fn variable_query(variable: &Value) -> &str {
    variable["query"]
        .as_str()
        .or(variable["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("no query in {}", short(variable)))
}

/// `label_values(SELECTOR, label)` → SELECTOR: the expression a variable's values come from.
pub(super) fn label_values_selector(query: &str) -> &str {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values() query: {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values() without a label: {query}"));
    assert!(!label.trim().is_empty() && !label.contains('"'), "{query}");
    selector.trim()
}

/// The `$name` and `${name}` variables a text uses.
pub(super) fn used_variables(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            used.insert(name);
        }
    }
    used
}

/// A panel's expression as PromQL Prometheus accepts: Grafana's variables replaced by what Grafana
/// puts there (a range, or the regex of "All").
pub(super) fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$__interval", "1m")
        .replace("$pipeline", ".*")
        .replace("$stage", ".*")
}

/// Every panel target and variable query of the dashboard: (where, PromQL).
pub(super) fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                format!(
                    "panel {} \"{}\" target {}",
                    panel["id"],
                    str_at(panel, "/title"),
                    str_at(target, "/refId")
                ),
                as_promql(str_at(target, "/expr")),
            ));
        }
    }
    for variable in variables(dashboard) {
        if variable["type"] == "query" {
            exprs.push((
                format!("variable {}", str_at(variable, "/name")),
                as_promql(label_values_selector(variable_query(variable))),
            ));
        }
    }
    exprs
}

/// The dashboard ConfigMap: labelled for the sidecar, holding the dashboard file.
pub(super) fn check_dashboard_configmap(label: &str, config_map: &Value) {
    assert_eq!(
        config_map["metadata"]["labels"]["grafana_dashboard"], "1",
        "{label}"
    );
    let data = config_map["data"].as_object().unwrap();
    assert_eq!(data.len(), 1, "{label}: one dashboard");
    let shipped: Value = serde_json::from_str(str_at(config_map, "/data/stage-guard.json"))
        .unwrap_or_else(|e| panic!("{label}: the ConfigMap's dashboard: {e}"));
    assert_eq!(
        shipped,
        dashboard(),
        "{label}: the ConfigMap holds the dashboard file"
    );
}

#[test]
fn dashboard_is_well_formed_with_unique_panel_ids_and_its_variables() {
    let board = dashboard();
    assert_eq!(board["uid"], "stage-guard");
    let chart_copy: Value =
        serde_json::from_str(&fs::read_to_string(repo().join(CHART_DASHBOARD_FILE)).unwrap())
            .unwrap();
    assert_eq!(
        fs::read(repo().join(CHART_DASHBOARD_FILE)).unwrap(),
        fs::read(repo().join(DASHBOARD_FILE)).unwrap(),
        "{CHART_DASHBOARD_FILE} must be a copy of {DASHBOARD_FILE}"
    );
    assert_eq!(chart_copy, board);

    let mut ids = BTreeSet::new();
    for panel in panels(&board) {
        let id = panel["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id: {}", short(panel)));
        assert!(ids.insert(id), "panel id {id} used twice");
        str_at(panel, "/title");
        if panel["type"] == "row" {
            continue;
        }
        let grid = &panel["gridPos"];
        for key in ["x", "y", "w", "h"] {
            assert!(grid[key].is_u64(), "panel {id}: gridPos.{key}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "panel {id}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {id} shows nothing");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
            assert!(
                refs.insert(str_at(target, "/refId")),
                "panel {id}: refId twice"
            );
            str_at(target, "/expr");
        }
    }

    let vars = variables(&board);
    let by_name = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let datasource = by_name("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["pipeline", "stage"] {
        let variable = by_name(name);
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(variable["includeAll"], true, "{name}");
        assert_eq!(variable["allValue"], ".*", "{name}");
        assert!(
            variable_query(variable).ends_with(&format!(", {name})")),
            "{name}: {}",
            variable_query(variable)
        );
    }

    // Every variable a query uses is defined (or Grafana's own), and pipeline and stage are used.
    let defined: BTreeSet<String> = vars
        .iter()
        .map(|v| str_at(v, "/name").to_string())
        .collect();
    let mut used = BTreeSet::new();
    for panel in panels(&board) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            used.extend(used_variables(str_at(target, "/expr")));
        }
        used.extend(used_variables(&panel["datasource"].to_string()));
    }
    for variable in &vars {
        if variable["type"] == "query" {
            used.extend(used_variables(variable_query(variable)));
        }
    }
    for name in &used {
        assert!(
            defined.contains(name) || GRAFANA_BUILTIN_VARIABLES.contains(&name.as_str()),
            "${name} is not defined"
        );
    }
    for name in ["datasource", "pipeline", "stage"] {
        assert!(used.contains(name), "${name} is never used");
    }
}

#[test]
fn dashboard_queries_are_valid_promql_and_show_what_operators_need() {
    let exprs = dashboard_exprs(&dashboard());
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("stage_guard_dashboard:query_{i}"), "expr": expr}))
        .collect();
    let count = rules.len();
    let groups = json!({"groups": [{"name": "stage-guard-dashboard", "rules": rules}]});
    assert_eq!(check_rules("dashboard", &groups), count);

    let shown: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .map(|s| family_of(&s))
        .collect();
    for family in DASHBOARD_MUST_SHOW {
        assert!(shown.contains(*family), "no panel shows {family}");
    }
}

#[test]
fn an_invalid_panel_expression_fails_promtool_check() {
    let groups = json!({"groups": [{"name": "g", "rules": [
        {"record": "stage_guard_dashboard:bad", "expr": "sum by (reason (rate(stage_guard_denials_total[5m]))"}
    ]}]});
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bad.rules.yaml"), groups.to_string()).unwrap();
    let report = run_promtool(dir.path(), &["check", "rules", "bad.rules.yaml"])
        .expect_err("promtool accepted an unbalanced expression");
    assert!(report.contains("bad.rules.yaml"), "{report}");
}
