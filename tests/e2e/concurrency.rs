//! SPEC 4.6: racing writers, serialised the way kube-apiserver serialises them (read, patch,
//! mutating admission, resourceVersion check, validating admission, compare-and-swap, retry).

use crate::support::apiserver::{ApiServer, Patch};
use crate::support::checks::*;
use crate::support::fixtures::*;
use crate::support::process::Webhook;
use crate::support::review::UserInfo;
use serde_json::Value;
use std::collections::BTreeMap;

const CLIENTS: usize = 20;

fn step(i: usize) -> UserInfo {
    UserInfo::new(
        &format!("system:serviceaccount:argo:pipeline-step-{i}"),
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:argo",
            "system:authenticated",
        ],
    )
}

async fn created(api: &ApiServer) -> String {
    let out = api
        .create(
            &UserInfo::workflow_step(),
            workflow_from_template("agent-pipeline", Some(PR_CREATED)),
            false,
        )
        .await
        .expect("create");
    name(&out.object)
}

fn legal_next(from: Option<&str>) -> Vec<Option<&'static str>> {
    match from {
        None => vec![Some(PR_CREATED)],
        Some(PR_CREATED) => vec![Some(READY_FOR_QA)],
        Some(READY_FOR_QA) => vec![Some(PR_APPROVED)],
        _ => vec![],
    }
}

/// Every stored version, oldest first: the stage only moves along an edge of the default graph,
/// and each stage change adds exactly one history entry for it (the rest of the history unchanged).
#[track_caller]
fn assert_every_version_legal(api: &ApiServer, wf: &str) {
    let versions = api.store().versions(NS, wf);
    assert!(!versions.is_empty());
    for pair in versions.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let (from, to) = (stage(old), stage(new));
        let (h_old, h_new) = (history(old), history(new));
        if from == to {
            assert_eq!(
                h_old,
                h_new,
                "history changed without a stage change at rv {}",
                rv(new)
            );
            continue;
        }
        assert!(
            legal_next(from.as_deref()).contains(&to.as_deref()),
            "illegal change {from:?} -> {to:?} landed at rv {}",
            rv(new)
        );
        assert_eq!(
            h_new.len(),
            h_old.len() + 1,
            "one entry per change at rv {}",
            rv(new)
        );
        assert_eq!(
            h_new[..h_old.len()],
            h_old[..],
            "append-only at rv {}",
            rv(new)
        );
        let entry = h_new.last().unwrap();
        assert_eq!(entry["from"].as_str(), from.as_deref());
        assert_eq!(entry["to"].as_str(), to.as_deref());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_identical_advances_all_succeed_as_one_change() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let wf = created(&api).await;
    // Every client reads the PR-created version before any of them goes on.
    api.gate_first_reads(CLIENTS);

    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (api, wf) = (api.clone(), wf.clone());
        tasks.push(tokio::spawn(async move {
            api.patch(
                &step(i),
                NS,
                &wf,
                Patch::Merge(stage_merge_patch(READY_FOR_QA)),
                false,
            )
            .await
        }));
    }
    let (mut retried, mut final_changes) = (0, 0);
    for task in tasks {
        let out = task
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("a racing legal change failed: {e:?}"));
        assert_eq!(stage(&out.object).as_deref(), Some(READY_FOR_QA));
        if out.attempts > 1 {
            retried += 1;
        }
        // What the validating webhook said on the attempt that was stored.
        let last = out
            .calls_to(crate::support::review::Hook::Validating)
            .last()
            .map(|c| c.audit.clone())
            .unwrap_or_default();
        if last.get("reason").map(String::as_str) == Some("advance") {
            final_changes += 1;
        }
    }
    assert_eq!(
        retried,
        CLIENTS - 1,
        "all but the first writer lost the race and were re-admitted"
    );
    assert_eq!(
        final_changes, 1,
        "exactly one stored write was the change; the others saw O = N"
    );
    let stored = api.store().get(NS, &wf).unwrap();
    let h = history(&stored);
    assert_eq!(h.len(), 2, "{h:?}");
    let changes: Vec<&Value> = h.iter().filter(|e| e["to"] == READY_FOR_QA).collect();
    assert_eq!(changes.len(), 1, "exactly one entry for the change: {h:?}");
    assert!(
        changes[0]["by"]
            .as_str()
            .unwrap()
            .starts_with("system:serviceaccount:argo:pipeline-step-")
    );
    assert_every_version_legal(&api, &wf);
    api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_jumps_never_land_and_the_legal_change_does() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let wf = created(&api).await;
    let read_rv = rv(&api.store().get(NS, &wf).unwrap());
    api.gate_first_reads(CLIENTS);

    // Legal clients move to QA; jumpers aim at PR approved from the PR-created state they read,
    // either carrying that resourceVersion or testing the label in a JSON patch (so a jump can
    // never become legal by arriving after QA is stored).
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (api, wf) = (api.clone(), wf.clone());
        let patch = match i % 4 {
            0 => Patch::Merge(stage_merge_patch_at(PR_APPROVED, &read_rv)),
            1 => Patch::Json(serde_json::json!([
                {"op": "test", "path": "/metadata/labels/current-stage", "value": PR_CREATED},
                {"op": "replace", "path": "/metadata/labels/current-stage", "value": PR_APPROVED},
            ])),
            _ => Patch::Merge(stage_merge_patch(READY_FOR_QA)),
        };
        tasks.push(tokio::spawn(async move {
            (i, api.patch(&step(i), NS, &wf, patch, false).await)
        }));
    }
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        let (i, result) = task.await.expect("task");
        match (i % 4, result) {
            (0 | 1, Ok(out)) => panic!("jumper {i} landed: {:?}", out.object["metadata"]["labels"]),
            // All clients read the PR-created version first, so every jump is judged against it.
            (0 | 1, Err(e)) => {
                assert_eq!(e.code, 403, "jumper {i}: {e:?}");
                assert_eq!(
                    e.validating_audit("reason"),
                    Some("skip"),
                    "jumper {i}: {e:?}"
                );
                *outcomes.entry(e.code).or_insert(0) += 1;
            }
            (_, Ok(out)) => assert_eq!(stage(&out.object).as_deref(), Some(READY_FOR_QA)),
            (_, Err(e)) => panic!("legal client {i} failed: {e:?}"),
        }
    }
    assert_eq!(outcomes.values().sum::<usize>(), CLIENTS / 2);
    let stored = api.store().get(NS, &wf).unwrap();
    assert_eq!(stage(&stored).as_deref(), Some(READY_FOR_QA));
    assert_eq!(history(&stored).len(), 2);
    assert_every_version_legal(&api, &wf);
    api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_unconditional_jumps_only_ever_follow_edges() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let wf = created(&api).await;

    // Without preconditions a jump to PR approved is legal once QA is stored, and only then.
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (api, wf) = (api.clone(), wf.clone());
        let target = if i % 2 == 0 {
            PR_APPROVED
        } else {
            READY_FOR_QA
        };
        tasks.push(tokio::spawn(async move {
            (
                target,
                api.patch(
                    &step(i),
                    NS,
                    &wf,
                    Patch::Merge(stage_merge_patch(target)),
                    false,
                )
                .await,
            )
        }));
    }
    for task in tasks {
        let (target, result) = task.await.expect("task");
        if let Err(e) = result {
            // Judged against the stored stage: approved before QA is a skip, QA after approved a regression.
            let expected = if target == PR_APPROVED {
                "skip"
            } else {
                "regression"
            };
            assert_eq!(e.code, 403, "{e:?}");
            assert_eq!(
                e.validating_audit("reason"),
                Some(expected),
                "{target}: {e:?}"
            );
        }
    }
    let stored = api.store().get(NS, &wf).unwrap();
    assert!(
        matches!(stage(&stored).as_deref(), Some(READY_FOR_QA | PR_APPROVED)),
        "{:?}",
        stage(&stored)
    );
    assert_every_version_legal(&api, &wf);
    api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_puts_with_the_same_resource_version_have_one_winner() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let wf = created(&api).await;
    let read = api.store().get(NS, &wf).unwrap();
    api.gate_first_reads(CLIENTS);

    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let api = api.clone();
        let body = with_label(&with_stage(&read, READY_FOR_QA), "writer", &i.to_string());
        tasks.push(tokio::spawn(async move {
            api.update(&step(i), body, false).await
        }));
    }
    let (mut won, mut conflicts) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(e) => {
                assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"), "{e:?}");
                conflicts += 1;
            }
        }
    }
    assert_eq!((won, conflicts), (1, CLIENTS - 1));
    let stored = api.store().get(NS, &wf).unwrap();
    assert_eq!(history(&stored).len(), 2);
    assert_eq!(
        api.store().versions(NS, &wf).len(),
        2,
        "one create, one winning update"
    );
    assert_every_version_legal(&api, &wf);
    api.assert_no_violations();
}
