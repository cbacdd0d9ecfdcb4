//! The optional monitor (`stage-guard monitor`): the kustomize Component `deploy/monitor`, composed
//! with the base and with an overlay, and the chart's `monitor.*` values. Rendered with the real
//! `kubectl kustomize` and `helm template`, validated against the Kubernetes schemas, then read field
//! by field: the same hardening as the webhook, probes on the admin port, the webhook's configuration
//! mounted, a token and RBAC that allow listing and watching Workflows and nothing else, and labels
//! that keep the monitor's pod out of the webhook's Service, PodDisruptionBudget and NetworkPolicy.

use super::helm::{ValuesFile, template, try_template, validate_rendering};
use super::*;

const MONITOR: &str = "stage-guard-monitor";

/// `deploy/` copied, with an overlay `deploy/with-monitor` of `resources` plus the monitor
/// Component, rendered.
fn with_monitor(resources: &str) -> Vec<Value> {
    let copy = deploy_copy();
    let overlay = copy.path().join("deploy/with-monitor");
    fs::create_dir_all(&overlay).unwrap();
    fs::write(
        overlay.join("kustomization.yaml"),
        format!("resources: [{resources}]\ncomponents: [../monitor]\n"),
    )
    .unwrap();
    kustomize(&overlay)
}

/// `stage-guard monitor --help`: the flags the monitor takes.
fn monitor_help() -> String {
    let out = Command::new(stage_guard_bin())
        .args(["monitor", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stage-guard monitor --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The checks every monitor Deployment passes, wherever it comes from; returns its `--flag value`s.
fn check_monitor_deployment(
    docs: &[Value],
    name: &str,
    webhook_deployment: &str,
) -> BTreeMap<String, String> {
    let deployment = find(docs, "Deployment", name);
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let container = the_container(deployment);

    // One replica and never two during a rollout: two would export every count twice.
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    assert!(labels_match(&spec["selector"]["matchLabels"], pod_labels));

    // The command line: `monitor` and flags it knows.
    let args = strings(&container["args"]);
    assert_eq!(args[0], "monitor");
    let flags = flags(&args);
    let help = monitor_help();
    for flag in flags.keys() {
        assert!(
            help.contains(&format!("{flag} ")),
            "`stage-guard monitor` has no {flag}"
        );
    }

    // Probes on the admin port, which is the only port.
    let ports: Vec<i64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [ADMIN_PORT]);
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(resolve_port(container, &get["port"]), ADMIN_PORT, "{probe}");
    }
    for key in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        assert!(
            container["resources"].pointer(key).is_some(),
            "resources{key} missing"
        );
    }

    // The webhook's hardening.
    let sc = &container["securityContext"];
    let psc = &pod["securityContext"];
    let either = |key: &str| {
        if sc[key].is_null() {
            psc[key].clone()
        } else {
            sc[key].clone()
        }
    };
    assert_eq!(either("runAsNonRoot"), true);
    assert!(either("runAsUser").as_i64().unwrap() > 0);
    assert_eq!(either("seccompProfile")["type"], "RuntimeDefault");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()));

    // Its own account, with the token it watches Workflows with.
    let account = str_at(pod, "/serviceAccountName");
    assert_ne!(
        account,
        str_at(
            find(docs, "Deployment", webhook_deployment),
            "/spec/template/spec/serviceAccountName"
        ),
        "the monitor shares the webhook's account"
    );
    assert_ne!(pod["automountServiceAccountToken"], false);
    assert_ne!(
        find(docs, "ServiceAccount", account)["automountServiceAccountToken"],
        false
    );

    // The webhook's configuration, from the same ConfigMap, mounted as a directory.
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m.get("subPath").is_none()));
    let config = Path::new(&flags["--config"]);
    let mount = mounts
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == config.parent().unwrap())
        .expect("--config is mounted");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let webhook_pod = &find(docs, "Deployment", webhook_deployment)["spec"]["template"]["spec"];
    let webhook_config = webhook_pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"].is_object())
        .expect("the webhook mounts a ConfigMap");
    assert_eq!(
        volume["configMap"]["name"], webhook_config["configMap"]["name"],
        "the monitor reads another configuration than the webhook"
    );
    let configmap = find(docs, "ConfigMap", str_at(volume, "/configMap/name"));
    let file = config.file_name().unwrap().to_str().unwrap();
    assert!(configmap["data"].get(file).is_some(), "no {file} in it");
    flags
}

/// The webhook's Service, PodDisruptionBudget and NetworkPolicy do not select the monitor's pod;
/// the monitor's Service does, on the admin port, named `metrics`.
fn check_selection(docs: &[Value], monitor: &str, webhook: &str) {
    let deployment = find(docs, "Deployment", monitor);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = the_container(deployment);
    assert!(!labels_match(
        &find(docs, "Service", webhook)["spec"]["selector"],
        pod_labels
    ));
    for pdb in all_of(docs, "PodDisruptionBudget") {
        assert!(!labels_match(
            &pdb["spec"]["selector"]["matchLabels"],
            pod_labels
        ));
    }
    let service = find(docs, "Service", monitor);
    assert!(labels_match(&service["spec"]["selector"], pod_labels));
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "metrics");
    assert_eq!(ports[0]["port"], ADMIN_PORT);
    assert_eq!(resolve_port(container, &ports[0]["targetPort"]), ADMIN_PORT);
}

/// The rules bound to the monitor's account: exactly list and watch on argoproj.io workflows, in a
/// ClusterRole (`None`) or a Role in that namespace.
fn check_rbac(docs: &[Value], account: &str, account_ns: &str, scope: Option<&str>) {
    let (role_kind, binding_kind) = match scope {
        None => ("ClusterRole", "ClusterRoleBinding"),
        Some(_) => ("Role", "RoleBinding"),
    };
    let bindings: Vec<&Value> = all_of(docs, binding_kind)
        .into_iter()
        .filter(|b| {
            b["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account
                    && s["namespace"] == account_ns
            })
        })
        .collect();
    assert_eq!(
        bindings.len(),
        1,
        "one {binding_kind} of {account_ns}/{account}"
    );
    let binding = bindings[0];
    assert_eq!(binding["metadata"]["namespace"].as_str(), scope);
    assert_eq!(binding["roleRef"]["kind"], role_kind);
    let role = find(docs, role_kind, str_at(binding, "/roleRef/name"));
    assert_eq!(role["metadata"]["namespace"].as_str(), scope);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["list", "watch"]}]),
        "the monitor may list and watch Workflows, nothing more"
    );
    // Nothing else grants the account anything.
    let other_bindings = ["ClusterRoleBinding", "RoleBinding"]
        .iter()
        .flat_map(|k| all_of(docs, k))
        .filter(|b| {
            b["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
        })
        .count();
    assert_eq!(other_bindings, 1);
}

#[test]
fn the_base_has_no_monitor() {
    let docs = kustomize(&deploy_dir().join("base"));
    for doc in &docs {
        assert!(
            !str_at(doc, "/metadata/name").contains("monitor"),
            "{}",
            short(doc)
        );
    }
}

#[test]
fn the_monitor_component_adds_a_hardened_monitor_reading_the_webhooks_configuration() {
    let docs = with_monitor("../base");
    schema_validate("base-with-monitor", &docs);
    let flags = check_monitor_deployment(&docs, MONITOR, "stage-guard");
    assert_eq!(flags["--namespace"], "all");
    check_selection(&docs, MONITOR, SERVICE);
    check_rbac(&docs, MONITOR, NAMESPACE, None);
    for doc in &docs {
        if str_at(doc, "/metadata/name").starts_with(MONITOR)
            && !doc["kind"].as_str().unwrap().starts_with("Cluster")
        {
            assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{}", short(doc));
        }
    }
    // Everything of the base is still there, unchanged.
    let base = kustomize(&deploy_dir().join("base"));
    for doc in &base {
        let twin = find(
            &docs,
            doc["kind"].as_str().unwrap(),
            str_at(doc, "/metadata/name"),
        );
        assert_eq!(twin, doc);
    }
    assert_eq!(docs.len(), base.len() + 5, "the monitor adds five objects");
}

#[test]
fn the_monitor_component_composes_with_an_overlay() {
    let docs = with_monitor("../overlays/cert-manager");
    schema_validate("cert-manager-with-monitor", &docs);
    check_monitor_deployment(&docs, MONITOR, "stage-guard");
    check_rbac(&docs, MONITOR, NAMESPACE, None);
}

#[test]
fn the_chart_has_no_monitor_unless_enabled() {
    for docs in [
        template(&[]),
        template(&["--set", "serviceMonitor.enabled=true"]),
    ] {
        for doc in &docs {
            assert!(
                !str_at(doc, "/metadata/name").contains("monitor"),
                "{}",
                short(doc)
            );
        }
    }
}

#[test]
fn the_charts_monitor_renders_what_the_component_renders() {
    let docs = template(&["--set", "monitor.enabled=true"]);
    validate_rendering("chart-monitor", &docs);
    let flags = check_monitor_deployment(&docs, MONITOR, "stage-guard");
    assert_eq!(flags["--namespace"], "all");
    assert_eq!(flags["--refresh-interval"], "15");
    check_selection(&docs, MONITOR, SERVICE);
    check_rbac(&docs, MONITOR, NAMESPACE, None);
    // The pods roll when the configuration changes, as the webhook's do.
    let checksum = |docs: &[Value]| {
        find(docs, "Deployment", MONITOR)["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    let changed = template(&["--set", "monitor.enabled=true", "--set", "config.mode=warn"]);
    assert_ne!(checksum(&docs), checksum(&changed));
}

#[test]
fn the_charts_monitor_watches_one_namespace_with_a_role_there() {
    let values = ValuesFile::new(
        r#"{"monitor": {"enabled": true, "namespace": "argo", "refreshInterval": 30,
             "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}},
             "nodeSelector": {"pool": "infra"}, "priorityClassName": "low"}}"#,
    );
    let docs = template(&["-f", &values.path()]);
    validate_rendering("chart-monitor-namespaced", &docs);
    let flags = check_monitor_deployment(&docs, MONITOR, "stage-guard");
    assert_eq!(flags["--namespace"], "argo");
    assert_eq!(flags["--refresh-interval"], "30");
    check_rbac(&docs, MONITOR, NAMESPACE, Some("argo"));
    assert!(all_of(&docs, "ClusterRole").is_empty());
    let pod = &find(&docs, "Deployment", MONITOR)["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["pool"], "infra");
    assert_eq!(pod["priorityClassName"], "low");
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        "96Mi"
    );
}

#[test]
fn the_charts_monitor_gets_a_service_monitor_and_a_network_policy_of_its_own() {
    let docs = template(&[
        "--set",
        "monitor.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
    ]);
    validate_rendering("chart-monitor-scraped", &docs);
    let deployment = find(&docs, "Deployment", MONITOR);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = find(&docs, "Service", MONITOR);

    let scrape = find(&docs, "ServiceMonitor", MONITOR);
    assert!(labels_match(
        &scrape["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(scrape["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(scrape["spec"]["endpoints"][0]["path"], "/metrics");
    // The webhook's ServiceMonitor does not pick the monitor's Service up twice.
    assert!(!labels_match(
        &find(&docs, "ServiceMonitor", "stage-guard")["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));

    let policy = find(&docs, "NetworkPolicy", MONITOR);
    assert!(labels_match(
        &policy["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        resolve_port(the_container(deployment), &rules[0]["ports"][0]["port"]),
        ADMIN_PORT
    );
    assert_eq!(
        rules[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    // The webhook's policy does not select the monitor's pod.
    assert!(!labels_match(
        &find(&docs, "NetworkPolicy", "stage-guard")["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
}

#[test]
fn bad_monitor_values_fail_with_a_message_naming_them() {
    for (args, expected) in [
        (
            vec!["--set", "monitor.refreshInterval=0"],
            "monitor/refreshInterval",
        ),
        (
            vec!["--set", "monitor.namespace=Not_A_Namespace"],
            "monitor/namespace",
        ),
        (vec!["--set", "monitor.replicas=2"], "replicas"),
    ] {
        let mut all = vec!["--set", "monitor.enabled=true"];
        all.extend(args.iter().copied());
        let err = try_template(&all).expect_err(&format!("{args:?} rendered"));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
