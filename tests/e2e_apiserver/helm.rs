//! The Helm chart (`deploy/helm/stage-guard`) through the real API server, with the real `helm` built
//! from `tests/helm/`.
//!
//! There are no nodes here, so the chart's Deployment never gets a running pod: the scenarios point
//! the webhooks at a local `stage-guard serve` with `webhooks.url` (certificates from `stage-guard
//! certs`, the way the harness starts it), and otherwise install the chart as an operator would. The
//! documented zero-failure install is shown under a loop of ordinary Workflow writes: install the
//! server with `webhooks.enabled=false`, then `helm upgrade --reuse-values --set webhooks.enabled=true`,
//! a further upgrade, and `helm uninstall`.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::Value;
use stage_guard_testenv::{ADMIN, ARGO_WORKFLOW, BOB, Cli, CliOutput, ControlPlane};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "two_step_install_upgrade_and_uninstall_fail_no_write",
        run: two_step_install_upgrade_and_uninstall_fail_no_write,
    },
    Scenario {
        name: "install_with_the_defaults_is_accepted_and_guards_only_labelled_workflows",
        run: install_with_the_defaults_is_accepted_and_guards_only_labelled_workflows,
    },
];

const RELEASE: &str = "stage-guard";
/// How long the webhooks may take to reach (or leave) the API server's admission chain.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds of the write loop: it stops by itself after this many rounds or this long.
const MAX_ROUNDS: usize = 200;
const MAX_LOOP_TIME: Duration = Duration::from_secs(300);
/// Rounds (four writes each) that must run entirely while the webhooks judge.
pub(crate) const JUDGED_ROUNDS: usize = 3;
/// The loop's writes, at least: so the test fails if the loop did not really run.
pub(crate) const MIN_WRITES: usize = 24;

// === helm ===

/// The real helm against the test API server as its admin, with Helm's own files in a temporary
/// directory (nothing written to the user's home).
struct Helm<'a> {
    cp: &'a ControlPlane,
    namespace: String,
    home: tempfile::TempDir,
}

impl<'a> Helm<'a> {
    fn new(cp: &'a ControlPlane, namespace: &str) -> Result<Helm<'a>> {
        Ok(Helm {
            cp,
            namespace: namespace.to_string(),
            home: tempfile::tempdir()?,
        })
    }

    fn command(&self, args: &[&str]) -> Result<Cli> {
        let home = self.home.path();
        Ok(Cli::new(stage_guard_testenv::tools::helm()?)
            .args(args)
            .args(["--namespace", &self.namespace, "--kubeconfig"])
            .arg(self.cp.kubeconfig(ADMIN)?)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .timeout(Duration::from_secs(120)))
    }

    /// `helm install`/`upgrade` of the chart with `args`. No `--wait`: no pod ever becomes ready here.
    fn deploy(&self, verb: &str, args: &[String]) -> Result<String> {
        let chart = chart_dir();
        let mut all = vec![verb, RELEASE, chart.to_str().context("chart path")?];
        all.extend(args.iter().map(String::as_str));
        self.command(&all)?.ok()
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        self.command(args)?.ok()
    }

    /// The release's objects, as the API server stores them now (`kubectl get -f` of the manifest).
    fn stored_objects(&self) -> Result<Vec<Value>> {
        let manifest = self.run(&["get", "manifest", RELEASE])?;
        let listed = self
            .cp
            .kubectl(ADMIN)?
            .args(["get", "-o", "json", "-f", "-"])
            .stdin(manifest)
            .json()?;
        Ok(match listed["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![listed],
        })
    }
}

fn chart_dir() -> PathBuf {
    stage_guard_testenv::gobuild::repo_root().join("deploy/helm/stage-guard")
}

fn manifest_kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.sort();
    kinds
}

/// The release's webhook configurations in the cluster (by the chart's labels), as (kind, object).
fn webhook_configurations(cp: &ControlPlane) -> Result<Vec<Value>> {
    let listed = cp
        .kubectl(ADMIN)?
        .args([
            "get",
            "mutatingwebhookconfigurations,validatingwebhookconfigurations",
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=webhook-configuration"),
            "-o",
            "json",
        ])
        .json()?;
    Ok(listed["items"].as_array().cloned().unwrap_or_default())
}

// === the write loop ===

/// One write of the loop.
pub(crate) struct Write {
    pub(crate) round: usize,
    pub(crate) what: String,
    pub(crate) started: Instant,
    pub(crate) out: CliOutput,
}

/// The writes of one round of the loop, in order: ordinary users' creates (labelled at the entry
/// stage, and unlabelled) and a workflow step's legal stage changes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RoundWrite {
    CreateAtEntry,
    CreateUnlabelled,
    AdvanceToReadyForQa,
    AdvanceToPrApproved,
}

pub(crate) const ROUND: [RoundWrite; 4] = [
    RoundWrite::CreateAtEntry,
    RoundWrite::CreateUnlabelled,
    RoundWrite::AdvanceToReadyForQa,
    RoundWrite::AdvanceToPrApproved,
];

impl RoundWrite {
    fn run(self, t: &Install<'_>, round: usize) -> Result<CliOutput> {
        let labelled = format!("loop-{round}");
        match self {
            RoundWrite::CreateAtEntry => t.create(BOB, &workflow_at(&labelled, Some(PR_CREATED))),
            RoundWrite::CreateUnlabelled => {
                t.create(BOB, &workflow_at(&format!("plain-{round}"), None))
            }
            RoundWrite::AdvanceToReadyForQa => t.move_to(ARGO_WORKFLOW, &labelled, READY_FOR_QA),
            RoundWrite::AdvanceToPrApproved => t.move_to(ARGO_WORKFLOW, &labelled, PR_APPROVED),
        }
    }
}

/// Round after round of writes through the API server until `stop` is set (or the bounds are
/// reached), each kept with its outcome.
pub(crate) fn write_loop(
    t: &Install<'_>,
    stop: &AtomicBool,
    writes: &Mutex<Vec<Write>>,
) -> Result<()> {
    let started = Instant::now();
    for round in 0..MAX_ROUNDS {
        if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOOP_TIME {
            break;
        }
        for write in ROUND {
            let begun = Instant::now();
            let out = write.run(t, round)?;
            writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Write {
                    round,
                    what: format!("round {round}: {write:?}"),
                    started: begun,
                    out,
                });
        }
    }
    Ok(())
}

/// The rounds whose first write started after `from` and that are complete.
pub(crate) fn complete_rounds_since(writes: &[Write], from: Instant) -> Vec<usize> {
    let mut rounds: Vec<usize> = writes
        .iter()
        .filter(|w| w.started >= from)
        .map(|w| w.round)
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .filter(|r| {
            writes.iter().filter(|w| w.round == *r).count() == ROUND.len()
                && writes.iter().all(|w| w.round != *r || w.started >= from)
        })
        .collect()
}

// === scenarios ===

/// Waits until the API server sends writes to the release's webhooks: an illegal move (a server-side
/// dry run, so nothing is stored while they are not yet called) is denied.
pub(crate) fn wait_until_judging(t: &Install<'_>, probe: &str) -> Result<()> {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    let expected = denied_by_stage_guard(&format!(
        "stage change \"{PR_CREATED}\" -> \"{PR_APPROVED}\" on {}/{probe} denied (skip): skips \"{READY_FOR_QA}\"; allowed next: \"{READY_FOR_QA}\"",
        t.ns
    ));
    loop {
        let out = t
            .kubectl(BOB)?
            .args([
                "patch",
                "workflow",
                probe,
                "--type",
                "merge",
                "--dry-run=server",
                "-p",
            ])
            .arg(
                serde_json::json!({"metadata": {"labels": {STAGE_LABEL: PR_APPROVED}}}).to_string(),
            )
            .run()?;
        if !out.success() {
            return expect_error(&out, &expected);
        }
        if Instant::now() >= deadline {
            bail!("the chart's webhooks did not judge within {ACTIVE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn two_step_install_upgrade_and_uninstall_fail_no_write(suite: &Suite) -> Result<()> {
    // stage-guard on loopback, not registered: the chart registers it.
    let t = suite.install(
        "helm",
        Setup {
            register: false,
            ..Setup::default()
        },
    )?;
    let release_ns = suite.fresh_namespace("helm-release")?;
    let helm = Helm::new(t.cp, &release_ns)?;
    let certs = t.certs_dir();
    let ca_bundle = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(certs.join("ca.crt")).context("ca.crt")?);
    let file = |name: &str| certs.join(name).display().to_string();
    let set = |pair: String| ["--set".to_string(), pair];
    let set_file = |pair: String| ["--set-file".to_string(), pair];
    let mut values: Vec<String> = Vec::new();
    values.extend(set("webhooks.enabled=false".into()));
    values.extend(set(format!("webhooks.url=https://127.0.0.1:{}", t.port())));
    values.extend(set(format!("webhooks.caBundle={ca_bundle}")));
    values.extend(set("certificates.mode=static".into()));
    values.extend(set_file(format!(
        "certificates.static.tlsCrt={}",
        file("tls.crt")
    )));
    values.extend(set_file(format!(
        "certificates.static.tlsKey={}",
        file("tls.key")
    )));
    values.extend(set(format!("certificates.static.caBundle={ca_bundle}")));

    // Step 1: the server only. Every object of the chart is accepted; no webhook configuration exists.
    helm.deploy("install", &values)?;
    let stored = helm.stored_objects()?;
    ensure!(
        manifest_kinds(&stored)
            == [
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "Secret",
                "Service",
                "ServiceAccount"
            ],
        "stored objects: {:?}",
        manifest_kinds(&stored)
    );
    ensure!(
        webhook_configurations(t.cp)?.is_empty(),
        "webhook configurations exist after an install with webhooks.enabled=false"
    );

    // A Workflow to probe with, and ordinary writes going on from here to the end.
    t.create_ok(BOB, &workflow_at("probe", Some(PR_CREATED)))?;
    let stop = AtomicBool::new(false);
    let writes: Mutex<Vec<Write>> = Mutex::new(Vec::new());
    let count = || writes.lock().unwrap_or_else(|e| e.into_inner()).len();
    let (enabled_at, judging_from, configurations) = std::thread::scope(|scope| {
        let looping = scope.spawn(|| write_loop(&t, &stop, &writes));
        let steps = || -> Result<(Instant, Instant, Vec<Value>)> {
            wait_until(Duration::from_secs(60), "a first round of writes", || {
                Ok(count() >= ROUND.len())
            })?;

            // Step 2: the webhooks, once the server answers.
            let enabled_at = Instant::now();
            helm.deploy(
                "upgrade",
                &[
                    "--reuse-values".into(),
                    "--set".into(),
                    "webhooks.enabled=true".into(),
                ],
            )?;
            wait_until_judging(&t, "probe")?;
            let judging_from = Instant::now();
            let configurations = webhook_configurations(t.cp)?;
            ensure!(configurations.len() == 2, "{configurations:?}");

            // A further upgrade changes a value of the configurations in place.
            helm.deploy(
                "upgrade",
                &[
                    "--reuse-values".into(),
                    "--set".into(),
                    "webhooks.timeoutSeconds=7".into(),
                ],
            )?;
            let upgraded = webhook_configurations(t.cp)?;
            for (before, after) in configurations.iter().zip(&upgraded) {
                ensure!(
                    after["webhooks"][0]["timeoutSeconds"] == 7,
                    "timeoutSeconds not upgraded: {}",
                    after["webhooks"][0]
                );
                ensure!(
                    before["metadata"]["uid"] == after["metadata"]["uid"],
                    "{} was replaced, not patched",
                    after["kind"]
                );
            }
            wait_until(
                Duration::from_secs(120),
                "rounds of writes while judged",
                || {
                    let writes = writes.lock().unwrap_or_else(|e| e.into_inner());
                    Ok(complete_rounds_since(&writes, judging_from).len() >= JUDGED_ROUNDS)
                },
            )?;
            Ok((enabled_at, judging_from, upgraded))
        };
        let result = steps();
        stop.store(true, Ordering::SeqCst);
        let looped = looping
            .join()
            .map_err(|_| anyhow::anyhow!("the write loop panicked"))?;
        looped.context("the write loop")?;
        result
    })?;

    // Zero failed writes, enough of them, and those made while judged carry their history.
    let writes = writes.into_inner().unwrap_or_else(|e| e.into_inner());
    let failed: Vec<String> = writes
        .iter()
        .filter(|w| !w.out.success())
        .map(|w| format!("{}: {}", w.what, w.out.stderr.trim()))
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {} writes failed:\n{}",
        failed.len(),
        writes.len(),
        failed.join("\n")
    );
    ensure!(
        writes.len() >= MIN_WRITES,
        "only {} writes in the loop",
        writes.len()
    );
    let judged = complete_rounds_since(&writes, judging_from);
    ensure!(judged.len() >= JUDGED_ROUNDS, "judged rounds: {judged:?}");
    let step_account = "system:serviceaccount:argo:argo-workflow";
    for round in &judged {
        let stored = t.get(&format!("loop-{round}"))?;
        ensure!(
            moves(&stored)?
                == vec![
                    step(None, Some(PR_CREATED), "bob"),
                    step(Some(PR_CREATED), Some(READY_FOR_QA), step_account),
                    step(Some(READY_FOR_QA), Some(PR_APPROVED), step_account),
                ],
            "round {round} while judged: history {:?}",
            moves(&stored)?
        );
        ensure!(history_of(&t.get(&format!("plain-{round}"))?)?.is_empty());
    }
    eprintln!(
        "helm: {} writes in {} rounds, {} of them judged from start to end, none failed",
        writes.len(),
        writes.last().map_or(0, |w| w.round + 1),
        judged.len()
    );
    // Rounds over before the webhooks were enabled were never judged.
    let unjudged: Vec<usize> = (0..writes.last().map_or(0, |w| w.round + 1))
        .filter(|r| {
            writes
                .iter()
                .filter(|w| w.round == *r)
                .all(|w| w.started < enabled_at)
        })
        .collect();
    ensure!(!unjudged.is_empty(), "no round before the webhooks");
    for round in &unjudged {
        ensure!(
            history_of(&t.get(&format!("loop-{round}"))?)?.is_empty(),
            "round {round} was judged before the webhooks were enabled"
        );
    }

    // Step 3: uninstall removes both configurations and the release's objects.
    helm.run(&["uninstall", RELEASE])?;
    ensure!(
        webhook_configurations(t.cp)?.is_empty(),
        "webhook configurations left after helm uninstall"
    );
    for config in &configurations {
        let kind = config["kind"].as_str().context("kind")?;
        let gone =
            t.cp.kubectl(ADMIN)?
                .args(["get", kind, RELEASE, "--ignore-not-found", "-o", "name"])
                .ok()?;
        ensure!(gone.trim().is_empty(), "{kind} {RELEASE} is still there");
    }
    let left =
        t.cp.kubectl(ADMIN)?
            .args([
                "-n",
                &release_ns,
                "get",
                "deployment,service,configmap,secret,serviceaccount,poddisruptionbudget",
            ])
            .args([
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "name",
            ])
            .ok()?;
    ensure!(left.trim().is_empty(), "left after uninstall: {left}");
    Ok(())
}

fn install_with_the_defaults_is_accepted_and_guards_only_labelled_workflows(
    suite: &Suite,
) -> Result<()> {
    let cp = suite.control_plane()?;
    // cert-manager's resource types (stand-ins: no cert-manager runs here), as the default mode needs.
    let crds = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e_apiserver/fixtures/cert-manager-crds.yaml");
    cp.kubectl(ADMIN)?.args(["apply", "-f"]).arg(&crds).ok()?;
    cp.kubectl(ADMIN)?
        .args(["wait", "--for=condition=Established", "--timeout=60s", "-f"])
        .arg(&crds)
        .ok()?;

    let release_ns = suite.fresh_namespace("helm-defaults")?;
    let workflows_ns = suite.fresh_namespace("helm-defaults-workflows")?;
    let helm = Helm::new(cp, &release_ns)?;
    helm.deploy("install", &[])?;
    let result = (|| -> Result<()> {
        let stored = helm.stored_objects()?;
        ensure!(
            manifest_kinds(&stored)
                == [
                    "Certificate",
                    "Certificate",
                    "ConfigMap",
                    "Deployment",
                    "Issuer",
                    "Issuer",
                    "MutatingWebhookConfiguration",
                    "PodDisruptionBudget",
                    "Service",
                    "ServiceAccount",
                    "ValidatingWebhookConfiguration"
                ],
            "stored objects: {:?}",
            manifest_kinds(&stored)
        );

        // No pod answers (there are no nodes), so labelled writes fail closed, as the README says of a
        // one-step install; unlabelled ones never reach the webhooks (objectSelector).
        let kubectl =
            |user: &str| -> Result<Cli> { Ok(cp.kubectl(user)?.args(["-n", &workflows_ns])) };
        let create = |user: &str, object: &Value| -> Result<CliOutput> {
            kubectl(user)?
                .args(["create", "-f", "-"])
                .stdin(object.to_string())
                .run()
        };
        let mut attempt = 0;
        wait_until(ACTIVE_TIMEOUT, "a labelled create failing closed", || {
            attempt += 1;
            let out = create(
                BOB,
                &workflow_at(&format!("labelled-{attempt}"), Some(PR_CREATED)),
            )?;
            Ok(!out.success()
                && out
                    .stderr
                    .contains("failed calling webhook \"mutate.stage-guard.io\""))
        })?;
        create(BOB, &workflow_at("unlabelled", None))?
            .ok()
            .context("an unlabelled create while no pod answers")?;
        Ok(())
    })();
    let uninstalled = helm.run(&["uninstall", RELEASE]);
    result?;
    uninstalled?;
    ensure!(
        webhook_configurations(cp)?.is_empty(),
        "webhook configurations left after helm uninstall"
    );
    Ok(())
}
