//! The commands that see and steer Workflows (`history`, `audit`, `set`, `next`, `rollback`, and the
//! kubectl plugin `kubectl stage`), run as built against the real API server as its users, with
//! stage-guard registered where a move must be judged: what they print and how they exit.

mod audit;
mod conflicts;
mod errors;
mod moves;
mod plugin;

use crate::Scenario;
use crate::harness::*;
use crate::support::process::stage_guard_bin;
use anyhow::{Context, Result, ensure};
use stage_guard_testenv::{ADMIN, Cli, CliOutput};
use std::path::{Path, PathBuf};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "audit_finds_exactly_the_planted_inconsistencies",
        run: audit::audit_finds_exactly_the_planted_inconsistencies,
    },
    Scenario {
        name: "history_shows_the_timeline_in_every_format",
        run: moves::history_shows_the_timeline_in_every_format,
    },
    Scenario {
        name: "set_moves_through_the_webhooks_and_prints_their_verdict",
        run: moves::set_moves_through_the_webhooks_and_prints_their_verdict,
    },
    Scenario {
        name: "next_lists_the_edges_and_what_only_an_override_reaches",
        run: moves::next_lists_the_edges_and_what_only_an_override_reaches,
    },
    Scenario {
        name: "rollback_goes_back_only_where_the_history_was",
        run: moves::rollback_goes_back_only_where_the_history_was,
    },
    Scenario {
        name: "a_conflict_is_read_again_and_a_losing_streak_ends_the_move",
        run: conflicts::a_conflict_is_read_again_and_a_losing_streak_ends_the_move,
    },
    Scenario {
        name: "each_error_is_one_line_that_says_what_to_do",
        run: errors::each_error_is_one_line_that_says_what_to_do,
    },
    Scenario {
        name: "the_kubectl_plugin_answers_through_kubectl",
        run: plugin::the_kubectl_plugin_answers_through_kubectl,
    },
];

/// The pipeline the moves are judged by: the default stages with a loop back from QA, and
/// `pipeline-admins` (alice) allowed to force a change.
pub const LOOP_CONFIG: &str = "label: current-stage
stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]
transitions:
  waiting-pr-created: [waiting-ready-for-qa]
  waiting-ready-for-qa: [waiting-pr-approved, waiting-pr-created]
override:
  groups: [pipeline-admins]
";

/// A configuration file for the commands' `--config`.
pub struct ConfigFile {
    dir: tempfile::TempDir,
}

impl ConfigFile {
    pub fn new(yaml: &str) -> Result<ConfigFile> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("config.yaml"), yaml)?;
        Ok(ConfigFile { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }
}

/// `stage-guard WORDS... --kubeconfig <user's> -n <scenario's namespace> --config FILE`.
pub fn sg(t: &Install, user: &str, config: &ConfigFile, words: &[&str]) -> Result<Cli> {
    Ok(Cli::new(stage_guard_bin())
        .args(words)
        .arg("--kubeconfig")
        .arg(t.cp.kubeconfig(user)?)
        .args(["-n", &t.ns])
        .arg("--config")
        .arg(config.path()))
}

/// Fails unless the command exited with `code`.
pub fn expect_exit(out: &CliOutput, code: i32) -> Result<()> {
    ensure!(
        out.status.code() == Some(code),
        "`{}` exited with {}, want {code}\nstdout: {}\nstderr: {}",
        out.command,
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// Fails unless the command exited with `code` and printed exactly `line` on stderr (and nothing on
/// stdout).
pub fn expect_stop(out: &CliOutput, code: i32, line: &str) -> Result<()> {
    expect_exit(out, code)?;
    ensure!(
        out.stderr.trim_end() == line && out.stdout.is_empty(),
        "`{}` printed\n  {}\nexpected\n  {line}\nstdout: {}",
        out.command,
        out.stderr.trim_end(),
        out.stdout
    );
    Ok(())
}

/// The stored Workflow's resourceVersion.
pub fn version(t: &Install, name: &str) -> Result<String> {
    t.get(name)?["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
        .context("resourceVersion")
}

/// The last history entry's `(at, by)`.
pub fn last_entry(t: &Install, name: &str) -> Result<serde_json::Value> {
    history_of(&t.get(name)?)?
        .last()
        .cloned()
        .with_context(|| format!("{name} has no history"))
}

/// A service account of the scenario's namespace that may only get and list Workflows there, and a
/// kubeconfig for it (a token from the TokenRequest API).
pub fn reader_kubeconfig(t: &Install, dir: &Path) -> Result<PathBuf> {
    let admin = || t.kubectl(ADMIN);
    admin()?.args(["create", "serviceaccount", "reader"]).ok()?;
    admin()?
        .args([
            "create",
            "role",
            "workflow-reader",
            "--verb=get,list",
            "--resource=workflows.argoproj.io",
        ])
        .ok()?;
    admin()?
        .args([
            "create",
            "rolebinding",
            "reader-reads",
            "--role=workflow-reader",
        ])
        .arg(format!("--serviceaccount={}:reader", t.ns))
        .ok()?;
    let token = admin()?.args(["create", "token", "reader"]).ok()?;
    let path = dir.join("reader.yaml");
    std::fs::write(
        &path,
        kubeconfig(t.cp.url(), &t.cp.ca_file(), "reader", token.trim(), &t.ns),
    )?;
    Ok(path)
}

/// A kubeconfig with one context, `name`, for a bearer token.
pub fn kubeconfig(server: &str, ca: &Path, name: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: {name}
    user:
      token: {token}
contexts:
  - name: {name}
    context:
      cluster: test
      user: {name}
      namespace: {namespace}
current-context: {name}
",
        ca = ca.display()
    )
}
