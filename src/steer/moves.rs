//! `stage-guard set NAME STAGE` and `stage-guard rollback NAME --to STAGE --reason R`: a stage write
//! conditional on the resourceVersion just read, so a Workflow that changed in between is read and
//! checked again instead of overwritten blindly (a bounded number of times). The webhooks judge the
//! write; what they say (a refusal, warnings, the history entry) is what the command prints.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cli::steer::{RollbackArgs, SetArgs};
use crate::cluster::failure::Failure;
use crate::cluster::workflows::{stage_patch, stored_from_meta};
use crate::core::audit::Stored;
use crate::core::history::{self, Entry};
use crate::core::moves::check_rollback;
use crate::core::{Policy, quote_stage};

use super::Stop;
use super::session::Session;

/// Writes that lose to a concurrent writer before the command gives up.
const ATTEMPTS: usize = 5;

/// What the move is for: a rollback may only go where the history shows the Workflow was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Set,
    Rollback,
}

pub async fn set(args: SetArgs) -> Result<u8, Stop> {
    let s = Session::open(&args.cluster).await?;
    move_to(
        &s,
        Intent::Set,
        &args.name,
        &args.stage,
        args.reason.as_deref(),
    )
    .await
}

pub async fn rollback(args: RollbackArgs) -> Result<u8, Stop> {
    if args.reason.trim().is_empty() {
        return Err(Stop::usage(
            "--reason must say why: it is recorded in the history",
        ));
    }
    let s = Session::open(&args.cluster).await?;
    move_to(
        &s,
        Intent::Rollback,
        &args.name,
        &args.to,
        Some(&args.reason),
    )
    .await
}

async fn move_to(
    s: &Session,
    intent: Intent,
    name: &str,
    target: &str,
    reason: Option<&str>,
) -> Result<u8, Stop> {
    let ns = s.namespace.as_str();
    let mut meta = s.workflows.get(ns, name).await?;
    for attempt in 1..=ATTEMPTS {
        let before = stored_from_meta(&s.policy, &meta);
        let from = before.labels.get(&s.policy.label).cloned();
        if intent == Intent::Rollback {
            check_rollback(&before, target).map_err(|e| {
                Stop::usage(format!("no rollback of {ns}/{name} to {target:?}: {e}"))
            })?;
        }
        if from.as_deref() == Some(target) {
            println!("{}", already_there(&before, target));
            return Ok(0);
        }
        let Some(version) = meta.resource_version.clone() else {
            return Err(Failure::Garbled(format!("{ns}/{name} has no resourceVersion")).into());
        };
        let patch = stage_patch(&s.policy, target, reason, &version);
        match s.workflows.merge_patch(ns, name, &patch).await {
            Ok(reply) => {
                for warning in &reply.warnings {
                    eprintln!("Warning: {warning}");
                }
                println!(
                    "{}",
                    moved(
                        &s.policy,
                        &before,
                        &reply.value,
                        from.as_deref(),
                        target,
                        reason
                    )
                );
                return Ok(0);
            }
            Err(Failure::Conflict(_)) => {
                eprintln!(
                    "conflict: {ns}/{name} changed since it was read (resourceVersion {version}); \
                     reading it again ({attempt} of {ATTEMPTS} attempts used)"
                );
                meta = s.workflows.get(ns, name).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Failure::KeptConflicting {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        attempts: ATTEMPTS,
    }
    .into())
}

fn entries(w: &Stored) -> Vec<Entry> {
    w.history
        .as_deref()
        .and_then(|h| history::parse(h).ok())
        .unwrap_or_default()
}

/// `argo/task-7 is already at "b" (moved there by bob at ...): nothing to change`.
fn already_there(w: &Stored, target: &str) -> String {
    let by = entries(w)
        .last()
        .filter(|e| e.to.as_deref() == Some(target))
        .map(|e| format!(" (moved there by {} at {})", e.by, e.at))
        .unwrap_or_default();
    format!(
        "{}/{} is already at {}{by}: nothing to change",
        w.namespace,
        w.name,
        quote_stage(Some(target))
    )
}

/// What the cluster made of an admitted move: the change, and how the history recorded it.
fn moved(
    policy: &Policy,
    before: &Stored,
    after_meta: &ObjectMeta,
    from: Option<&str>,
    target: &str,
    reason: Option<&str>,
) -> String {
    let after = stored_from_meta(policy, after_meta);
    let head = format!(
        "{}/{}: {} -> {}",
        after.namespace,
        after.name,
        quote_stage(from),
        quote_stage(Some(target))
    );
    let (old, new) = (entries(before), entries(&after));
    // The entry of this move: a new last entry for this change (the history may also have been
    // trimmed to its limit, so compare the last entries, not only the lengths).
    let recorded = new
        .last()
        .filter(|e| old.last() != Some(*e))
        .filter(|e| e.from.as_deref() == from && e.to.as_deref() == Some(target));
    let mut line = match recorded {
        Some(e) => match &e.override_ {
            Some(reason) => format!(
                "{head}: admitted as a forced change, recorded by {} at {} with the reason {reason:?}",
                e.by, e.at
            ),
            None if reason.is_some() => format!(
                "{head}: admitted as a legal move (no override needed, the reason is not recorded), recorded by {} at {}",
                e.by, e.at
            ),
            None => format!("{head}: admitted, recorded by {} at {}", e.by, e.at),
        },
        None => format!(
            "{head}: admitted, but no history entry was recorded (is stage-guard's mutating webhook installed?)"
        ),
    };
    let stored = after.labels.get(&policy.label).map(String::as_str);
    if stored != Some(target) {
        line.push_str(&format!("; the stored stage is {}", quote_stage(stored)));
    }
    let annotation = &policy.override_.annotation;
    if after_meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotation))
    {
        line.push_str(&format!(
            "; the override annotation {annotation} was stored (no stage-guard mutating webhook took it)"
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    fn meta(stage: &str, entries: &[Entry], extra: &[(&str, &str)]) -> ObjectMeta {
        let mut annotations: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !entries.is_empty() {
            annotations.insert("stage-guard.io/history".into(), history::render(entries));
        }
        ObjectMeta {
            namespace: Some("argo".into()),
            name: Some("task-7".into()),
            labels: Some(BTreeMap::from([("current-stage".into(), stage.into())])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    #[test]
    fn an_admitted_move_says_how_the_history_recorded_it() {
        let p = Policy::from_yaml("stages: [a, b, c]").unwrap();
        let first = Entry::new(None, Some("a"), "bob", at(0));
        let before = stored_from_meta(&p, &meta("a", std::slice::from_ref(&first), &[]));
        let moved_to = Entry::new(Some("a"), Some("b"), "alice", at(60));
        let after = meta("b", &[first.clone(), moved_to], &[]);
        assert_eq!(
            moved(&p, &before, &after, Some("a"), "b", None),
            "argo/task-7: \"a\" -> \"b\": admitted, recorded by alice at 2026-11-26T08:01:00Z"
        );
        // No webhook took the write: no entry, and the override annotation stayed.
        let untouched = meta(
            "c",
            std::slice::from_ref(&first),
            &[("stage-guard.io/override-reason", "hotfix")],
        );
        assert_eq!(
            moved(&p, &before, &untouched, Some("a"), "c", Some("hotfix")),
            "argo/task-7: \"a\" -> \"c\": admitted, but no history entry was recorded (is stage-guard's \
             mutating webhook installed?); the override annotation stage-guard.io/override-reason was \
             stored (no stage-guard mutating webhook took it)"
        );
        // Something else set the stage after the move (another mutating webhook, say).
        let elsewhere = meta("a", std::slice::from_ref(&first), &[]);
        assert!(
            moved(&p, &before, &elsewhere, Some("a"), "b", None)
                .ends_with("; the stored stage is \"a\"")
        );
        assert_eq!(
            already_there(&before, "a"),
            "argo/task-7 is already at \"a\" (moved there by bob at 2026-11-26T08:00:00Z): nothing to change"
        );
    }
}
