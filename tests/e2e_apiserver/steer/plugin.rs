//! The kubectl plugin through the real kubectl: a `kubectl-stage` symlink to the built binary on
//! PATH, and `kubectl stage history | audit | set | next | rollback`, with kubectl's own defaults
//! (KUBECONFIG, its current context and that context's namespace) and flags (`--kubeconfig`,
//! `--context`, `-n`).

use super::*;
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use stage_guard_testenv::{ALICE, ARGO_WORKFLOW, BOB};

/// One kubeconfig with a context for alice and one for bob, both in `namespace`, bob's current.
fn two_users(t: &Install, namespace: &str) -> Result<String> {
    let ca = t.cp.ca_file();
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: alice
    user:
      token: {alice}
  - name: bob
    user:
      token: {bob}
contexts:
  - name: alice
    context: {{cluster: test, user: alice, namespace: {namespace}}}
  - name: bob
    context: {{cluster: test, user: bob, namespace: {namespace}}}
current-context: bob
",
        server = t.cp.url(),
        ca = ca.display(),
        alice = t.cp.token(ALICE)?,
        bob = t.cp.token(BOB)?,
    ))
}

pub fn the_kubectl_plugin_answers_through_kubectl(suite: &Suite) -> Result<()> {
    let t = suite.install(
        "steer-plugin",
        Setup {
            config: Some(LOOP_CONFIG.into()),
            ..Setup::default()
        },
    )?;
    let ns = t.ns.clone();
    let config = ConfigFile::new(LOOP_CONFIG)?;
    t.create_ok(ARGO_WORKFLOW, &workflow_at("task", Some(PR_CREATED)))?;

    // Installed as the README says: a symlink named kubectl-stage on PATH.
    let bin_dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(
        crate::support::process::stage_guard_bin(),
        bin_dir.path().join("kubectl-stage"),
    )?;
    let path = std::env::join_paths(std::iter::once(bin_dir.path().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let kubeconfig = bin_dir.path().join("kubeconfig.yaml");
    std::fs::write(&kubeconfig, two_users(&t, &ns)?)?;
    let kubectl = stage_guard_testenv::tools::kubectl()?;
    let stage = |words: &[&str]| {
        Cli::new(kubectl.clone())
            .arg("stage")
            .args(words)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .env("STAGE_GUARD_CONFIG", config.path())
    };

    let plugins = Cli::new(kubectl.clone())
        .args(["plugin", "list"])
        .env("PATH", &path)
        .run()?;
    ensure!(
        plugins
            .stdout
            .contains(&bin_dir.path().join("kubectl-stage").display().to_string()),
        "kubectl plugin list:\n{}{}",
        plugins.stdout,
        plugins.stderr
    );

    // history: KUBECONFIG, its current context (bob) and that context's namespace.
    let out = stage(&["history", "task", "-o", "json"]).run()?;
    expect_exit(&out, 0)?;
    let view: Value = serde_json::from_str(&out.stdout).context("kubectl stage history -o json")?;
    ensure!(
        view["namespace"] == ns.as_str() && view["stage"] == PR_CREATED,
        "kubectl stage history: {view}"
    );

    // set with --context: the move is alice's.
    let out = stage(&["set", "task", READY_FOR_QA, "--context", "alice"]).run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout.contains(": admitted, recorded by alice at "),
        "kubectl stage set --context alice printed {}",
        out.stdout
    );
    ensure!(last_entry(&t, "task")?["by"] == "alice");

    // next suggests the plugin's own command line.
    let out = stage(&["next", "task"]).run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout
            .contains(&format!("\n  kubectl stage set task STAGE -n {ns}\n")),
        "kubectl stage next printed:\n{}",
        out.stdout
    );

    // rollback, as alice; refused for bob (the current context) with exit 1 through kubectl.
    let out = stage(&["rollback", "task", "--to", PR_CREATED, "--reason", "redo"]).run()?;
    expect_exit(&out, 1)?;
    ensure!(
        out.stderr.starts_with("kubectl stage: refused: admission webhook \"validate.stage-guard.io\" denied the request: ")
            && out.stderr.contains("(override-not-permitted)"),
        "kubectl stage rollback as bob printed {}",
        out.stderr
    );
    let out = stage(&[
        "rollback",
        "task",
        "--to",
        PR_CREATED,
        "--reason",
        "redo",
        "--context",
        "alice",
    ])
    .run()?;
    expect_exit(&out, 0)?;
    ensure!(stage_of(&t.get("task")?).as_deref() == Some(PR_CREATED));

    // audit in the context's namespace, and with -n and --kubeconfig given explicitly (KUBECONFIG
    // pointing nowhere shows the flag wins).
    let out = stage(&["audit"]).run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout == "1 Workflow checked: no findings\n",
        "{}",
        out.stdout
    );
    let out = Cli::new(kubectl.clone())
        .args(["stage", "audit", "-o", "json", "-n", &ns, "--kubeconfig"])
        .arg(t.cp.kubeconfig(ALICE)?)
        .env("PATH", &path)
        .env("KUBECONFIG", bin_dir.path().join("absent.yaml"))
        .env("STAGE_GUARD_CONFIG", config.path())
        .run()?;
    expect_exit(&out, 0)?;
    let report: Value = serde_json::from_str(&out.stdout)?;
    ensure!(report["checked"] == 1, "kubectl stage audit -n: {report}");

    // The plugin answers only its own commands, and says so in its name.
    let out = stage(&["serve"]).run()?;
    expect_exit(&out, 2)?;
    let out = stage(&["--help"]).run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout.contains("Usage: kubectl stage <COMMAND>")
            && ["history", "audit", "set", "next", "rollback"]
                .iter()
                .all(|c| out.stdout.contains(&format!("\n  {c} "))),
        "kubectl stage --help:\n{}",
        out.stdout
    );
    Ok(())
}
