//! Every way the commands stop early is one line on stderr that says what to do, and exit 2: no
//! kubeconfig, a kubeconfig that cannot be read, credentials the API server rejects, an API server
//! that does not answer, no RBAC permission (the verb and the resource named, from the API server's
//! 403), a Workflow that is not there, a configuration file that is not there, and the webhook
//! unreachable when a move needs it.

use super::*;
use anyhow::{Result, ensure};
use stage_guard_testenv::{ALICE, ARGO_WORKFLOW};
use std::time::Duration;

/// Exit 2 and one line on stderr that starts with `prefix` and holds every one of `words`.
fn expect_line(out: &CliOutput, prefix: &str, words: &[&str]) -> Result<()> {
    expect_exit(out, 2)?;
    let err = out.stderr.trim_end();
    ensure!(
        err.lines().count() == 1
            && err.starts_with(prefix)
            && words.iter().all(|w| err.contains(w))
            && out.stdout.is_empty(),
        "`{}` printed\n  {err}\nexpected one line starting with\n  {prefix}\nand holding {words:?}",
        out.command
    );
    Ok(())
}

pub fn each_error_is_one_line_that_says_what_to_do(suite: &Suite) -> Result<()> {
    let mut t = suite.install("steer-errors", Setup::default())?;
    let ns = t.ns.clone();
    let config = ConfigFile::new(&crate::support::fixtures::ConfigSpec::default().yaml())?;
    t.create_ok(ARGO_WORKFLOW, &workflow_at("task", Some(PR_CREATED)))?;
    let dir = tempfile::tempdir()?;
    let bin = crate::support::process::stage_guard_bin();

    // Not there: the same line from every command that reads one Workflow.
    for words in [
        &["history", "missing"][..],
        &["next", "missing"],
        &["set", "missing", READY_FOR_QA],
        &["rollback", "missing", "--to", PR_CREATED, "--reason", "r"],
    ] {
        let out = sg(&t, ALICE, &config, words)?.run()?;
        expect_stop(
            &out,
            2,
            &format!("stage-guard: workflow {ns}/missing not found"),
        )?;
    }

    // No kubeconfig anywhere (KUBECONFIG names a missing file, and no in-cluster account).
    let missing = dir.path().join("nowhere/kubeconfig");
    let out = Cli::new(bin.clone())
        .args(["history", "task"])
        .env("KUBECONFIG", &missing)
        .env("HOME", dir.path())
        .run()?;
    expect_line(
        &out,
        "stage-guard: no kubeconfig: ",
        &[
            &missing.display().to_string(),
            "(set --kubeconfig or KUBECONFIG, or run inside a cluster)",
        ],
    )?;
    // --kubeconfig naming a missing file, and a context the kubeconfig does not have.
    let out = Cli::new(bin.clone())
        .args(["audit", "--kubeconfig"])
        .arg(&missing)
        .run()?;
    expect_line(
        &out,
        &format!("stage-guard: kubeconfig {}: ", missing.display()),
        &[],
    )?;
    let out = sg(&t, ALICE, &config, &["audit", "--context", "nope"])?.run()?;
    expect_line(&out, "stage-guard: kubeconfig ", &["nope"])?;

    // Credentials the API server does not know.
    let forged = dir.path().join("forged.yaml");
    std::fs::write(
        &forged,
        kubeconfig(t.cp.url(), &t.cp.ca_file(), "forged", "not-a-token", &ns),
    )?;
    let out = Cli::new(bin.clone())
        .args(["history", "task", "--kubeconfig"])
        .arg(&forged)
        .run()?;
    expect_stop(
        &out,
        2,
        "stage-guard: the API server does not accept these credentials (401 Unauthorized): check the kubeconfig user's token or certificate",
    )?;

    // No API server there.
    let port = stage_guard_testenv::process::free_port()?;
    let nobody = dir.path().join("nobody.yaml");
    std::fs::write(
        &nobody,
        kubeconfig(
            &format!("https://127.0.0.1:{port}"),
            &t.cp.ca_file(),
            "nobody",
            "t",
            &ns,
        ),
    )?;
    let out = Cli::new(bin.clone())
        .args(["audit", "--kubeconfig"])
        .arg(&nobody)
        .timeout(Duration::from_secs(60))
        .run()?;
    expect_line(
        &out,
        "stage-guard: cannot reach the API server: ",
        &["Connection refused"],
    )?;

    // RBAC: a reader of this namespace may read, not move, and not list every namespace.
    let reader = reader_kubeconfig(&t, dir.path())?;
    let as_reader = |words: &[&str]| {
        Cli::new(bin.clone())
            .args(words)
            .arg("--kubeconfig")
            .arg(&reader)
            .arg("--config")
            .arg(config.path())
            .run()
    };
    let out = as_reader(&["history", "task"])?;
    expect_exit(&out, 0)?;
    let user = format!("system:serviceaccount:{ns}:reader");
    let out = as_reader(&["set", "task", READY_FOR_QA])?;
    expect_stop(
        &out,
        2,
        &format!(
            "stage-guard: no permission to patch workflows.argoproj.io in namespace \"{ns}\": workflows.argoproj.io \"task\" is forbidden: User \"{user}\" cannot patch resource \"workflows\" in API group \"argoproj.io\" in the namespace \"{ns}\""
        ),
    )?;
    let out = as_reader(&["audit", "-A"])?;
    expect_stop(
        &out,
        2,
        &format!(
            "stage-guard: no permission to list workflows.argoproj.io in every namespace (cluster scope): workflows.argoproj.io is forbidden: User \"{user}\" cannot list resource \"workflows\" in API group \"argoproj.io\" at the cluster scope"
        ),
    )?;
    let out = as_reader(&["next", "task", "-n", "default"])?;
    expect_stop(
        &out,
        2,
        &format!(
            "stage-guard: no permission to get workflows.argoproj.io in namespace \"default\": workflows.argoproj.io \"task\" is forbidden: User \"{user}\" cannot get resource \"workflows\" in API group \"argoproj.io\" in the namespace \"default\""
        ),
    )?;

    // A configuration file that is not there.
    let out = Cli::new(bin.clone())
        .args(["audit", "--kubeconfig"])
        .arg(t.cp.kubeconfig(ALICE)?)
        .arg("--config")
        .arg(dir.path().join("absent.yaml"))
        .run()?;
    expect_line(&out, "stage-guard: ", &["absent.yaml"])?;

    // The webhook gone: its configuration fails stage changes closed, and set says what the API
    // server said.
    let port = t.port();
    t.webhook.signal("KILL");
    ensure!(
        t.webhook.wait_exit(Duration::from_secs(10)).is_some(),
        "stage-guard did not exit"
    );
    let before = version(&t, "task")?;
    let out = sg(&t, ALICE, &config, &["set", "task", READY_FOR_QA])?.run()?;
    expect_line(
        &out,
        "stage-guard: the API server answered 500 InternalError: Internal error occurred: failed calling webhook \"mutate.stage-guard.io\": ",
        &[&format!("127.0.0.1:{port}"), "connection refused"],
    )?;
    ensure!(version(&t, "task")? == before, "a failed set wrote");
    Ok(())
}
