//! Break-glass on a fresh install: the README's recovery section ("Overrides: recovering a stuck
//! Workflow"), run as written with the real kubectl against the shipped configuration
//! (`deploy/base/config.yaml`). The cluster administrator (`admin`, in `system:masters`) may force a
//! stuck Workflow's stage; a developer (`bob`) running the same command may not.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, ensure};
use stage_guard_testenv::{ADMIN, ARGO_WORKFLOW, BOB, CliOutput};
use std::path::{Path, PathBuf};

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "the_readme_recovery_works_as_written_on_a_fresh_install",
    run: the_readme_recovery_works_as_written_on_a_fresh_install,
}];

const SECTION: &str = "### Overrides: recovering a stuck Workflow";
/// The Workflow the README's commands name.
const WORKFLOW: &str = "play-task-7";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced code blocks of one README section, in order: `(language, text)`.
fn readme_blocks(section: &str) -> Result<Vec<(String, String)>> {
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let start = readme
        .find(section)
        .with_context(|| format!("README.md has no section {section:?}"))?;
    let body = &readme[start + section.len()..];
    let body = &body[..body.find("\n#").unwrap_or(body.len())];
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in body.lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(language), None) => open = Some((language.trim().to_string(), String::new())),
            (Some(_), Some(block)) => blocks.push(block),
            (None, Some((language, mut text))) => {
                text.push_str(line);
                text.push('\n');
                open = Some((language, text));
            }
            (None, None) => {}
        }
    }
    Ok(blocks)
}

/// Runs a README shell block as `user` in `ns`: `kubectl` on the PATH is the real one, with that
/// user's kubeconfig and the namespace as its context would give them.
fn run_as(t: &Install<'_>, bin: &Path, user: &str, script: &str) -> Result<CliOutput> {
    let kubectl = stage_guard_testenv::tools::kubectl()?;
    let wrapper = bin.join("kubectl");
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --kubeconfig {} --cache-dir {} -n {} \"$@\"\n",
            quote(&kubectl),
            quote(&t.cp.kubeconfig(user)?),
            quote(&t.cp.dir().join("kube-cache")),
            t.ns
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    stage_guard_testenv::Cli::new(PathBuf::from("/bin/sh"))
        .args(["-e", "-c", script])
        .env("PATH", path)
        .env("HOME", bin)
        .run()
}

fn the_readme_recovery_works_as_written_on_a_fresh_install(suite: &Suite) -> Result<()> {
    let shipped = std::fs::read_to_string(repo().join("deploy/base/config.yaml"))?;
    let t = suite.install(
        "recovery",
        Setup {
            config: Some(shipped),
            ..Setup::default()
        },
    )?;
    let blocks = readme_blocks(SECTION)?;
    let [
        (sh1, recover),
        (_, printed),
        (sh2, show_history),
        (_, _history_example),
    ] = &blocks[..]
    else {
        anyhow::bail!(
            "{SECTION}: expected 4 code blocks (command, its output, the history command, its output), found {}",
            blocks.len()
        );
    };
    ensure!(
        sh1 == "sh" && sh2 == "sh",
        "{SECTION}: the commands are `sh` blocks"
    );
    let bin = tempfile::tempdir()?;

    // A Workflow that a pipeline moved to its final stage, and that has to go back.
    t.create_ok(ARGO_WORKFLOW, &workflow_at(WORKFLOW, Some(PR_CREATED)))?;
    t.move_to(ARGO_WORKFLOW, WORKFLOW, READY_FOR_QA)?.ok()?;
    t.move_to(ARGO_WORKFLOW, WORKFLOW, PR_APPROVED)?.ok()?;
    let before = t.get(WORKFLOW)?;

    // Someone not listed under `override` gets override-not-permitted, and nothing changes.
    let refused = run_as(&t, bin.path(), BOB, recover)?;
    ensure!(
        !refused.success()
            && refused.stderr.contains(&format!(
                "on {}/{WORKFLOW} denied (override-not-permitted): bob may not force stage changes",
                t.ns
            )),
        "bob ran the README's recovery: {}{}",
        refused.stderr,
        refused.stdout
    );
    ensure!(
        t.get(WORKFLOW)?["metadata"] == before["metadata"],
        "a refused override changed the Workflow"
    );

    // The cluster administrator: the output the README shows, in this scenario's namespace.
    let out = run_as(&t, bin.path(), ADMIN, recover)?;
    ensure!(
        out.success(),
        "the README's recovery failed for the cluster administrator:\n{}{}",
        out.stderr,
        out.stdout
    );
    let printed = printed.replace(&format!("argo/{WORKFLOW}"), &format!("{}/{WORKFLOW}", t.ns));
    let (warnings, stdout): (Vec<&str>, Vec<&str>) =
        printed.lines().partition(|l| l.starts_with("Warning: "));
    ensure!(
        out.stderr.lines().collect::<Vec<_>>() == warnings,
        "kubectl printed on stderr\n{}\nthe README shows\n{}",
        out.stderr,
        warnings.join("\n")
    );
    ensure!(
        out.stdout.lines().collect::<Vec<_>>() == stdout,
        "kubectl printed\n{}\nthe README shows\n{}",
        out.stdout,
        stdout.join("\n")
    );

    // Moved, the reason in the new history entry, the annotation gone.
    let stored = t.get(WORKFLOW)?;
    ensure!(
        stage_of(&stored).as_deref() == Some(PR_CREATED),
        "stage {:?}",
        stage_of(&stored)
    );
    ensure!(
        stored["metadata"]["annotations"][OVERRIDE].is_null(),
        "the override annotation was stored: {}",
        stored["metadata"]["annotations"]
    );
    let shown = run_as(&t, bin.path(), ADMIN, show_history)?.ok()?;
    let history: Vec<serde_json::Value> = serde_json::from_str(&shown)
        .with_context(|| format!("the README's history command printed {shown:?}"))?;
    ensure!(
        history == history_of(&stored)?,
        "the README's history command printed {shown}"
    );
    let last = history.last().context("an empty history")?;
    let reason = last["override"].as_str().unwrap_or_default();
    ensure!(
        last["from"] == PR_APPROVED
            && last["to"] == PR_CREATED
            && last["by"] == "admin"
            && !reason.is_empty()
            && recover.contains(&format!("\"{OVERRIDE}\":\"{reason}\"")),
        "last history entry {last}"
    );
    ensure!(
        history.len() == 4,
        "history {history:?}: three moves and the recovery"
    );
    Ok(())
}
