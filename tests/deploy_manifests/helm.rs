//! The Helm chart in `deploy/helm/stage-guard`, checked with the real `helm` (built from the Go module
//! in `tests/helm/`): `helm lint --strict`, and `helm template` with the defaults and with each mode and
//! option, every rendering validated like the kustomize output (same strictness and Kubernetes
//! versions; only the CRD kinds listed below are exempt). The chart must render what `deploy/base`
//! renders (webhook rules and selectors, the Deployment's hardening), its ConfigMap must pass
//! `stage-guard config check`, and the webhooks' objectSelector and matchConditions must follow the
//! configuration's keys. Bad values fail with a message naming the value.

use super::*;

const CHART: &str = "deploy/helm/stage-guard";
pub(crate) const RELEASE: &str = "stage-guard";

/// Custom resources the chart may render, which kubernetes-validate has no schema for.
const CHART_CRD_KINDS: &[(&str, &str)] = &[
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// A configuration whose label and annotation keys are all renamed, with a graph of its own.
const RENAMED_CONFIG: &str = r#"{"config": {
  "label": "example.com/phase",
  "stages": ["draft", "review", "done"],
  "entry": ["draft"],
  "transitions": {"draft": ["review"], "review": ["done", "draft"]},
  "history": {"annotation": "example.com/phase-log", "limit": 10, "required": true},
  "override": {"annotation": "example.com/force-because", "users": ["release-bot"], "groups": []}
}}"#;

// === running helm ===

/// The real helm (a missing one fails the test with the command that builds it).
fn helm() -> PathBuf {
    stage_guard_testenv::tools::helm().unwrap_or_else(|e| panic!("{e:#}"))
}

fn chart() -> PathBuf {
    repo().join(CHART)
}

/// `helm template stage-guard CHART -n stage-guard ARGS...`: the documents, or helm's stderr.
pub(crate) fn try_template(args: &[&str]) -> Result<Vec<Value>, String> {
    try_template_as(RELEASE, NAMESPACE, args)
}

/// `helm template RELEASE CHART -n NAMESPACE ARGS...`.
pub(crate) fn try_template_as(
    release: &str,
    namespace: &str,
    args: &[&str],
) -> Result<Vec<Value>, String> {
    let out = Command::new(helm())
        .args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(yaml_documents(&String::from_utf8(out.stdout).unwrap()))
}

pub(crate) fn template(args: &[&str]) -> Vec<Value> {
    try_template(args).unwrap_or_else(|e| panic!("helm template {args:?} failed:\n{e}"))
}

/// Values from a JSON (YAML) text, passed as a file.
pub(super) struct ValuesFile(tempfile::TempDir);

impl ValuesFile {
    pub(super) fn new(text: &str) -> ValuesFile {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("values.yaml"), text).unwrap();
        ValuesFile(dir)
    }

    pub(super) fn path(&self) -> String {
        self.0.path().join("values.yaml").display().to_string()
    }
}

/// Validates the rendering like the kustomize output; the chart's CRD kinds only need to be named.
pub(crate) fn validate_rendering(label: &str, docs: &[Value]) {
    let is_chart_crd = |d: &Value| {
        CHART_CRD_KINDS
            .iter()
            .any(|(api, kind)| d["apiVersion"] == *api && d["kind"] == *kind)
    };
    for doc in docs.iter().filter(|d| is_chart_crd(d)) {
        assert!(
            doc["metadata"]["name"].is_string() && doc["spec"].is_object(),
            "{label}: {}",
            short(doc)
        );
    }
    let builtin: Vec<Value> = docs.iter().filter(|d| !is_chart_crd(d)).cloned().collect();
    schema_validate(label, &builtin);
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

fn pod_spec(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]
}

fn mounted_tls_secret(docs: &[Value]) -> String {
    pod_spec(docs)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .map(|v| str_at(v, "/secret/secretName").to_string())
        .expect("a tls volume")
}

/// `stage-guard certs` into `dir` for the chart's Service; returns the caBundle it printed.
fn stage_guard_certs(dir: &Path) -> String {
    let out = Command::new(stage_guard_bin())
        .args([
            "certs",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stage-guard certs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(dir.join("ca-bundle"), &out.stdout).unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The documented static-certificates install: PEMs and the CA bundle with --set-file.
fn static_args(dir: &Path) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        "--set".into(),
        "certificates.mode=static".into(),
        "--set-file".into(),
        format!("certificates.static.tlsCrt={}", file("tls.crt")),
        "--set-file".into(),
        format!("certificates.static.tlsKey={}", file("tls.key")),
        "--set-file".into(),
        format!("certificates.static.caBundle={}", file("ca-bundle")),
    ]
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

// === lint ===

#[test]
fn helm_lint_is_clean_and_strict() {
    for strict in [false, true] {
        let mut cmd = Command::new(helm());
        cmd.arg("lint");
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.arg(chart()).output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "helm lint (strict {strict}):\n{report}"
        );
        assert!(
            report.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint (strict {strict}):\n{report}"
        );
        // Lint's informational notes are fine; warnings and errors are not.
        assert!(
            !report.contains("[WARNING]") && !report.contains("[ERROR]"),
            "helm lint (strict {strict}):\n{report}"
        );
    }
}

/// The chart's NOTES after `helm install --dry-run=client` with `args`.
pub(crate) fn notes(args: &[&str]) -> String {
    let out = Command::new(helm())
        .args(["install", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--dry-run=client"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install --dry-run=client {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, notes) = text.split_once("NOTES:").expect("NOTES in the output");
    notes.to_string()
}

#[test]
fn notes_give_the_second_step_of_the_two_step_install() {
    let step = format!(
        "helm upgrade {RELEASE} {CHART} -n {NAMESPACE} --reuse-values --set webhooks.enabled=true"
    );
    let first = notes(&["--set", "webhooks.enabled=false"]);
    assert!(first.contains(&step), "{first}");
    let second = notes(&[]);
    assert!(!second.contains(&step), "{second}");
    assert!(
        second.contains("rollout status deployment/stage-guard"),
        "{second}"
    );
}

#[test]
fn chart_app_version_is_the_crate_version_and_the_default_image_tag() {
    let chart_yaml: Value =
        serde_saphyr::from_str(&fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let crate_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(str_at(&chart_yaml, "/appVersion"), crate_version);
    let docs = template(&[]);
    let container = the_container(find(&docs, "Deployment", RELEASE));
    assert_eq!(container["image"], format!("stage-guard:{crate_version}"));
}

// === every mode and option renders objects the schemas accept ===

#[test]
fn every_mode_and_option_renders_objects_the_schemas_accept() {
    let certs = tempfile::tempdir().unwrap();
    let bundle = stage_guard_certs(certs.path());
    let renamed = ValuesFile::new(RENAMED_CONFIG);
    let renamed = renamed.path();
    let statics = static_args(certs.path());
    let existing = format!("certificates.existingSecret.caBundle={bundle}");
    let url_bundle = format!("webhooks.caBundle={bundle}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("chart-defaults", vec![]),
        ("chart-static", as_strs(&statics)),
        (
            "chart-existing-secret",
            vec![
                "--set",
                "certificates.mode=existingSecret",
                "--set",
                "certificates.existingSecret.name=my-serving-cert",
                "--set",
                &existing,
            ],
        ),
        (
            "chart-network-policy",
            vec!["--set", "networkPolicy.enabled=true"],
        ),
        (
            "chart-service-monitor",
            vec!["--set", "serviceMonitor.enabled=true"],
        ),
        (
            "chart-priority-class",
            vec!["--set", "priorityClassName=system-cluster-critical"],
        ),
        (
            "chart-digest",
            vec![
                "--set",
                "image.repository=registry.example.com/stage-guard",
                "--set",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ],
        ),
        (
            "chart-url",
            vec![
                "--set",
                "webhooks.url=https://127.0.0.1:8443",
                "--set",
                &url_bundle,
            ],
        ),
        ("chart-renamed-keys", vec!["-f", &renamed]),
        (
            "chart-without-webhooks",
            vec!["--set", "webhooks.enabled=false"],
        ),
    ];
    for (label, args) in cases {
        let docs = template(&args);
        for doc in &docs {
            if doc["kind"] != MUTATING && doc["kind"] != VALIDATING {
                assert_eq!(
                    doc["metadata"]["namespace"],
                    NAMESPACE,
                    "{label}: {} is not in the release namespace",
                    short(&doc["metadata"])
                );
            }
        }
        validate_rendering(label, &docs);
    }
}

// === the defaults: what deploy/base renders ===

/// A webhook without the fields that differ by design between the chart and the kustomize base.
fn comparable_webhook(hook: &Value, base_has_object_selector: bool) -> Value {
    let mut hook = hook.clone();
    let fields = hook.as_object_mut().unwrap();
    fields.remove("clientConfig");
    if !base_has_object_selector {
        fields.remove("objectSelector");
    }
    hook
}

#[test]
fn default_values_render_what_deploy_base_renders() {
    let chart = template(&[]);
    let base = kustomize(&deploy_dir().join("base"));

    // The webhooks: rules, selectors, matchConditions, timeouts, policies. Only clientConfig differs
    // (the base has no caBundle; the overlays add it), and objectSelector while the base has none.
    for kind in [MUTATING, VALIDATING] {
        let base_hook = webhook(&base, kind);
        let base_has_object_selector = base_hook.get("objectSelector").is_some();
        assert_eq!(
            comparable_webhook(webhook(&chart, kind), base_has_object_selector),
            comparable_webhook(base_hook, base_has_object_selector),
            "{kind}: the chart's defaults and deploy/base disagree"
        );
        assert_eq!(
            webhook(&chart, kind)["clientConfig"]["service"],
            base_hook["clientConfig"]["service"],
            "{kind}"
        );
    }

    // The Deployment: replicas, rollout, pod and container hardening, probes, ports, args, mounts.
    let (c_dep, b_dep) = (
        find(&chart, "Deployment", RELEASE),
        find(&base, "Deployment", RELEASE),
    );
    for pointer in [
        "/spec/replicas",
        "/spec/strategy",
        "/spec/revisionHistoryLimit",
    ] {
        assert_eq!(c_dep.pointer(pointer), b_dep.pointer(pointer), "{pointer}");
    }
    let (c_pod, b_pod) = (pod_spec(&chart), pod_spec(&base));
    for key in [
        "securityContext",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
    ] {
        assert_eq!(c_pod[key], b_pod[key], "pod {key}");
    }
    let (c_box, b_box) = (the_container(c_dep), the_container(b_dep));
    for key in [
        "image",
        "imagePullPolicy",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "ports",
        "resources",
        "volumeMounts",
    ] {
        assert_eq!(c_box[key], b_box[key], "container {key}");
    }
    // The chart adds --log-level; every flag of the base is there with the same value.
    let (c_flags, b_flags) = (
        flags(&strings(&c_box["args"])),
        flags(&strings(&b_box["args"])),
    );
    for (flag, value) in &b_flags {
        assert_eq!(c_flags.get(flag), Some(value), "{flag}");
    }
    assert_eq!(c_flags["--log-level"], "info");
    // Spread the same way; the chart's selector names its own pods.
    let pod_labels = &c_dep["spec"]["template"]["metadata"]["labels"];
    let spread = |pod: &Value, check_selector: bool| -> Vec<Value> {
        pod["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                if check_selector {
                    assert!(labels_match(&c["labelSelector"]["matchLabels"], pod_labels));
                }
                let mut c = c.clone();
                c.as_object_mut().unwrap().remove("labelSelector");
                c
            })
            .collect()
    };
    assert_eq!(spread(c_pod, true), spread(b_pod, false));
    assert!(labels_match(
        &c_dep["spec"]["selector"]["matchLabels"],
        pod_labels
    ));

    // Service ports, PodDisruptionBudget, ServiceAccount.
    let service_ports = |docs: &[Value], container: &Value| -> Vec<(String, i64, i64)> {
        find(docs, "Service", SERVICE)["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    str_at(p, "/name").to_string(),
                    p["port"].as_i64().unwrap(),
                    resolve_port(container, &p["targetPort"]),
                )
            })
            .collect()
    };
    assert_eq!(service_ports(&chart, c_box), service_ports(&base, b_box));
    let service = find(&chart, "Service", SERVICE);
    assert!(labels_match(&service["spec"]["selector"], pod_labels));
    let pdb = find(&chart, "PodDisruptionBudget", RELEASE);
    assert_eq!(
        pdb["spec"]["minAvailable"],
        find(&base, "PodDisruptionBudget", RELEASE)["spec"]["minAvailable"]
    );
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(
        find(&chart, "ServiceAccount", RELEASE)["automountServiceAccountToken"],
        false
    );

    // The stage configuration, and the TLS Secret the pods mount.
    assert_eq!(
        normalized(&configmap_config(&chart)),
        normalized(&configmap_config(&base))
    );
    assert_eq!(mounted_tls_secret(&chart), TLS_SECRET);
}

#[test]
fn default_config_is_the_built_in_default_and_passes_config_check() {
    let docs = template(&[]);
    let shipped = configmap_config(&docs);
    let out = Command::new(stage_guard_bin())
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        normalized(&shipped),
        normalized(&String::from_utf8(out.stdout).unwrap()),
        "the chart's config differs from `stage-guard config default`"
    );
    config_check(&shipped);
}

// === the configuration decides which requests reach the webhooks ===

#[test]
fn object_selector_and_match_conditions_follow_the_default_configuration() {
    let docs = template(&[]);
    let keys = stage_keys(&normalized(&configmap_config(&docs)));
    assert_eq!(keys.label, default_keys().label);
    let renamed: Value = serde_json::from_str(RENAMED_CONFIG).unwrap();
    check_selection_follows(&docs, &keys, &stage_keys(&renamed["config"]));
}

#[test]
fn renamed_keys_reach_the_configmap_the_object_selector_and_the_match_conditions() {
    let values = ValuesFile::new(RENAMED_CONFIG);
    let docs = template(&["-f", &values.path()]);
    let shipped = configmap_config(&docs);
    config_check(&shipped);
    let config = normalized(&shipped);
    let keys = stage_keys(&config);
    assert_eq!(keys.label, "example.com/phase");
    assert_eq!(keys.history, "example.com/phase-log");
    assert_eq!(keys.override_reason, "example.com/force-because");
    // The values replace the default's stage list and graph; unnamed keys keep their defaults.
    assert_eq!(strings(&config["stages"]), ["draft", "review", "done"]);
    assert_eq!(strings(&config["transitions"]["review"]), ["done", "draft"]);
    assert_eq!(config["mode"], "enforce");
    check_selection_follows(&docs, &keys, &default_keys());
}

#[test]
fn a_config_change_rolls_the_pods_and_nothing_else_does() {
    let checksum = |args: &[&str]| {
        let docs = template(args);
        str_at(
            find(&docs, "Deployment", RELEASE),
            "/spec/template/metadata/annotations/checksum~1config",
        )
        .to_string()
    };
    let default = checksum(&[]);
    assert_eq!(checksum(&["--set", "replicaCount=3"]), default);
    assert_eq!(checksum(&["--set", "webhooks.timeoutSeconds=7"]), default);
    assert_ne!(checksum(&["--set", "config.mode=warn"]), default);
    assert_ne!(
        checksum(&["--set", "config.override.users[0]=release-bot"]),
        default
    );
}

// === the modes ===

#[test]
fn cert_manager_mode_issues_the_mounted_secret_and_injects_its_ca() {
    let docs = template(&[]);
    let serving: Vec<&Value> = all_of(&docs, "Certificate")
        .into_iter()
        .filter(|c| c["spec"]["secretName"] == mounted_tls_secret(&docs).as_str())
        .collect();
    assert_eq!(serving.len(), 1, "one Certificate for the mounted Secret");
    let serving = serving[0];
    let dns = strings(&serving["spec"]["dnsNames"]);
    for name in [
        format!("{SERVICE}.{NAMESPACE}.svc"),
        format!("{SERVICE}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(dns.contains(&name), "dnsNames lack {name}");
    }
    let ca_issuer = find(&docs, "Issuer", str_at(serving, "/spec/issuerRef/name"));
    let ca_secret = str_at(ca_issuer, "/spec/ca/secretName");
    let ca_cert = all_of(&docs, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .expect("a Certificate for the CA secret");
    assert_eq!(ca_cert["spec"]["isCA"], true);
    let root = find(&docs, "Issuer", str_at(ca_cert, "/spec/issuerRef/name"));
    assert!(root["spec"]["selfSigned"].is_object());
    let expected = format!("{NAMESPACE}/{}", str_at(serving, "/metadata/name"));
    for kind in [MUTATING, VALIDATING] {
        let config = find(&docs, kind, RELEASE);
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            expected.as_str(),
            "{kind}"
        );
        assert!(
            webhook(&docs, kind)["clientConfig"]
                .get("caBundle")
                .is_none(),
            "{kind}: the injector fills caBundle"
        );
    }
    assert!(
        all_of(&docs, "Secret").is_empty(),
        "cert-manager writes the Secret"
    );
}

#[test]
fn static_mode_carries_the_pems_of_stage_guard_certs() {
    let certs = tempfile::tempdir().unwrap();
    let bundle = stage_guard_certs(certs.path());
    let docs = template(&as_strs(&static_args(certs.path())));
    let secret = find(&docs, "Secret", TLS_SECRET);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key"] {
        assert_eq!(
            str_at(secret, &format!("/data/{key}")),
            b64(&fs::read(certs.path().join(key)).unwrap()),
            "{key}"
        );
    }
    assert_eq!(mounted_tls_secret(&docs), TLS_SECRET);
    assert_eq!(bundle, b64(&fs::read(certs.path().join("ca.crt")).unwrap()));
    for kind in [MUTATING, VALIDATING] {
        assert_eq!(
            str_at(webhook(&docs, kind), "/clientConfig/caBundle"),
            bundle,
            "{kind}"
        );
        assert!(find(&docs, kind, RELEASE)["metadata"]["annotations"].is_null());
    }
    for kind in ["Certificate", "Issuer"] {
        assert!(all_of(&docs, kind).is_empty(), "no {kind} in static mode");
    }
    let rendered = serde_json::to_string(&docs).unwrap();
    let ca_key = fs::read(certs.path().join("ca.key")).unwrap();
    assert!(
        !rendered.contains(&b64(&ca_key)),
        "ca.key reached the output"
    );
}

#[test]
fn existing_secret_mode_mounts_that_secret_and_creates_none() {
    let certs = tempfile::tempdir().unwrap();
    let bundle = stage_guard_certs(certs.path());
    let docs = template(&[
        "--set",
        "certificates.mode=existingSecret",
        "--set",
        "certificates.existingSecret.name=my-serving-cert",
        "--set",
        &format!("certificates.existingSecret.caBundle={bundle}"),
    ]);
    assert_eq!(mounted_tls_secret(&docs), "my-serving-cert");
    for kind in ["Secret", "Certificate", "Issuer"] {
        assert!(all_of(&docs, kind).is_empty(), "no {kind}");
    }
    for kind in [MUTATING, VALIDATING] {
        assert_eq!(
            str_at(webhook(&docs, kind), "/clientConfig/caBundle"),
            bundle
        );
    }
}

#[test]
fn url_mode_calls_the_url_with_its_ca_bundle_instead_of_the_service() {
    let certs = tempfile::tempdir().unwrap();
    let bundle = stage_guard_certs(certs.path());
    let docs = template(&[
        "--set",
        "webhooks.url=https://127.0.0.1:18443/",
        "--set",
        &format!("webhooks.caBundle={bundle}"),
    ]);
    for (kind, path) in [(MUTATING, "/mutate"), (VALIDATING, "/validate")] {
        let client = &webhook(&docs, kind)["clientConfig"];
        assert_eq!(
            client,
            &json!({"url": format!("https://127.0.0.1:18443{path}"), "caBundle": bundle}),
            "{kind}"
        );
        assert!(
            find(&docs, kind, RELEASE)["metadata"]["annotations"].is_null(),
            "{kind}: no CA injection for a URL"
        );
    }
}

#[test]
fn webhooks_disabled_renders_everything_but_the_configurations() {
    let with = template(&[]);
    let without = template(&["--set", "webhooks.enabled=false"]);
    let mut expected = kinds(&with);
    expected.remove(MUTATING);
    expected.remove(VALIDATING);
    assert_eq!(kinds(&without), expected);
    for kind in [MUTATING, VALIDATING] {
        assert_eq!(
            find(&with, kind, RELEASE)["metadata"]["labels"]["app.kubernetes.io/component"],
            "webhook-configuration"
        );
    }
}

#[test]
fn webhook_knobs_and_namespace_exclusions() {
    // Another release name in another namespace: the names and the exclusion follow them.
    let docs = try_template_as(
        "guard",
        "guards",
        &[
            "--set",
            "webhooks.failurePolicy=Ignore",
            "--set",
            "webhooks.timeoutSeconds=3",
            "--set",
            "webhooks.namespaceSelector.matchLabels.stage-guard=on",
            "--set",
            "webhooks.namespaceSelector.matchExpressions[0].key=tier",
            "--set",
            "webhooks.namespaceSelector.matchExpressions[0].operator=NotIn",
            "--set",
            "webhooks.namespaceSelector.matchExpressions[0].values[0]=system",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for kind in [MUTATING, VALIDATING] {
        let config = find(&docs, kind, "guard-stage-guard");
        let hook = &config["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["timeoutSeconds"], 3);
        assert_eq!(
            hook["namespaceSelector"],
            json!({
                "matchLabels": {"stage-guard": "on"},
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["guards", "kube-system"]},
                    {"key": "tier", "operator": "NotIn", "values": ["system"]},
                ]
            }),
            "{kind}"
        );
        assert_eq!(
            hook["clientConfig"]["service"],
            json!({"name": "guard-stage-guard", "namespace": "guards", "path": hook["clientConfig"]["service"]["path"], "port": 443})
        );
    }
}

// === the options ===

#[test]
fn network_policy_admits_the_webhook_port_from_its_peers_and_metrics_from_prometheus() {
    let docs = template(&["--set", "networkPolicy.enabled=true"]);
    let deployment = find(&docs, "Deployment", RELEASE);
    let container = the_container(deployment);
    let policy = find(&docs, "NetworkPolicy", RELEASE);
    assert!(labels_match(
        &policy["spec"]["podSelector"]["matchLabels"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    assert_eq!(strings(&policy["spec"]["policyTypes"]), ["Ingress"]);
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let rule_for = |port: i64| {
        rules
            .iter()
            .find(|r| {
                r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| resolve_port(container, &p["port"]) == port)
            })
            .unwrap_or_else(|| panic!("no rule for port {port}"))
    };
    assert_eq!(rules.len(), 2);
    // By default any source reaches the webhook port: the API server is no pod.
    assert!(rule_for(WEBHOOK_PORT).get("from").is_none());
    assert_eq!(
        rule_for(ADMIN_PORT)["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );

    // Restricted to the control plane's addresses.
    let docs = template(&[
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24",
    ]);
    let policy = find(&docs, "NetworkPolicy", RELEASE);
    assert_eq!(
        policy["spec"]["ingress"][0]["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.0/24"}}])
    );
    validate_rendering("chart-network-policy-cidr", &docs);
    assert!(
        all_of(&template(&[]), "NetworkPolicy").is_empty(),
        "off by default"
    );
}

#[test]
fn service_monitor_scrapes_the_services_metrics_port() {
    let docs = template(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "serviceMonitor.interval=15s",
    ]);
    let monitor = find(&docs, "ServiceMonitor", RELEASE);
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let service = find(&docs, "Service", SERVICE);
    assert!(labels_match(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [NAMESPACE]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    let metrics = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port on the Service");
    let container = the_container(find(&docs, "Deployment", RELEASE));
    assert_eq!(resolve_port(container, &metrics["targetPort"]), ADMIN_PORT);
    assert!(
        all_of(&template(&[]), "ServiceMonitor").is_empty(),
        "off by default"
    );
}

#[test]
fn scheduling_and_image_values_reach_the_pods() {
    let docs = template(&[
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "image.repository=registry.example.com/stage-guard",
        "--set",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--set",
        "image.tag=ignored-when-a-digest-is-set",
        "--set",
        "imagePullSecrets[0].name=registry-login",
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux",
        "--set",
        "replicaCount=3",
        "--set",
        "logLevel=debug",
        "--set",
        "logFormat=text",
    ]);
    let deployment = find(&docs, "Deployment", RELEASE);
    let pod = pod_spec(&docs);
    let container = the_container(deployment);
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        container["image"],
        "registry.example.com/stage-guard@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "registry-login"}]));
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(deployment["spec"]["replicas"], 3);
    let flags = flags(&strings(&container["args"]));
    assert_eq!(flags["--log-level"], "debug");
    assert_eq!(flags["--log-format"], "text");
    let defaults = template(&[]);
    assert!(pod_spec(&defaults).get("priorityClassName").is_none());
    assert!(pod_spec(&defaults).get("imagePullSecrets").is_none());
}

// === bad values ===

#[test]
fn bad_values_fail_with_a_message_naming_the_value() {
    let certs = tempfile::tempdir().unwrap();
    stage_guard_certs(certs.path());
    let crt = format!(
        "certificates.static.tlsCrt={}",
        certs.path().join("tls.crt").display()
    );
    let key = format!(
        "certificates.static.tlsKey={}",
        certs.path().join("tls.key").display()
    );
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["--set", "certificates.mode=nonsense"],
            &["certificates/mode", "cert-manager"],
        ),
        (
            vec!["--set", "certificates.mode=static"],
            &["certificates.static.tlsCrt"],
        ),
        (
            vec!["--set", "certificates.mode=static", "--set-file", &crt],
            &["certificates.static.tlsKey"],
        ),
        (
            vec![
                "--set",
                "certificates.mode=static",
                "--set-file",
                &crt,
                "--set-file",
                &key,
            ],
            &["certificates.static.caBundle is required"],
        ),
        (
            vec![
                "--set",
                "certificates.mode=static",
                "--set-file",
                &crt,
                "--set-file",
                &key,
                "--set",
                "certificates.static.caBundle=bm90IGEgY2VydGlmaWNhdGU=",
            ],
            &["certificates.static.caBundle is not a base64-encoded PEM certificate"],
        ),
        (
            vec!["--set", "certificates.mode=existingSecret"],
            &["certificates.existingSecret.name"],
        ),
        (vec!["--set", "config.label=bad'key"], &["config/label"]),
        (vec!["--set", "config.mode=strict"], &["config/mode"]),
        (vec!["--set", "config.stages=null"], &["stages"]),
        (vec!["--set", "replicas=3"], &["replicas"]),
        (
            vec!["--set", "webhooks.url=http://127.0.0.1:8443"],
            &["webhooks/url"],
        ),
        (
            vec!["--set", "webhooks.failurePolicy=Sometimes"],
            &["webhooks/failurePolicy"],
        ),
    ];
    for (args, expected) in cases {
        let err = try_template(&args)
            .err()
            .unwrap_or_else(|| panic!("helm template {args:?} rendered"));
        for word in expected {
            assert!(err.contains(word), "helm template {args:?}: {err}");
        }
        assert!(!err.contains("panic"), "{err}");
    }
}

/// A configuration with pipelines renders into a ConfigMap the server accepts, with and without the
/// default pipeline, and the webhooks' selection still follows the (one) stage label.
#[test]
fn pipeline_configurations_render_and_check() {
    let with_default = r#"{"config": {"pipelines": [
        {"name": "qa-loop", "match": {"labels": {"workflows.argoproj.io/workflow-template": "qa"}},
         "stages": ["implementing", "reviewing", "testing"],
         "transitions": {"implementing": ["reviewing"], "reviewing": ["testing", "implementing"]},
         "mode": "warn"},
        {"name": "docs", "match": {"namespaces": ["docs"]}, "stages": ["draft", "published"]}]}}"#;
    let without_default = r#"{"config": {"stages": null, "pipelines": [
        {"name": "docs", "match": {"namespaces": ["docs"]}, "stages": ["draft", "published"]}]}}"#;
    for (what, values) in [("with", with_default), ("without", without_default)] {
        let file = ValuesFile::new(values);
        let docs = template(&["-f", &file.path()]);
        let shipped = configmap_config(&docs);
        config_check(&shipped);
        let config = normalized(&shipped);
        assert_eq!(
            config["pipelines"].as_array().map(Vec::len),
            Some(if what == "with" { 2 } else { 1 }),
            "{what} a default: {shipped}"
        );
        assert_eq!(config["stages"].is_null(), what == "without", "{shipped}");
        check_selection_follows(&docs, &stage_keys(&config), &renamed_keys());
    }
}

fn renamed_keys() -> StageKeys {
    let renamed: Value = serde_json::from_str(RENAMED_CONFIG).unwrap();
    stage_keys(&renamed["config"])
}
