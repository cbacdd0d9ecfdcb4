//! The manifests in `deploy/`, checked as the cluster would see them.
//!
//! Every kustomization is rendered with the real `kubectl kustomize`, validated against the Kubernetes
//! OpenAPI schemas with `kubernetes-validate` (strict; only CRD kinds are exempt), and then read field
//! by field against SPEC sections 5, 6, 9 and 10. The webhooks' `matchConditions` are taken from the
//! rendered configurations and evaluated with a CEL interpreter against AdmissionReview fixtures
//! (`tests/fixtures/match/`) and against every combination of the stage label and the stage-guard
//! annotations being absent, present or changed.
//!
//! Tools: `kubectl` (with kustomize) and `kubernetes-validate`, which the test environment installs
//! into a virtual environment of its own on first use (`tests/testenv/src/tools.rs`), and, for the
//! monitoring package (`monitoring.rs`), `promtool` (`.ci/install-promtool`). A missing tool fails the
//! test with a message naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};

mod helm;
mod krew;
mod monitor;
mod monitoring;

const NAMESPACE: &str = "stage-guard";
const SERVICE: &str = "stage-guard";
const TLS_SECRET: &str = "stage-guard-tls";
const WEBHOOK_PORT: i64 = 8443;
const ADMIN_PORT: i64 = 8080;
const MUTATING: &str = "MutatingWebhookConfiguration";
const VALIDATING: &str = "ValidatingWebhookConfiguration";

/// Kinds without a schema in kubernetes-validate (custom resources); everything else is validated.
const CRD_KINDS: &[(&str, &str)] = &[
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("argoproj.io/v1alpha1", "WorkflowTemplate"),
    ("argoproj.io/v1alpha1", "Sensor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// The oldest Kubernetes the manifests claim (matchConditions are GA in 1.30) and a recent one.
const KUBERNETES_VERSIONS: &[&str] = &["1.31.0", "1.35.0"];

// === tools ===

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

/// The real kubectl (a missing one fails the test with a message naming it).
fn kubectl() -> PathBuf {
    stage_guard_testenv::tools::kubectl().unwrap_or_else(|e| panic!("{e:#}"))
}

/// `kubectl kustomize DIR`, parsed into one JSON value per document.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout).unwrap())
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn read_yaml_file(path: &Path) -> Vec<Value> {
    yaml_documents(&fs::read_to_string(path).unwrap())
}

fn is_crd_kind(doc: &Value) -> bool {
    CRD_KINDS
        .iter()
        .any(|(api, kind)| doc["apiVersion"] == *api && doc["kind"] == *kind)
}

/// Validates every document that is not a listed CRD kind against the Kubernetes schemas, strictly
/// (unknown fields are errors), for each version in KUBERNETES_VERSIONS. A kind without a schema is an
/// error too, so a typo in apiVersion cannot pass as "custom resource".
fn schema_validate(label: &str, docs: &[Value]) {
    let validator = stage_guard_testenv::tools::kubernetes_validate()
        .unwrap_or_else(|e| panic!("kubernetes-validate: {e:#}"));
    let builtin: Vec<&Value> = docs.iter().filter(|d| !is_crd_kind(d)).collect();
    assert!(!builtin.is_empty(), "{label}: nothing to validate");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{label}.yaml"));
    let body: Vec<String> = builtin
        .iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect();
    fs::write(&file, body.join("\n---\n")).unwrap();

    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{label}: schema validation against {version} failed:\n{report}"
        );
        let problems: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("INFO ")).collect();
        assert!(
            problems.is_empty(),
            "{label}: kubernetes-validate {version} reported:\n{report}"
        );
        for doc in &builtin {
            let id = format!(
                "{}/{}",
                str_at(doc, "/kind").to_lowercase(),
                str_at(doc, "/metadata/name")
            );
            assert!(
                stdout
                    .lines()
                    .any(|l| l.contains(&format!("passed for resource {id} "))),
                "{label}: {id} was not validated against {version}:\n{report}"
            );
        }
    }
}

// === reading documents ===

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {}", short(v)))
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    text.chars().take(300).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}/{name}");
    found[0]
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {}", short(v)))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(wanted) = selector.as_object() else {
        return false;
    };
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `--flag value` pairs of an argument list (the first argument is the subcommand).
fn flags(args: &[String]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut it = args.iter().skip(1);
    while let Some(flag) = it.next() {
        assert!(flag.starts_with("--"), "unexpected argument {flag}");
        if let Some((k, v)) = flag.split_once('=') {
            map.insert(k.to_string(), v.to_string());
        } else {
            map.insert(flag.clone(), it.next().unwrap().clone());
        }
    }
    map
}

fn the_container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container expected");
    &containers[0]
}

/// A probe or Service port, numeric or named, resolved against the container's ports.
fn resolve_port(container: &Value, port: &Value) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = port.as_str().unwrap();
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("port {name} is not a container port"))
}

fn webhook<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let config = find(docs, kind, "stage-guard");
    let hooks = config["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{kind}: one webhook expected");
    &hooks[0]
}

// === the stage configuration ===

/// The configuration the ConfigMap carries, as YAML text.
fn configmap_config(docs: &[Value]) -> String {
    let maps: Vec<&Value> = all_of(docs, "ConfigMap");
    assert_eq!(maps.len(), 1, "one ConfigMap expected in the output");
    assert!(str_at(maps[0], "/metadata/name").starts_with("stage-guard-config"));
    str_at(maps[0], "/data/config.yaml").to_string()
}

/// A configuration with SPEC 2's defaults made explicit, so two spellings of the same configuration
/// compare equal: `entry` (the first stage) and `transitions` (each stage to the next), final stages
/// without an edge list.
fn normalized(config_yaml: &str) -> Value {
    let mut config: Value = serde_saphyr::from_str(config_yaml).unwrap();
    if !config["stages"].is_array() {
        // Pipelines only: no top-level graph to fill in.
        return config;
    }
    let stages = strings(&config["stages"]);
    let object = config.as_object_mut().unwrap();
    object
        .entry("entry")
        .or_insert_with(|| json!([stages[0].clone()]));
    let chain: serde_json::Map<String, Value> = stages
        .windows(2)
        .map(|w| (w[0].clone(), json!([w[1].clone()])))
        .collect();
    let transitions = object
        .entry("transitions")
        .or_insert_with(|| Value::Object(chain));
    transitions
        .as_object_mut()
        .unwrap()
        .retain(|_, to| to.as_array().is_some_and(|edges| !edges.is_empty()));
    config
}

struct StageKeys {
    label: String,
    history: String,
    override_reason: String,
}

fn stage_keys(config: &Value) -> StageKeys {
    StageKeys {
        label: str_at(config, "/label").to_string(),
        history: str_at(config, "/history/annotation").to_string(),
        override_reason: str_at(config, "/override/annotation").to_string(),
    }
}

fn stage_guard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_stage-guard")
}

// === CEL ===

fn match_conditions(hook: &Value) -> Vec<(String, String)> {
    hook["matchConditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no matchConditions in {}", str_at(hook, "/name")))
        .iter()
        .map(|c| {
            (
                str_at(c, "/name").to_string(),
                str_at(c, "/expression").to_string(),
            )
        })
        .collect()
}

/// The conditions compiled once, as the API server does when the configuration is written.
fn compile(conditions: &[(String, String)]) -> Vec<(String, cel::Program)> {
    conditions
        .iter()
        .map(|(name, expression)| {
            let program = cel::Program::compile(expression)
                .unwrap_or_else(|e| panic!("condition {name} does not compile: {e}"));
            (name.clone(), program)
        })
        .collect()
}

/// What the API server does with `conditions` for one request: `Ok(true)` sends it to the webhook
/// (every condition true), `Ok(false)` skips it (one false); an evaluation error is `Err`.
fn api_server_sends(
    conditions: &[(String, cel::Program)],
    review_request: &Value,
) -> Result<bool, String> {
    let mut request = review_request.clone();
    let fields = request.as_object_mut().unwrap();
    let object = fields.remove("object").unwrap_or(Value::Null);
    let old_object = fields.remove("oldObject").unwrap_or(Value::Null);
    let mut context = cel::Context::default();
    context.add_variable("object", &object).unwrap();
    context.add_variable("oldObject", &old_object).unwrap();
    context.add_variable("request", &request).unwrap();
    let mut sends = true;
    for (name, program) in conditions {
        match program.execute(&context) {
            Ok(cel::Value::Bool(value)) => sends &= value,
            Ok(other) => return Err(format!("condition {name} gave a non-bool: {other:?}")),
            Err(e) => return Err(format!("condition {name} failed: {e:?}")),
        }
    }
    Ok(sends)
}

/// A webhook's objectSelector as the API server applies it: the request is sent when the object or
/// the old object matches (matchLabels, and matchExpressions with In, NotIn, Exists, DoesNotExist).
fn selected(hook: &Value, request: &Value) -> bool {
    let selector = &hook["objectSelector"];
    if selector.is_null() {
        return true;
    }
    let matches = |object: &Value| {
        if object.is_null() {
            return false;
        }
        let labels = &object["metadata"]["labels"];
        let value = |key: &str| labels.get(key).and_then(Value::as_str);
        let by_labels = selector["matchLabels"]
            .as_object()
            .is_none_or(|m| m.iter().all(|(k, v)| value(k) == v.as_str()));
        let by_expressions = selector["matchExpressions"].as_array().is_none_or(|es| {
            es.iter().all(|e| {
                let key = e["key"].as_str().unwrap();
                let values = if e["values"].is_null() {
                    Vec::new()
                } else {
                    strings(&e["values"])
                };
                match e["operator"].as_str().unwrap() {
                    "Exists" => value(key).is_some(),
                    "DoesNotExist" => value(key).is_none(),
                    "In" => value(key).is_some_and(|v| values.iter().any(|x| x == v)),
                    "NotIn" => !value(key).is_some_and(|v| values.iter().any(|x| x == v)),
                    other => panic!("unknown selector operator {other}"),
                }
            })
        });
        by_labels && by_expressions
    };
    matches(&request["object"]) || matches(&request["oldObject"])
}

/// The API server's whole choice for one webhook: objectSelector, then matchConditions.
fn api_server_calls(
    hook: &Value,
    conditions: &[(String, cel::Program)],
    request: &Value,
) -> Result<bool, String> {
    if !selected(hook, request) {
        return Ok(false);
    }
    api_server_sends(conditions, request)
}

/// What the selection is meant to do, written plainly: only writes to an object that carries the
/// stage label before or after; of those, CREATE always, and an UPDATE only when the stage label or
/// one of the two annotations differs in presence or value.
fn should_send(request: &Value, keys: &StageKeys) -> bool {
    let labelled = |side: &str| {
        request[side]["metadata"]["labels"]
            .get(&keys.label)
            .is_some()
    };
    if !labelled("object") && !labelled("oldObject") {
        return false;
    }
    if request["operation"] != "UPDATE" {
        return true;
    }
    let get = |side: &str, map: &str, key: &str| request[side]["metadata"][map].get(key).cloned();
    let changed = |map: &str, key: &str| get("object", map, key) != get("oldObject", map, key);
    changed("labels", &keys.label)
        || changed("annotations", &keys.history)
        || changed("annotations", &keys.override_reason)
}

/// The objectSelector and every matchCondition key follow `keys`, and the conditions send exactly
/// the UPDATEs that change one of them (evaluated with CEL, as the API server would).
pub(crate) fn check_selection_follows(docs: &[Value], keys: &StageKeys, other_keys: &StageKeys) {
    for kind in [MUTATING, VALIDATING] {
        let hook = webhook(docs, kind);
        assert_eq!(
            hook["objectSelector"],
            json!({"matchExpressions": [{"key": keys.label, "operator": "Exists"}]}),
            "{kind}"
        );
        let text: String = match_conditions(hook).into_iter().map(|(_, e)| e).collect();
        let quoted: BTreeSet<String> = text
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        assert_eq!(
            quoted,
            BTreeSet::from([
                "UPDATE".to_string(),
                keys.label.clone(),
                keys.history.clone(),
                keys.override_reason.clone()
            ]),
            "{kind}: the quoted keys of matchConditions"
        );

        let conditions = compile(&match_conditions(hook));
        let object = |labels: Value, annotations: Value| {
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                   "metadata": {"name": "w", "namespace": "argo", "labels": labels, "annotations": annotations}})
        };
        let update = |old: Value, new: Value| {
            json!({"uid": "1", "operation": "UPDATE", "namespace": "argo", "name": "w",
                   "userInfo": {"username": "alice"}, "object": new, "oldObject": old})
        };
        let base_labels = json!({ keys.label.clone(): "a", other_keys.label.clone(): "a" });
        let base_annotations = json!({
            keys.history.clone(): "[]", keys.override_reason.clone(): "r",
            other_keys.history.clone(): "[]", other_keys.override_reason.clone(): "r",
        });
        let old = object(base_labels.clone(), base_annotations.clone());
        let mut cases = vec![("nothing changed", update(old.clone(), old.clone()), false)];
        for (map, key, own) in [
            ("labels", &keys.label, true),
            ("annotations", &keys.history, true),
            ("annotations", &keys.override_reason, true),
            ("labels", &other_keys.label, false),
            ("annotations", &other_keys.history, false),
            ("annotations", &other_keys.override_reason, false),
        ] {
            if !own && [&keys.label, &keys.history, &keys.override_reason].contains(&key) {
                continue;
            }
            let mut changed = old.clone();
            changed["metadata"][map][key.as_str()] = json!("changed");
            cases.push(("changed", update(old.clone(), changed), own));
            let mut removed = old.clone();
            removed["metadata"][map]
                .as_object_mut()
                .unwrap()
                .remove(key.as_str());
            cases.push(("removed", update(old.clone(), removed), own));
        }
        for (what, request, expected) in cases {
            assert_eq!(should_send(&request, keys), expected, "{what}: {request}");
            assert_eq!(
                api_server_sends(&conditions, &request),
                Ok(expected),
                "{kind}, {what}: {request}"
            );
        }
        let create = json!({"uid": "1", "operation": "CREATE", "namespace": "argo",
                            "object": object(json!({}), json!({})), "oldObject": null});
        assert_eq!(api_server_sends(&conditions, &create), Ok(true), "{kind}");
    }
}

pub(crate) fn default_keys() -> StageKeys {
    StageKeys {
        label: "current-stage".into(),
        history: "stage-guard.io/history".into(),
        override_reason: "stage-guard.io/override-reason".into(),
    }
}

// === tests: base ===

#[test]
fn base_renders_and_passes_the_kubernetes_schemas() {
    let docs = kustomize(&deploy_dir().join("base"));
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        MUTATING,
        VALIDATING,
    ] {
        assert!(kinds.contains(kind), "base lacks a {kind}");
    }
    for doc in &docs {
        if doc["kind"] == "Namespace" || doc["kind"] == MUTATING || doc["kind"] == VALIDATING {
            continue;
        }
        assert_eq!(
            doc["metadata"]["namespace"],
            NAMESPACE,
            "{} is not in {NAMESPACE}",
            short(&doc["metadata"])
        );
    }
    assert_eq!(
        find(&docs, "Namespace", NAMESPACE)["metadata"]["name"],
        NAMESPACE
    );
    schema_validate("base", &docs);
}

#[test]
fn deployment_is_replicated_probed_hardened_and_mounts_whole_directories() {
    let docs = kustomize(&deploy_dir().join("base"));
    let deployment = find(&docs, "Deployment", "stage-guard");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let container = the_container(deployment);

    assert!(
        spec["replicas"].as_i64().unwrap() >= 2,
        "at least 2 replicas"
    );
    assert!(labels_match(&spec["selector"]["matchLabels"], pod_labels));

    // Replicas spread over nodes: a hostname topology spread or a hostname anti-affinity.
    let spread_by_host = pod["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["topologyKey"] == "kubernetes.io/hostname"
                && labels_match(&c["labelSelector"]["matchLabels"], pod_labels)
        });
    let anti = &pod["affinity"]["podAntiAffinity"];
    let anti_by_host = [
        "requiredDuringSchedulingIgnoredDuringExecution",
        "preferredDuringSchedulingIgnoredDuringExecution",
    ]
    .iter()
    .flat_map(|k| anti[*k].as_array().into_iter().flatten())
    .any(|term| {
        let term = term.get("podAffinityTerm").unwrap_or(term);
        term["topologyKey"] == "kubernetes.io/hostname"
    });
    assert!(
        spread_by_host || anti_by_host,
        "replicas are not spread over nodes"
    );

    // No API token anywhere.
    assert_eq!(pod["automountServiceAccountToken"], false);
    let account = str_at(pod, "/serviceAccountName");
    assert_eq!(
        find(&docs, "ServiceAccount", account)["automountServiceAccountToken"],
        false
    );

    // Image and arguments.
    assert_eq!(container["image"], "stage-guard:0.1.0");
    let args = strings(&container["args"]);
    assert_eq!(args[0], "serve");
    let flags = flags(&args);
    assert_eq!(flags["--config"], "/etc/stage-guard/config.yaml");
    assert_eq!(flags["--tls-cert-file"], "/etc/stage-guard/tls/tls.crt");
    assert_eq!(flags["--tls-key-file"], "/etc/stage-guard/tls/tls.key");
    assert_eq!(flags["--log-format"], "json");

    // Ports and probes on the admin port.
    let ports: BTreeSet<i64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, BTreeSet::from([WEBHOOK_PORT, ADMIN_PORT]));
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(resolve_port(container, &get["port"]), ADMIN_PORT, "{probe}");
        assert!(
            get["scheme"].is_null() || get["scheme"] == "HTTP",
            "{probe}"
        );
    }

    // Resources.
    let resources = &container["resources"];
    for key in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        assert!(resources.pointer(key).is_some(), "resources{key} missing");
    }

    // Security: container settings, with the pod's as fallback where Kubernetes allows it.
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
    assert!(
        either("runAsUser").as_i64().unwrap() > 0,
        "numeric non-root user"
    );
    assert_eq!(either("seccompProfile")["type"], "RuntimeDefault");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()));

    // The pod outlives the server's drain: shutdown delay + grace (SPEC 9 defaults 5 s + 20 s).
    let secs = |flag: &str, default: i64| {
        flags
            .get(flag)
            .map(|v| v.trim_end_matches('s').parse::<i64>().unwrap())
            .unwrap_or(default)
    };
    let drain = secs("--shutdown-delay", 5) + secs("--shutdown-grace", 20);
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap() > drain,
        "terminationGracePeriodSeconds must exceed {drain}"
    );

    // Config and TLS come from whole-directory mounts (kubelet's atomic swap reaches the files).
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .all(|m| m.get("subPath").is_none() && m.get("subPathExpr").is_none()),
        "no subPath mounts"
    );
    let volume_for = |file: &str| -> (&Value, String) {
        let file = Path::new(file);
        let dir = file.parent().unwrap().to_str().unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"].as_str().unwrap().trim_end_matches('/') == dir)
            .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        (
            volume,
            file.file_name().unwrap().to_str().unwrap().to_string(),
        )
    };
    for flag in ["--tls-cert-file", "--tls-key-file"] {
        let (volume, _) = volume_for(&flags[flag]);
        assert_eq!(volume["secret"]["secretName"], TLS_SECRET, "{flag}");
    }
    let (volume, key) = volume_for(&flags["--config"]);
    let configmap = find(&docs, "ConfigMap", str_at(volume, "/configMap/name"));
    assert!(
        configmap["data"].get(&key).is_some(),
        "the config volume has no {key}"
    );
}

#[test]
fn service_pdb_and_service_account_fit_the_deployment() {
    let docs = kustomize(&deploy_dir().join("base"));
    let deployment = find(&docs, "Deployment", "stage-guard");
    let container = the_container(deployment);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];

    let service = find(&docs, "Service", SERVICE);
    assert!(labels_match(&service["spec"]["selector"], pod_labels));
    let ports = service["spec"]["ports"].as_array().unwrap();
    let https = ports.iter().find(|p| p["port"] == 443).expect("port 443");
    assert_eq!(resolve_port(container, &https["targetPort"]), WEBHOOK_PORT);
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port");
    assert_eq!(metrics["port"], ADMIN_PORT);
    assert_eq!(resolve_port(container, &metrics["targetPort"]), ADMIN_PORT);

    let pdb = find(&docs, "PodDisruptionBudget", "stage-guard");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(
        deployment["spec"]["replicas"].as_i64().unwrap() > 1,
        "minAvailable 1 with one replica would block every drain"
    );

    let account = find(&docs, "ServiceAccount", "stage-guard");
    assert_eq!(account["automountServiceAccountToken"], false);
}

#[test]
fn webhook_configurations_follow_the_contract() {
    let docs = kustomize(&deploy_dir().join("base"));
    let service = find(&docs, "Service", SERVICE);
    let service_ports: Vec<i64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();

    for (kind, name, path) in [
        (MUTATING, "mutate.stage-guard.io", "/mutate"),
        (VALIDATING, "validate.stage-guard.io", "/validate"),
    ] {
        let hook = webhook(&docs, kind);
        assert_eq!(hook["name"], name);

        let target = &hook["clientConfig"]["service"];
        assert_eq!(target["name"], SERVICE, "{name}");
        assert_eq!(target["namespace"], NAMESPACE, "{name}");
        assert_eq!(target["path"], path, "{name}");
        let port = target["port"].as_i64().unwrap_or(443);
        assert_eq!(port, 443, "{name}");
        assert!(
            service_ports.contains(&port),
            "{name}: the Service has no port {port}"
        );
        assert!(hook["clientConfig"].get("url").is_none(), "{name}");

        let rules = hook["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{name}");
        let rule = &rules[0];
        assert_eq!(strings(&rule["apiGroups"]), ["argoproj.io"], "{name}");
        assert_eq!(strings(&rule["apiVersions"]), ["v1alpha1"], "{name}");
        assert_eq!(strings(&rule["resources"]), ["workflows"], "{name}");
        let operations: BTreeSet<String> = strings(&rule["operations"]).into_iter().collect();
        assert_eq!(
            operations,
            BTreeSet::from(["CREATE".to_string(), "UPDATE".to_string()]),
            "{name}"
        );

        assert_eq!(hook["sideEffects"], "None", "{name}");
        assert_eq!(strings(&hook["admissionReviewVersions"]), ["v1"], "{name}");
        let timeout = hook["timeoutSeconds"]
            .as_i64()
            .expect("explicit timeoutSeconds");
        assert!(
            (1..=10).contains(&timeout),
            "{name}: timeoutSeconds {timeout}"
        );
        assert_eq!(hook["failurePolicy"], "Fail", "{name}");
        assert_eq!(hook["matchPolicy"], "Equivalent", "{name}");
        if kind == MUTATING {
            assert_eq!(hook["reinvocationPolicy"], "IfNeeded", "{name}");
        }

        // The webhook's own namespace and kube-system are never judged.
        let excluded: BTreeSet<String> = hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| strings(&e["values"]))
            .collect();
        for ns in [NAMESPACE, "kube-system"] {
            assert!(excluded.contains(ns), "{name} does not exclude {ns}");
        }
        assert!(
            hook["namespaceSelector"].get("matchLabels").is_none(),
            "{name}: matchLabels would narrow the webhook to opt-in namespaces"
        );

        let conditions = match_conditions(hook);
        assert!(!conditions.is_empty() && conditions.len() <= 64, "{name}");
        let names: BTreeSet<&String> = conditions.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names.len(),
            conditions.len(),
            "{name}: duplicate condition names"
        );
    }
    assert_eq!(
        match_conditions(webhook(&docs, MUTATING)),
        match_conditions(webhook(&docs, VALIDATING)),
        "both webhooks must see the same requests"
    );
}

#[test]
fn configmap_holds_the_built_in_default_configuration() {
    let docs = kustomize(&deploy_dir().join("base"));
    let shipped = configmap_config(&docs);

    let out = Command::new(stage_guard_bin())
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stage-guard config default failed");
    let built_in = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        normalized(&shipped),
        normalized(&built_in),
        "deploy/base/config.yaml differs from `stage-guard config default`"
    );

    // The binary accepts the file exactly as it is mounted.
    config_check(&shipped);
}

/// `stage-guard config check` accepts `yaml` as the pods would mount it; the effective configuration
/// it prints (every key, defaults filled in).
fn config_check(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    fs::write(&file, yaml).unwrap();
    let check = Command::new(stage_guard_bin())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "stage-guard config check rejects the mounted configuration:\n{yaml}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    String::from_utf8(check.stdout).unwrap()
}

// === tests: matchConditions ===

#[test]
fn match_conditions_send_exactly_the_fixture_requests_they_should() {
    let docs = kustomize(&deploy_dir().join("base"));
    let keys = stage_keys(&normalized(&configmap_config(&docs)));
    let fixtures_dir = repo().join("tests/fixtures/match");
    let mut fixtures: Vec<PathBuf> = fs::read_dir(&fixtures_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 10,
        "fixtures missing in {}",
        fixtures_dir.display()
    );

    let mut seen = BTreeSet::new();
    for kind in [MUTATING, VALIDATING] {
        let hook = webhook(&docs, kind);
        let conditions = compile(&match_conditions(hook));
        for path in &fixtures {
            let fixture: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
            let expect = str_at(&fixture, "/expect");
            let request = &fixture["review"]["request"];
            let file = path.file_name().unwrap().to_string_lossy();
            assert_eq!(fixture["review"]["kind"], "AdmissionReview", "{file}");
            // The fixture's own label agrees with the rule written plainly.
            assert_eq!(
                should_send(request, &keys),
                expect == "sent",
                "{file}: the fixture's expectation contradicts the rule"
            );
            let sent = api_server_calls(hook, &conditions, request)
                .unwrap_or_else(|e| panic!("{kind} on {file}: {e}"));
            assert_eq!(sent, expect == "sent", "{kind} on {file}");
            seen.insert((
                request["operation"].as_str().unwrap().to_string(),
                expect.to_string(),
            ));
        }
    }
    // Both outcomes of UPDATE and CREATE are covered.
    for case in [
        ("UPDATE", "sent"),
        ("UPDATE", "skipped"),
        ("CREATE", "sent"),
        ("CREATE", "skipped"),
    ] {
        assert!(
            seen.contains(&(case.0.to_string(), case.1.to_string())),
            "no fixture for {case:?}"
        );
    }
}

/// Every combination of the stage label and the two annotations being on either side as: map absent,
/// key absent, or one of a few values (the empty string included).
#[test]
fn match_conditions_agree_with_the_rule_on_every_combination() {
    let docs = kustomize(&deploy_dir().join("base"));
    let keys = stage_keys(&normalized(&configmap_config(&docs)));

    // None: the whole map is absent; Some(map): the map, possibly empty.
    let label_states: Vec<Option<Value>> = {
        let mut states = vec![
            None,
            Some(json!({"workflows.argoproj.io/phase": "Running"})),
        ];
        for value in ["waiting-pr-created", "waiting-ready-for-qa", ""] {
            states.push(Some(
                json!({ keys.label.clone(): value, "workflows.argoproj.io/phase": "Running" }),
            ));
        }
        states
    };
    let annotation_states: Vec<Option<Value>> = {
        let mut states = vec![None];
        let values = [None, Some("[]"), Some("[{\"from\":null}]")];
        let reasons = [None, Some("QA re-run"), Some("")];
        for history in values {
            for reason in reasons {
                let mut map = serde_json::Map::new();
                map.insert("example.com/other".into(), json!("x"));
                if let Some(h) = history {
                    map.insert(keys.history.clone(), json!(h));
                }
                if let Some(r) = reason {
                    map.insert(keys.override_reason.clone(), json!(r));
                }
                states.push(Some(Value::Object(map)));
            }
        }
        states
    };
    let object = |labels: &Option<Value>, annotations: &Option<Value>| {
        let mut metadata =
            json!({"name": "play-task-7", "namespace": "argo", "resourceVersion": "7"});
        if let Some(l) = labels {
            metadata["labels"] = l.clone();
        }
        if let Some(a) = annotations {
            metadata["annotations"] = a.clone();
        }
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": metadata, "status": {"phase": "Running"}})
    };

    for kind in [MUTATING, VALIDATING] {
        let hook = webhook(&docs, kind);
        let conditions = compile(&match_conditions(hook));
        let (mut sent, mut skipped) = (0, 0);
        for old_labels in &label_states {
            for new_labels in &label_states {
                for old_annotations in &annotation_states {
                    for new_annotations in &annotation_states {
                        let request = json!({
                            "uid": "1", "operation": "UPDATE", "namespace": "argo", "name": "play-task-7",
                            "userInfo": {"username": "alice"},
                            "object": object(new_labels, new_annotations),
                            "oldObject": object(old_labels, old_annotations),
                        });
                        let expected = should_send(&request, &keys);
                        let actual = api_server_calls(hook, &conditions, &request)
                            .unwrap_or_else(|e| panic!("{kind}: {e} on\n{request}"));
                        assert_eq!(actual, expected, "{kind} on\n{request}");
                        if actual { sent += 1 } else { skipped += 1 }
                    }
                }
            }
            // CREATE: sent exactly when the object carries the stage label; oldObject is null.
            for annotations in &annotation_states {
                let request = json!({
                    "uid": "1", "operation": "CREATE", "namespace": "argo",
                    "object": object(old_labels, annotations), "oldObject": null,
                });
                let labelled = old_labels
                    .as_ref()
                    .is_some_and(|l| l.get(&keys.label).is_some());
                assert_eq!(
                    api_server_calls(hook, &conditions, &request),
                    Ok(labelled),
                    "{kind} on\n{request}"
                );
            }
        }
        assert!(
            sent > 0 && skipped > 0,
            "{kind}: {sent} sent, {skipped} skipped"
        );
    }
}

#[test]
fn selection_of_the_base_follows_its_configuration() {
    let docs = kustomize(&deploy_dir().join("base"));
    let keys = stage_keys(&normalized(&configmap_config(&docs)));
    let other = StageKeys {
        label: "example.com/phase".into(),
        history: "example.com/phase-log".into(),
        override_reason: "example.com/force-because".into(),
    };
    check_selection_follows(&docs, &keys, &other);
    for kind in [MUTATING, VALIDATING] {
        let text: String = match_conditions(webhook(&docs, kind))
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        // The optional-field syntax is not accepted everywhere the manifests must work.
        assert!(!text.contains("?."), "{kind}: avoid CEL optional syntax");
    }
}

/// A base whose config.yaml holds pipelines (the shipped example) still selects by the one stage label
/// and annotations, and the ConfigMap it renders passes `stage-guard config check`.
#[test]
fn selection_follows_a_pipeline_configuration_too() {
    let copy = deploy_copy();
    let example = fs::read_to_string(deploy_dir().join("examples/pipelines/config.yaml")).unwrap();
    fs::write(copy.path().join("deploy/base/config.yaml"), &example).unwrap();
    let docs = kustomize(&copy.path().join("deploy/base"));
    let shipped = configmap_config(&docs);
    assert!(shipped.contains("pipelines:"), "{shipped}");
    // The effective configuration (every key, defaults filled in) names the keys.
    let effective = config_check(&shipped);
    check_selection_follows(
        &docs,
        &stage_keys(&normalized(&effective)),
        &StageKeys {
            label: "example.com/phase".into(),
            history: "example.com/phase-log".into(),
            override_reason: "example.com/force-because".into(),
        },
    );
}

/// The check above catches the mistake it exists for: `config.yaml` renaming the stage label (or an
/// annotation) while `webhooks.yaml` still names the old key.
#[test]
fn a_base_whose_webhooks_and_configuration_disagree_is_caught() {
    for (from, to) in [
        ("label: current-stage", "label: phase"),
        (
            "annotation: stage-guard.io/history",
            "annotation: example.com/phase-log",
        ),
        (
            "annotation: stage-guard.io/override-reason",
            "annotation: example.com/force-because",
        ),
    ] {
        let copy = deploy_copy();
        let config = copy.path().join("deploy/base/config.yaml");
        let text = fs::read_to_string(&config).unwrap();
        assert!(text.contains(from), "config.yaml has no {from:?}");
        fs::write(&config, text.replace(from, to)).unwrap();
        let docs = kustomize(&copy.path().join("deploy/base"));
        let keys = stage_keys(&normalized(&configmap_config(&docs)));
        let caught = std::panic::catch_unwind(|| {
            check_selection_follows(&docs, &keys, &default_keys());
        });
        assert!(
            caught.is_err(),
            "a disagreement after {to:?} went unnoticed"
        );
    }
}

// === tests: overlays ===

#[test]
fn cert_manager_overlay_issues_the_serving_certificate_and_injects_the_ca() {
    let docs = kustomize(&deploy_dir().join("overlays/cert-manager"));
    schema_validate("cert-manager", &docs);

    // The serving Certificate writes the Secret the Deployment mounts, for the Service's DNS names.
    let serving: Vec<&Value> = all_of(&docs, "Certificate")
        .into_iter()
        .filter(|c| c["spec"]["secretName"] == TLS_SECRET)
        .collect();
    assert_eq!(serving.len(), 1, "one Certificate for {TLS_SECRET}");
    let serving = serving[0];
    let dns = strings(&serving["spec"]["dnsNames"]);
    for name in [
        format!("{SERVICE}.{NAMESPACE}.svc"),
        format!("{SERVICE}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(dns.contains(&name), "dnsNames lack {name}");
    }
    assert_eq!(serving["metadata"]["namespace"], NAMESPACE);

    // Its issuer is a CA Issuer whose CA comes from a self-signed CA Certificate.
    let ca_issuer = find(&docs, "Issuer", str_at(serving, "/spec/issuerRef/name"));
    let ca_secret = str_at(ca_issuer, "/spec/ca/secretName");
    let ca_cert = all_of(&docs, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .expect("a Certificate for the CA secret");
    assert_eq!(ca_cert["spec"]["isCA"], true);
    // Its renewals keep the key, so the injected caBundle can change without a failed request.
    assert_eq!(ca_cert["spec"]["privateKey"]["rotationPolicy"], "Never");
    let root = find(&docs, "Issuer", str_at(ca_cert, "/spec/issuerRef/name"));
    assert!(
        root["spec"]["selfSigned"].is_object(),
        "root issuer is self-signed"
    );

    // cert-manager's CA injector fills caBundle of both configurations from that Certificate.
    let expected = format!("{}/{}", NAMESPACE, str_at(serving, "/metadata/name"));
    for kind in [MUTATING, VALIDATING] {
        let config = find(&docs, kind, "stage-guard");
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            expected.as_str(),
            "{kind}"
        );
    }
    // The rest of the base is unchanged by the overlay.
    let base = kustomize(&deploy_dir().join("base"));
    for doc in &base {
        let twin = find(
            &docs,
            doc["kind"].as_str().unwrap(),
            str_at(doc, "/metadata/name"),
        );
        if doc["kind"] != MUTATING && doc["kind"] != VALIDATING {
            assert_eq!(twin, doc);
        }
    }
}

/// A copy of deploy/ without any certificates from the working tree.
fn deploy_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if fs::metadata(entry.path()).unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&deploy_dir(), &dir.path().join("deploy"));
    let certs = dir.path().join("deploy/overlays/static-certs/certs");
    if certs.exists() {
        fs::remove_dir_all(&certs).unwrap();
    }
    fs::create_dir_all(&certs).unwrap();
    dir
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Renders the static-certs overlay from `certs` and checks how the certificates arrive: the Secret
/// from tls.crt/tls.key, the caBundle of both configurations from the CA, nothing else.
fn check_static_certs_render(root: &Path) -> Vec<Value> {
    let overlay = root.join("deploy/overlays/static-certs");
    let certs = overlay.join("certs");
    let docs = kustomize(&overlay);
    let ca = fs::read(certs.join("ca.crt")).unwrap();

    let secret = find(&docs, "Secret", TLS_SECRET);
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key"] {
        let encoded: String = str_at(secret, &format!("/data/{}", key.replace('/', "~1")))
            .split_whitespace()
            .collect();
        assert_eq!(encoded, b64(&fs::read(certs.join(key)).unwrap()), "{key}");
    }
    for kind in [MUTATING, VALIDATING] {
        assert_eq!(
            str_at(webhook(&docs, kind), "/clientConfig/caBundle"),
            b64(&ca),
            "{kind}: caBundle is not base64(ca.crt)"
        );
    }
    // Build-time helpers and the CA key stay out of the cluster.
    assert_eq!(
        all_of(&docs, "ConfigMap").len(),
        1,
        "only the stage configuration"
    );
    assert_eq!(
        all_of(&docs, "Secret").len(),
        1,
        "only the serving certificate"
    );
    let rendered = serde_json::to_string(&docs).unwrap();
    if let Ok(ca_key) = fs::read(certs.join("ca.key")) {
        assert!(
            !rendered.contains(&b64(&ca_key)),
            "ca.key reached the output"
        );
    }
    docs
}

#[test]
fn static_certs_overlay_renders_from_a_certs_folder() {
    let root = deploy_copy();
    let certs = root.path().join("deploy/overlays/static-certs/certs");

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{SERVICE}.{NAMESPACE}.svc")])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    fs::write(certs.join("ca.crt"), ca.pem()).unwrap();
    fs::write(
        certs.join("ca.key"),
        "-----BEGIN PRIVATE KEY-----\nnot-used\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    fs::write(certs.join("tls.crt"), cert.pem()).unwrap();
    fs::write(certs.join("tls.key"), key.serialize_pem()).unwrap();
    // What `stage-guard certs` leaves in certs/ca-bundle: the bundle and a newline.
    fs::write(
        certs.join("ca-bundle"),
        format!("{}\n", b64(ca.pem().as_bytes())),
    )
    .unwrap();

    let docs = check_static_certs_render(root.path());
    schema_validate("static-certs", &docs);
}

/// `stage-guard certs` into `certs` as the static-certs overlay documents it, with `extra` flags.
fn stage_guard_certs(certs: &Path, extra: &[&str]) {
    let run = Command::new(stage_guard_bin())
        .args([
            "certs",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
        ])
        .arg(certs)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "stage-guard certs {extra:?} failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn static_certs_one_command_setup_works_with_stage_guard_certs() {
    let root = deploy_copy();
    let certs = root.path().join("deploy/overlays/static-certs/certs");
    // The documented command: certs writes certs/ca-bundle itself.
    stage_guard_certs(&certs, &[]);
    for file in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle"] {
        assert!(
            certs.join(file).is_file(),
            "stage-guard certs wrote no {file}"
        );
    }
    let docs = check_static_certs_render(root.path());

    // The serving certificate answers to the name the API server verifies.
    let pem = fs::read(certs.join("tls.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN extension");
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        names.contains(&format!("{SERVICE}.{NAMESPACE}.svc")),
        "SANs {names:?}"
    );
    schema_validate("static-certs-cli", &docs);
}

#[test]
fn static_certs_overlay_trusts_both_cas_during_a_ca_rotation() {
    let root = deploy_copy();
    let overlay = root.path().join("deploy/overlays/static-certs");
    let certs = overlay.join("certs");
    stage_guard_certs(&certs, &[]);
    let old_ca = fs::read(certs.join("ca.crt")).unwrap();

    // Step 1 applied: both CAs in both configurations, the old pair still in the Secret.
    let old_pair = fs::read(certs.join("tls.crt")).unwrap();
    stage_guard_certs(&certs, &["--new-ca"]);
    let new_ca = fs::read(certs.join("ca.crt")).unwrap();
    assert_ne!(new_ca, old_ca);
    let docs = kustomize(&overlay);
    let both = b64(&[new_ca.as_slice(), old_ca.as_slice()].concat());
    for kind in [MUTATING, VALIDATING] {
        assert_eq!(
            str_at(webhook(&docs, kind), "/clientConfig/caBundle"),
            both,
            "{kind}: caBundle is not the new CA and the previous one"
        );
    }
    let secret = find(&docs, "Secret", TLS_SECRET);
    let served: String = str_at(secret, "/data/tls.crt").split_whitespace().collect();
    assert_eq!(served, b64(&old_pair), "step 1 changed the serving pair");
    let rendered = serde_json::to_string(&docs).unwrap();
    assert!(
        !rendered.contains(&b64(&fs::read(certs.join("ca.key")).unwrap())),
        "ca.key reached the output"
    );
    schema_validate("static-certs-rotation", &docs);

    // Steps 2 and 3 applied: the new CA alone, as an ordinary render checks it.
    stage_guard_certs(&certs, &[]);
    stage_guard_certs(&certs, &["--drop-old-ca"]);
    check_static_certs_render(root.path());
}

// === tests: examples and image ===

/// Whether the Role bound to `account` grants `verb` on `resource` in `group`.
fn role_allows(rbac: &[Value], account: &str, group: &str, resource: &str, verb: &str) -> bool {
    all_of(rbac, "RoleBinding")
        .into_iter()
        .filter(|b| {
            b["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
        })
        .filter(|b| b["roleRef"]["kind"] == "Role")
        .map(|b| find(rbac, "Role", str_at(b, "/roleRef/name")))
        .flat_map(|role| role["rules"].as_array().unwrap().iter())
        .any(|rule| {
            let has = |field: &str, want: &str| {
                strings(&rule[field]).iter().any(|x| x == want || x == "*")
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
}

fn template<'a>(workflow_template: &'a Value, name: &str) -> &'a Value {
    workflow_template["spec"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no template {name}"))
}

fn command_line(container: &Value) -> Vec<String> {
    let mut line = container.get("command").map(strings).unwrap_or_default();
    line.extend(strings(&container["args"]));
    line
}

#[test]
fn examples_validate_and_walk_the_default_stage_graph() {
    let examples = deploy_dir().join("examples");
    let rbac = read_yaml_file(&examples.join("rbac.yaml"));
    let templates = read_yaml_file(&examples.join("workflowtemplate.yaml"));
    let sensors = read_yaml_file(&examples.join("sensor.yaml"));
    let config = normalized(&fs::read_to_string(deploy_dir().join("base/config.yaml")).unwrap());
    let keys = stage_keys(&config);
    let stages = strings(&config["stages"]);

    // --- the pipeline moves its own stage with kubectl patch, in graph order, and suspends ---
    let pipeline = find(&templates, "WorkflowTemplate", "pr-pipeline");
    let account = str_at(pipeline, "/spec/serviceAccountName");
    assert_eq!(account, "argo-workflow");
    for verb in ["get", "patch"] {
        assert!(
            role_allows(&rbac, account, "argoproj.io", "workflows", verb),
            "{account} may not {verb} workflows"
        );
    }
    let set_stage = template(pipeline, "set-stage");
    assert!(str_at(set_stage, "/container/image").contains("kubectl"));
    let line = command_line(&set_stage["container"]);
    assert_eq!(
        line[..4],
        ["kubectl", "patch", "workflow", "{{workflow.name}}"]
    );
    assert!(line.contains(&"--type=merge".to_string()), "{line:?}");
    let body = &line[line.iter().position(|a| a == "-p").unwrap() + 1];
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body["metadata"]["labels"][&keys.label],
        "{{inputs.parameters.stage}}"
    );

    let is_suspend = |name: &str| template(pipeline, name).get("suspend").is_some();
    let groups: Vec<&Value> = template(pipeline, "pipeline")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            let group = group.as_array().unwrap();
            assert_eq!(group.len(), 1, "sequential steps expected");
            &group[0]
        })
        .collect();
    let mut walk: Vec<(String, String)> = Vec::new(); // (stage, suspend step after it)
    for (i, step) in groups.iter().enumerate() {
        if step["template"] == "set-stage" {
            let stage = step["arguments"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "stage")
                .map(|p| str_at(p, "/value").to_string())
                .unwrap();
            let next = groups.get(i + 1).expect("a step after each stage change");
            assert!(
                is_suspend(str_at(next, "/template")),
                "no suspend after {stage}"
            );
            walk.push((stage, str_at(next, "/name").to_string()));
        }
    }
    let visited: Vec<&String> = walk.iter().map(|(s, _)| s).collect();
    assert_eq!(
        visited,
        stages.iter().collect::<Vec<_>>(),
        "the example walks every stage"
    );
    assert!(
        strings(&config["entry"]).contains(&walk[0].0),
        "first stage is an entry"
    );
    for pair in walk.windows(2) {
        let edges = strings(&config["transitions"][&pair[0].0]);
        assert!(
            edges.contains(&pair[1].0),
            "{} -> {} is no edge",
            pair[0].0,
            pair[1].0
        );
    }

    // --- the helper resumes only when the label holds the stage ---
    let helper = find(&templates, "WorkflowTemplate", "resume-at-stage");
    let resumer = str_at(helper, "/spec/serviceAccountName");
    for verb in ["get", "update"] {
        assert!(
            role_allows(&rbac, resumer, "argoproj.io", "workflows", verb),
            "{resumer}: {verb}"
        );
    }
    let steps: Vec<&Value> = template(helper, str_at(helper, "/spec/entrypoint"))["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g.as_array().unwrap())
        .collect();
    let read = steps
        .iter()
        .find(|s| {
            let t = template(helper, str_at(s, "/template"));
            command_line(&t["container"])
                .iter()
                .any(|a| a.contains(&format!(".metadata.labels.{}", keys.label)))
        })
        .expect("a step that reads the stage label");
    let resume = steps
        .iter()
        .find(|s| {
            let t = template(helper, str_at(s, "/template"));
            strings(&t["container"]["args"]).first().map(String::as_str) == Some("resume")
        })
        .expect("a step that resumes");
    let when = str_at(resume, "/when");
    assert!(
        when.contains(&format!("steps.{}.outputs.result", str_at(read, "/name")))
            && when.contains("{{workflow.parameters.stage}}")
            && when.contains("=="),
        "resume is not conditional on the label: {when}"
    );

    // --- the Sensor: PR created -> ready for QA -> PR approved, each for the matching stage ---
    let sensor = find(&sensors, "Sensor", "pr-pipeline");
    let sensor_account = str_at(sensor, "/spec/template/serviceAccountName");
    assert!(role_allows(
        &rbac,
        sensor_account,
        "argoproj.io",
        "workflows",
        "create"
    ));
    let dependencies: BTreeSet<String> = sensor["spec"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| str_at(d, "/name").to_string())
        .collect();
    let mut resumed = Vec::new();
    for trigger in sensor["spec"]["triggers"].as_array().unwrap() {
        let t = &trigger["template"];
        assert!(dependencies.contains(str_at(t, "/conditions")));
        assert_eq!(t["k8s"]["operation"], "create");
        let workflow = &t["k8s"]["source"]["resource"];
        assert_eq!(workflow["kind"], "Workflow");
        assert_eq!(
            workflow["spec"]["workflowTemplateRef"]["name"],
            "resume-at-stage"
        );
        let param = |name: &str| {
            workflow["spec"]["arguments"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| str_at(p, "/value").to_string())
                .unwrap_or_else(|| panic!("no parameter {name}"))
        };
        let (stage, node) = (param("stage"), param("node"));
        assert!(
            walk.contains(&(stage.clone(), node.clone())),
            "trigger resumes {node} at {stage}, which the pipeline does not suspend at"
        );
        resumed.push(stage);
    }
    assert_eq!(
        resumed, stages,
        "the sensor resumes each stage once, in order"
    );

    // --- built-in kinds against the schemas; CRDs at least parse with their kinds ---
    let mut all = rbac.clone();
    all.extend(templates.iter().cloned());
    all.extend(sensors.iter().cloned());
    for doc in &all {
        assert!(
            doc["kind"].is_string() && doc["metadata"]["name"].is_string(),
            "{}",
            short(doc)
        );
    }
    schema_validate("examples", &all);
}

#[test]
fn dockerfile_image_matches_the_deployment() {
    let dockerfile = fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let instruction = |name: &str| -> Vec<String> {
        dockerfile
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l[name.len() + 1..].trim().to_string())
            .collect()
    };
    let docs = kustomize(&deploy_dir().join("base"));
    let deployment = find(&docs, "Deployment", "stage-guard");
    let container = the_container(deployment);
    let pod = &deployment["spec"]["template"]["spec"];

    let from = instruction("FROM");
    assert!(from.len() >= 2, "multi-stage build");
    assert!(
        from[0].starts_with("rust:1.95"),
        "build stage on rustc 1.95: {}",
        from[0]
    );
    assert!(dockerfile.contains("cargo build --release --locked"));

    let user = instruction("USER").pop().expect("a USER");
    let uid = container["securityContext"]["runAsUser"]
        .as_i64()
        .or(pod["securityContext"]["runAsUser"].as_i64())
        .unwrap();
    assert_eq!(
        user.split(':').next().unwrap(),
        uid.to_string(),
        "USER vs runAsUser"
    );
    assert_ne!(uid, 0);

    let exposed: BTreeSet<i64> = instruction("EXPOSE")
        .iter()
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<i64>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([WEBHOOK_PORT, ADMIN_PORT]));

    let entrypoint: Vec<String> =
        serde_json::from_str(&instruction("ENTRYPOINT").pop().unwrap()).unwrap();
    let cmd: Vec<String> = serde_json::from_str(&instruction("CMD").pop().unwrap()).unwrap();
    assert_eq!(entrypoint, ["/stage-guard"]);
    assert_eq!(cmd, ["serve"]);
    // The Deployment's args replace CMD and start with the same subcommand.
    assert_eq!(strings(&container["args"])[0], cmd[0]);
    assert!(
        container.get("command").is_none(),
        "command would bypass the ENTRYPOINT"
    );
}
