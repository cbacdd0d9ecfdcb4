//! `history`, `set`, `next` and `rollback` with stage-guard registered: the webhooks judge every move
//! the commands send, and the commands print what the cluster said (its refusal word for word, as
//! kubectl would, its warnings, the history entry it recorded).

use super::*;
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use stage_guard_testenv::{ALICE, ARGO_WORKFLOW, BOB};

fn install<'s>(suite: &'s Suite, scenario: &str) -> Result<(Install<'s>, ConfigFile)> {
    let t = suite.install(
        scenario,
        Setup {
            config: Some(LOOP_CONFIG.into()),
            ..Setup::default()
        },
    )?;
    Ok((t, ConfigFile::new(LOOP_CONFIG)?))
}

/// What kubectl prints after `Error from server (Forbidden): ` is what `set` prints after
/// `stage-guard: refused: `: the webhook's denial, word for word.
fn refusal(message: &str) -> String {
    format!(
        "stage-guard: refused: admission webhook \"validate.stage-guard.io\" denied the request: {message}"
    )
}

pub fn history_shows_the_timeline_in_every_format(suite: &Suite) -> Result<()> {
    let (t, config) = install(suite, "steer-history")?;
    t.create_ok(ARGO_WORKFLOW, &workflow_at("task", Some(PR_CREATED)))?;
    t.move_to(BOB, "task", READY_FOR_QA)?.ok()?;
    let stored = t.get("task")?;
    let history = history_of(&stored)?;

    let out = sg(&t, ALICE, &config, &["history", "task", "-o", "json"])?.run()?;
    expect_exit(&out, 0)?;
    let view: Value = serde_json::from_str(&out.stdout)?;
    ensure!(
        view["namespace"] == t.ns.as_str()
            && view["name"] == "task"
            && view["pipeline"] == "default"
            && view["stage"] == READY_FOR_QA
            && view["historyError"].is_null()
            && view["labelDisagrees"] == false
            && view["inStageSeconds"].is_u64(),
        "history -o json: {view}"
    );
    let changes = view["changes"].as_array().context("changes")?;
    ensure!(changes.len() == 2, "changes {changes:?}");
    for (change, stored) in changes.iter().zip(&history) {
        for key in ["from", "to", "at", "by"] {
            ensure!(
                change[key] == stored[key],
                "{key}: {change} against {stored}"
            );
        }
        ensure!(change["override"].is_null() && change["stayedSeconds"].is_u64());
    }
    ensure!(
        changes[1]["by"] == "bob" && changes[0]["by"] == "system:serviceaccount:argo:argo-workflow"
    );

    // YAML is the same document.
    let out = sg(&t, ALICE, &config, &["history", "task", "-o", "yaml"])?.run()?;
    expect_exit(&out, 0)?;
    let from_yaml: Value = serde_saphyr::from_str(&out.stdout)?;
    ensure!(
        from_yaml["changes"] == view["changes"] && from_yaml["stage"] == view["stage"],
        "history -o yaml:\n{}",
        out.stdout
    );

    // The table: a header, a row per change, aligned.
    let out = sg(&t, ALICE, &config, &["history", "task"])?.run()?;
    expect_exit(&out, 0)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines[0] == format!("Workflow:  {}/task", t.ns)
            && lines[1] == "Pipeline:  default"
            && lines[2].starts_with(&format!("Stage:     {READY_FOR_QA}, for "))
            && lines[3].is_empty(),
        "history:\n{}",
        out.stdout
    );
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    ensure!(words(lines[4]) == ["#", "FROM", "TO", "AT", "BY", "STAYED", "OVERRIDE"]);
    let first = words(lines[5]);
    let second = words(lines[6]);
    ensure!(
        first[..5]
            == [
                "1",
                "none",
                PR_CREATED,
                history[0]["at"].as_str().unwrap_or_default(),
                "system:serviceaccount:argo:argo-workflow"
            ]
            && second[..5]
                == [
                    "2",
                    PR_CREATED,
                    READY_FOR_QA,
                    history[1]["at"].as_str().unwrap_or_default(),
                    "bob"
                ],
        "rows:\n{}\n{}",
        lines[5],
        lines[6]
    );
    // Columns line up: each header word starts where its column's cells start.
    let column = |l: &str, n: usize| {
        l.match_indices(|c: char| !c.is_whitespace())
            .filter(|(i, _)| *i == 0 || l.as_bytes()[i - 1] == b' ')
            .nth(n)
            .map(|(i, _)| i)
    };
    for n in 0..5 {
        ensure!(
            column(lines[4], n) == column(lines[5], n)
                && column(lines[5], n) == column(lines[6], n),
            "column {n} is not aligned:\n{}",
            out.stdout
        );
    }
    ensure!(lines.len() == 7, "history:\n{}", out.stdout);
    Ok(())
}

pub fn set_moves_through_the_webhooks_and_prints_their_verdict(suite: &Suite) -> Result<()> {
    let (t, config) = install(suite, "steer-set")?;
    let ns = t.ns.clone();
    t.create_ok(ARGO_WORKFLOW, &workflow_at("task", Some(PR_CREATED)))?;

    // A legal move: admitted and recorded, nothing on stderr.
    let out = sg(&t, BOB, &config, &["set", "task", READY_FOR_QA])?.run()?;
    expect_exit(&out, 0)?;
    let last = last_entry(&t, "task")?;
    ensure!(
        out.stdout
            == format!(
                "{ns}/task: \"{PR_CREATED}\" -> \"{READY_FOR_QA}\": admitted, recorded by bob at {}\n",
                last["at"].as_str().unwrap_or_default()
            )
            && out.stderr.is_empty(),
        "set printed:\n{}{}",
        out.stdout,
        out.stderr
    );
    ensure!(stage_of(&t.get("task")?).as_deref() == Some(READY_FOR_QA));

    // Already there: nothing is written.
    let before = version(&t, "task")?;
    let out = sg(&t, BOB, &config, &["set", "task", READY_FOR_QA])?.run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout
            == format!(
                "{ns}/task is already at \"{READY_FOR_QA}\" (moved there by bob at {}): nothing to change\n",
                last["at"].as_str().unwrap_or_default()
            ),
        "set to the same stage printed {}",
        out.stdout
    );
    ensure!(
        version(&t, "task")? == before,
        "set to the same stage wrote"
    );

    // A skip: refused with the webhook's message, exit 1, the Workflow untouched.
    t.create_ok(ARGO_WORKFLOW, &workflow_at("skipper", Some(PR_CREATED)))?;
    let before = version(&t, "skipper")?;
    let out = sg(&t, BOB, &config, &["set", "skipper", PR_APPROVED])?.run()?;
    let skip = format!(
        "stage change \"{PR_CREATED}\" -> \"{PR_APPROVED}\" on {ns}/skipper denied (skip): skips \"{READY_FOR_QA}\"; allowed next: \"{READY_FOR_QA}\""
    );
    expect_stop(&out, 1, &refusal(&skip))?;
    ensure!(version(&t, "skipper")? == before, "a refused set wrote");
    // The same words kubectl prints for the same write.
    expect_error(
        &t.move_to(BOB, "skipper", PR_APPROVED)?,
        &denied_by_stage_guard(&skip),
    )?;

    // Forcing it takes a permitted requester: bob is not, alice is.
    let out = sg(
        &t,
        BOB,
        &config,
        &["set", "skipper", PR_APPROVED, "--reason", "hotfix"],
    )?
    .run()?;
    expect_stop(
        &out,
        1,
        &refusal(&format!(
            "stage change \"{PR_CREATED}\" -> \"{PR_APPROVED}\" on {ns}/skipper denied (override-not-permitted): bob may not force stage changes (not listed under override.users or override.groups); remove the stage-guard.io/override-reason annotation"
        )),
    )?;
    ensure!(
        version(&t, "skipper")? == before,
        "a refused override wrote"
    );
    let out = sg(
        &t,
        ALICE,
        &config,
        &["set", "skipper", PR_APPROVED, "--reason", "hotfix"],
    )?
    .run()?;
    expect_exit(&out, 0)?;
    let stored = t.get("skipper")?;
    let last = history_of(&stored)?.last().cloned().context("history")?;
    ensure!(
        out.stdout
            == format!(
                "{ns}/skipper: \"{PR_CREATED}\" -> \"{PR_APPROVED}\": admitted as a forced change, recorded by alice at {} with the reason \"hotfix\"\n",
                last["at"].as_str().unwrap_or_default()
            ),
        "a forced set printed {}",
        out.stdout
    );
    // The webhook's warning, as kubectl prints it.
    ensure!(
        out.stderr
            == format!(
                "Warning: forced: {ns}/skipper \"{PR_CREATED}\" -> \"{PR_APPROVED}\" by alice\n"
            ),
        "a forced set warned:\n{}",
        out.stderr
    );
    ensure!(
        last["override"] == "hotfix"
            && last["by"] == "alice"
            && stored["metadata"]["annotations"][OVERRIDE].is_null()
            && stage_of(&stored).as_deref() == Some(PR_APPROVED),
        "after the forced set: {}",
        stored["metadata"]
    );

    // A reason on a legal move is not needed and not recorded.
    let out = sg(
        &t,
        ALICE,
        &config,
        &["set", "task", PR_CREATED, "--reason", "back to work"],
    )?
    .run()?;
    expect_exit(&out, 0)?;
    let last = last_entry(&t, "task")?;
    ensure!(
        out.stdout
            == format!(
                "{ns}/task: \"{READY_FOR_QA}\" -> \"{PR_CREATED}\": admitted as a legal move (no override needed, the reason is not recorded), recorded by alice at {}\n",
                last["at"].as_str().unwrap_or_default()
            )
            && last.get("override").is_none(),
        "set --reason of a legal move printed {}",
        out.stdout
    );
    Ok(())
}

pub fn next_lists_the_edges_and_what_only_an_override_reaches(suite: &Suite) -> Result<()> {
    let (t, config) = install(suite, "steer-next")?;
    let ns = t.ns.clone();
    t.create_ok(ARGO_WORKFLOW, &workflow_at("task", Some(PR_CREATED)))?;
    let next = |user: &str| -> Result<(String, Vec<String>)> {
        let out = sg(&t, user, &config, &["next", "task"])?.run()?;
        expect_exit(&out, 0)?;
        let mut lines = out.stdout.lines().map(str::to_owned);
        Ok((lines.next().unwrap_or_default(), lines.collect()))
    };
    let (head, rest) = next(ALICE)?;
    // How long it has been there is the only line that moves with time.
    ensure!(
        head.starts_with(&format!(
            "{ns}/task is at \"{PR_CREATED}\" (pipeline default), for "
        )),
        "{head}"
    );
    ensure!(
        rest == [
            format!("next: {READY_FOR_QA}"),
            format!("  stage-guard set task {READY_FOR_QA} -n {ns}"),
            format!("forced only (a permitted override): {PR_APPROVED}"),
            format!("  stage-guard set task STAGE -n {ns} --reason REASON"),
            "  permitted: users none; groups pipeline-admins".to_owned(),
            "  you: alice (groups pipeline-admins, system:authenticated): permitted".to_owned(),
        ],
        "next as alice:\n{}",
        rest.join("\n")
    );
    let (_, rest) = next(BOB)?;
    ensure!(
        rest.last().map(String::as_str)
            == Some("  you: bob (groups developers, system:authenticated): not permitted"),
        "next as bob:\n{}",
        rest.join("\n")
    );

    // From QA the loop offers two edges and nothing is left for an override.
    sg(&t, BOB, &config, &["set", "task", READY_FOR_QA])?.ok()?;
    let (_, rest) = next(BOB)?;
    ensure!(
        rest == [
            format!("next: {PR_APPROVED}, {PR_CREATED}"),
            format!("  stage-guard set task STAGE -n {ns}"),
        ],
        "next from QA:\n{}",
        rest.join("\n")
    );
    // A final stage.
    sg(&t, BOB, &config, &["set", "task", PR_APPROVED])?.ok()?;
    let (_, rest) = next(BOB)?;
    ensure!(
        rest.first().map(String::as_str) == Some("next: none, a final stage")
            && rest.get(1).map(String::as_str)
                == Some(&*format!(
                    "forced only (a permitted override): {PR_CREATED}, {READY_FOR_QA}"
                )),
        "next from the final stage:\n{}",
        rest.join("\n")
    );
    Ok(())
}

pub fn rollback_goes_back_only_where_the_history_was(suite: &Suite) -> Result<()> {
    let (t, config) = install(suite, "steer-rollback")?;
    let ns = t.ns.clone();
    t.create_ok(ARGO_WORKFLOW, &workflow_at("task", Some(PR_CREATED)))?;
    sg(&t, BOB, &config, &["set", "task", READY_FOR_QA])?.ok()?;
    sg(&t, BOB, &config, &["set", "task", PR_APPROVED])?.ok()?;
    let before = version(&t, "task")?;

    // A stage it never was in: refused before anything is written.
    let out = sg(
        &t,
        ALICE,
        &config,
        &[
            "rollback",
            "task",
            "--to",
            "waiting-for-godot",
            "--reason",
            "r",
        ],
    )?
    .run()?;
    expect_stop(
        &out,
        2,
        &format!(
            "stage-guard: no rollback of {ns}/task to \"waiting-for-godot\": it was never at \"waiting-for-godot\": its history shows \"{PR_CREATED}\", \"{READY_FOR_QA}\", \"{PR_APPROVED}\""
        ),
    )?;
    // Not permitted to force: the webhook refuses.
    let reason = "QA found a regression";
    let out = sg(
        &t,
        BOB,
        &config,
        &["rollback", "task", "--to", PR_CREATED, "--reason", reason],
    )?
    .run()?;
    expect_stop(
        &out,
        1,
        &refusal(&format!(
            "stage change \"{PR_APPROVED}\" -> \"{PR_CREATED}\" on {ns}/task denied (override-not-permitted): bob may not force stage changes (not listed under override.users or override.groups); remove the stage-guard.io/override-reason annotation"
        )),
    )?;
    ensure!(version(&t, "task")? == before, "a refused rollback wrote");

    // Permitted: a recorded forced change.
    let out = sg(
        &t,
        ALICE,
        &config,
        &["rollback", "task", "--to", PR_CREATED, "--reason", reason],
    )?
    .run()?;
    expect_exit(&out, 0)?;
    let last = last_entry(&t, "task")?;
    ensure!(
        out.stdout
            == format!(
                "{ns}/task: \"{PR_APPROVED}\" -> \"{PR_CREATED}\": admitted as a forced change, recorded by alice at {} with the reason \"{reason}\"\n",
                last["at"].as_str().unwrap_or_default()
            )
            && out.stderr
                == format!(
                    "Warning: forced: {ns}/task \"{PR_APPROVED}\" -> \"{PR_CREATED}\" by alice\n"
                ),
        "rollback printed:\n{}{}",
        out.stdout,
        out.stderr
    );
    ensure!(
        last["from"] == PR_APPROVED && last["to"] == PR_CREATED && last["override"] == reason,
        "last entry {last}"
    );
    // Back where it already is: nothing to do.
    let out = sg(
        &t,
        ALICE,
        &config,
        &["rollback", "task", "--to", PR_CREATED, "--reason", reason],
    )?
    .run()?;
    expect_exit(&out, 0)?;
    ensure!(out.stdout.contains("is already at"), "{}", out.stdout);

    // A young Workflow was never further on; an unlabelled one has no history at all.
    t.create_ok(ARGO_WORKFLOW, &workflow_at("young", Some(PR_CREATED)))?;
    let out = sg(
        &t,
        ALICE,
        &config,
        &["rollback", "young", "--to", READY_FOR_QA, "--reason", "r"],
    )?
    .run()?;
    expect_stop(
        &out,
        2,
        &format!(
            "stage-guard: no rollback of {ns}/young to \"{READY_FOR_QA}\": it was never at \"{READY_FOR_QA}\": its history shows \"{PR_CREATED}\""
        ),
    )?;
    t.create_ok(ARGO_WORKFLOW, &workflow_at("plain", None))?;
    let out = sg(
        &t,
        ALICE,
        &config,
        &["rollback", "plain", "--to", PR_CREATED, "--reason", "r"],
    )?
    .run()?;
    expect_stop(
        &out,
        2,
        &format!(
            "stage-guard: no rollback of {ns}/plain to \"{PR_CREATED}\": it has no stage history, so it cannot show where the Workflow was"
        ),
    )?;
    // A reason that says nothing.
    let out = sg(
        &t,
        ALICE,
        &config,
        &["rollback", "task", "--to", PR_CREATED, "--reason", " "],
    )?
    .run()?;
    expect_stop(
        &out,
        2,
        "stage-guard: --reason must say why: it is recorded in the history",
    )?;
    Ok(())
}
