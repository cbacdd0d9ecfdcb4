//! `stage-guard vap` through the real API server, with no webhook registered: the generated
//! ValidatingAdmissionPolicies must give the webhook's verdict on the stage rules for every
//! combination of pipeline, stored stage, new stage and requester, and stay within the API server's
//! CEL cost limits for a large graph.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use stage_guard::admission::pipeline::{self, Change, Requester};
use stage_guard::core::{Operation, Outcome, Policy};
use stage_guard_testenv::{ADMIN, BOB, ControlPlane};
use std::time::{Duration, Instant, SystemTime};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "the_policies_agree_with_the_webhook_on_every_combination",
        run: the_policies_agree_with_the_webhook_on_every_combination,
    },
    Scenario {
        name: "a_30_stage_graph_stays_within_the_cel_cost_limits",
        run: a_30_stage_graph_stays_within_the_cel_cost_limits,
    },
];

const TEMPLATE: &str = "workflows.argoproj.io/workflow-template";
/// A stage no pipeline knows.
const BOGUS: &str = "bogus";
const OVERRIDE: &str = "stage-guard.io/override-reason";

/// A pipeline of the example, the namespace its Workflows are in, and their other labels.
type Group = (&'static str, String, Vec<(String, String)>);

/// The generated policies, applied; deleted again when dropped (they are cluster-wide), and waited
/// for until the API server no longer enforces them: its policy cache follows deletions a moment
/// later, and the scenarios after this one must not meet a stale policy.
struct Applied<'c> {
    cp: &'c ControlPlane,
    /// A write the policies were seen to refuse: namespace, Workflow, stage.
    probe: Option<(String, String, String)>,
}

impl Applied<'_> {
    /// Waits until the policies judge, and keeps the probe to see them gone at the end.
    fn wait_until_enforced(&mut self, ns: &str, probe: &str, to: &str) -> Result<()> {
        wait_until_enforced(self.cp, ns, probe, to)?;
        self.probe = Some((ns.to_string(), probe.to_string(), to.to_string()));
        Ok(())
    }
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let Ok(k) = self.cp.kubectl(ADMIN) else {
            return;
        };
        let _ = k
            .args([
                "delete",
                "validatingadmissionpolicybinding,validatingadmissionpolicy",
                "-l",
                "app.kubernetes.io/component=admission-policy",
                "--ignore-not-found",
            ])
            .ok();
        if let Some((ns, probe, to)) = &self.probe {
            let deadline = Instant::now() + Duration::from_secs(30);
            while policy_refuses(self.cp, ns, probe, to).is_ok_and(|(refused, _)| refused)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

fn vap_yaml(config: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stage-guard"))
        .arg("vap")
        .arg("--config")
        .arg(&file)
        .output()?;
    ensure!(
        out.status.success(),
        "stage-guard vap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn apply_policies<'c>(cp: &'c ControlPlane, yaml: &str) -> Result<Applied<'c>> {
    let applied = Applied { cp, probe: None };
    let out = cp
        .kubectl(ADMIN)?
        .args(["apply", "-f", "-"])
        .stdin(yaml.to_string())
        .run()?;
    ensure!(
        out.success(),
        "kubectl apply of the policies: {}",
        out.stderr
    );
    Ok(applied)
}

/// How the API server answered a write: `allowed`, `warned` (admitted with a policy's warning) or
/// `denied`.
fn through_the_api_server(out: &stage_guard_testenv::CliOutput) -> Result<&'static str> {
    if out.success() {
        if out
            .stderr
            .contains("Warning: Validation failed for ValidatingAdmissionPolicy")
        {
            Ok("warned")
        } else {
            Ok("allowed")
        }
    } else if out.stderr.contains("ValidatingAdmissionPolicy") {
        Ok("denied")
    } else {
        bail!("an error that is not a policy's: {}", out.stderr)
    }
}

/// What the webhooks answer to the same write (the server's own code, offline).
fn webhook_verdict(
    policy: &Policy,
    change: &Change<'_>,
    requester: &Requester,
) -> Result<&'static str> {
    let (old, new) = pipeline::change_objects(policy, change);
    let review = pipeline::review_of(Operation::Update, requester, Some(&old), &new);
    let answer = pipeline::run(policy, &review, SystemTime::now())?;
    Ok(match answer.validate.record.decision {
        Outcome::Allowed => "allowed",
        Outcome::Warned => "warned",
        Outcome::Denied => "denied",
    })
}

/// Whether a ValidatingAdmissionPolicy refuses a server-side dry-run move of `probe` to `to`.
fn policy_refuses(cp: &ControlPlane, ns: &str, probe: &str, to: &str) -> Result<(bool, String)> {
    let out = cp
        .kubectl(ADMIN)?
        .args([
            "-n",
            ns,
            "patch",
            "workflow",
            probe,
            "--type",
            "merge",
            "--dry-run=server",
            "-p",
        ])
        .arg(json!({"metadata": {"labels": {STAGE_LABEL: to}}}).to_string())
        .run()?;
    Ok((
        !out.success() && out.stderr.contains("ValidatingAdmissionPolicy"),
        out.stderr,
    ))
}

/// Waits until the policies judge: a server-side dry-run skip in the default pipeline is refused.
fn wait_until_enforced(cp: &ControlPlane, ns: &str, probe: &str, to: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (refused, stderr) = policy_refuses(cp, ns, probe, to)?;
        if refused {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the policies did not judge within 30 s: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn the_policies_agree_with_the_webhook_on_every_combination(suite: &Suite) -> Result<()> {
    let cp = suite.control_plane()?;
    let qa_ns = suite.fresh_namespace("vap-qa")?;
    let docs_ns = suite.fresh_namespace("vap-docs")?;
    // The shipped two-pipeline example, its namespaces swapped for this scenario's.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/examples/pipelines/config.yaml"),
    )?;
    let config = example
        .replace(
            "namespaces: [argo, agents]",
            &format!("namespaces: [{qa_ns}]"),
        )
        .replace("namespaces: [docs]", &format!("namespaces: [{docs_ns}]"));
    ensure!(config != example, "the example's namespaces were not found");
    let policy = Policy::from_yaml(&config).context("the example configuration")?;

    // (pipeline, namespace, the Workflow's other labels)
    let template = vec![(TEMPLATE.to_string(), "play-workflow-template".to_string())];
    let groups: Vec<Group> = vec![
        ("qa-loop", qa_ns.clone(), template.clone()),
        ("docs", docs_ns.clone(), vec![]),
        ("default", qa_ns.clone(), vec![]),
    ];
    // Every stored stage, created before the policies exist (a CREATE mid-pipeline would be a skip).
    let mut stored = Vec::new();
    for (name, ns, labels) in &groups {
        let pipeline = policy.pipeline(name).context("a pipeline of the example")?;
        let mut stages: Vec<Option<String>> =
            pipeline.graph.stages().iter().cloned().map(Some).collect();
        stages.push(None);
        stages.push(Some(BOGUS.to_string()));
        for (i, stage) in stages.iter().enumerate() {
            let wf_name = format!("{name}-{i}");
            let mut all: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some(s) = stage {
                all.push((STAGE_LABEL, s));
            }
            cp.kubectl(ADMIN)?
                .args(["-n", ns, "create", "-f", "-"])
                .stdin(workflow(&wf_name, &all, &[]).to_string())
                .ok()
                .with_context(|| format!("create {ns}/{wf_name}"))?;
            stored.push((*name, ns.clone(), labels.clone(), wf_name, stage.clone()));
        }
    }
    let mut applied = apply_policies(cp, &vap_yaml(&config)?)?;
    applied.wait_until_enforced(&qa_ns, "default-0", "waiting-pr-approved")?;

    let bob = Requester {
        username: "bob".into(),
        groups: vec!["developers".into(), "system:authenticated".into()],
    };
    let admin = Requester {
        username: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    };
    let (mut checked, mut disagreements) = (0usize, Vec::new());
    for (name, ns, labels, wf_name, from) in &stored {
        let pipeline = policy.pipeline(name).context("pipeline")?;
        let mut targets: Vec<Option<String>> =
            pipeline.graph.stages().iter().cloned().map(Some).collect();
        targets.push(None);
        targets.push(Some(BOGUS.to_string()));
        // A relabel out of the pipeline too, for the ones with labels to lose.
        let relabels: Vec<Option<Vec<(String, String)>>> = if labels.is_empty() {
            vec![None]
        } else {
            vec![None, Some(vec![])]
        };
        for to in &targets {
            for new_labels in &relabels {
                for (user, requester, reason) in [
                    (BOB, &bob, None),
                    (BOB, &bob, Some("please")),
                    (ADMIN, &admin, Some("recovery")),
                ] {
                    if from.is_none() && to.is_none() {
                        continue; // never sent: no stage on either side
                    }
                    let change = Change {
                        name: "w",
                        namespace: Some(ns),
                        labels,
                        new_labels: new_labels.as_deref(),
                        from: from.as_deref(),
                        to: to.as_deref(),
                        override_reason: reason,
                    };
                    let want = webhook_verdict(&policy, &change, requester)?;
                    // The same write through the API server: a JSON merge patch of the stage label,
                    // the template label and the override reason, as a dry run.
                    let mut metadata = json!({"labels": {STAGE_LABEL: to}});
                    if new_labels.is_some() {
                        metadata["labels"][TEMPLATE] = serde_json::Value::Null;
                    }
                    if let Some(r) = reason {
                        metadata["annotations"] = json!({OVERRIDE: r});
                    }
                    let out = cp
                        .kubectl(user)?
                        .args([
                            "-n",
                            ns,
                            "patch",
                            "workflow",
                            wf_name,
                            "--type",
                            "merge",
                            "--dry-run=server",
                            "-p",
                        ])
                        .arg(json!({"metadata": metadata}).to_string())
                        .run()?;
                    let got = through_the_api_server(&out)?;
                    checked += 1;
                    if got != want {
                        disagreements.push(format!(
                            "{name} {from:?} -> {to:?} relabel={} by {user} override={reason:?}: webhook {want}, policy {got}: {}",
                            new_labels.is_some(),
                            out.stderr.trim()
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "vap: {checked} combinations through the API server, {} disagreements",
        disagreements.len()
    );
    ensure!(checked >= 300, "only {checked} combinations checked");
    ensure!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    Ok(())
}

fn a_30_stage_graph_stays_within_the_cel_cost_limits(suite: &Suite) -> Result<()> {
    let cp = suite.control_plane()?;
    let ns = suite.fresh_namespace("vap-cost")?;
    // 30 stages, each leading to the next three and back to the two before: 148 edges; two more
    // pipelines of 30 stages, so the pipeline selection is not trivial either.
    let stages: Vec<String> = (0..30).map(|i| format!("stage-{i:02}")).collect();
    let graph = |indent: &str| {
        let mut y = format!(
            "{indent}stages: [{}]\n{indent}transitions:\n",
            stages.join(", ")
        );
        for i in 0..30usize {
            let next: Vec<&str> = [i + 1, i + 2, i + 3]
                .into_iter()
                .filter(|&j| j < 30)
                .chain(
                    [i.wrapping_sub(1), i.wrapping_sub(2)]
                        .into_iter()
                        .filter(|&j| j < i),
                )
                .map(|j| stages[j].as_str())
                .collect();
            if !next.is_empty() {
                y.push_str(&format!("{indent}  {}: [{}]\n", stages[i], next.join(", ")));
            }
        }
        y
    };
    let mut config = graph("");
    config.push_str("pipelines:\n");
    for p in 0..2 {
        config.push_str(&format!(
            "  - name: big-{p}\n    match: {{labels: {{team: t{p}}}, namespaces: [{ns}]}}\n"
        ));
        config.push_str(&graph("    "));
    }
    Policy::from_yaml(&config).context("the generated 30-stage configuration")?;
    // The API server estimates every expression's cost when the policy is created and refuses one
    // over its limit, so being created is the check; a request then runs them for real.
    let mut applied = apply_policies(cp, &vap_yaml(&config)?)?;
    cp.kubectl(ADMIN)?
        .args(["-n", &ns, "create", "-f", "-"])
        .stdin(workflow("big", &[("team", "t1")], &[]).to_string())
        .ok()?;
    applied.wait_until_enforced(&ns, "big", "stage-29")?;
    let legal = cp
        .kubectl(BOB)?
        .args([
            "-n",
            &ns,
            "patch",
            "workflow",
            "big",
            "--type",
            "merge",
            "--dry-run=server",
            "-p",
        ])
        .arg(json!({"metadata": {"labels": {STAGE_LABEL: "stage-00"}}}).to_string())
        .run()?;
    ensure!(
        legal.success(),
        "a legal entry was refused: {}",
        legal.stderr
    );
    let policies = cp
        .kubectl(ADMIN)?
        .args(["get", "validatingadmissionpolicies", "-o", "json"])
        .ok()?;
    let warnings: serde_json::Value = serde_json::from_str(&policies)?;
    for item in warnings["items"].as_array().into_iter().flatten() {
        let checking = &item["status"]["typeChecking"]["expressionWarnings"];
        ensure!(
            checking.as_array().is_none_or(Vec::is_empty),
            "{}: type checking warnings {checking}",
            item["metadata"]["name"]
        );
    }
    eprintln!(
        "vap: a 30-stage graph in 3 pipelines, {} bytes of policy, accepted and enforced",
        vap_yaml(&config)?.len()
    );
    Ok(())
}
