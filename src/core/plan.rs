//! The mutating decision (SPEC 4.2, 4.4, 4.5): never a denial; stamps the history, moves a permitted
//! override reason into it, and changes nothing it does not have to. The JSON Patch that carries a
//! plan out is the transport's (`admission::patch`).

use std::time::SystemTime;

use super::facts::Facts;
use super::graph::StageChange;
use super::history::{self, Entry};
use super::policy::{Policy, Resubmit};
use super::reason::Reason;
use super::words;

/// What the incoming history annotation must become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEdit {
    Keep,
    Set(String),
    Remove,
}

/// The changes to make to the incoming object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `resubmit: reset`: the copied stage label goes.
    pub remove_stage_label: bool,
    pub history: HistoryEdit,
    /// A permitted override request: the annotation is never stored.
    pub remove_override: bool,
    pub warnings: Vec<String>,
    /// The client changed or removed the history annotation and the plan puts back what stage-guard
    /// wrote (SPEC 4.2): said in a warning and counted.
    pub discarded_edit: bool,
    /// The stage change the plan records, if any (for logs).
    pub recorded: Option<(Option<String>, Option<String>)>,
}

impl Plan {
    fn nothing() -> Plan {
        Plan {
            remove_stage_label: false,
            history: HistoryEdit::Keep,
            remove_override: false,
            warnings: Vec::new(),
            discarded_edit: false,
            recorded: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.remove_stage_label && self.history == HistoryEdit::Keep && !self.remove_override
    }
}

/// Plans the mutation of one write; `now` is the time stamped into a new entry.
pub(crate) fn plan(policy: &Policy, f: &Facts<'_>, now: SystemTime) -> Plan {
    if !f.is_judged() || f.stale {
        // Not judged, or the write will fail with 409 Conflict; touching it could only mislead
        // (apiserver-contract 3).
        return Plan::nothing();
    }
    let Some(pipeline) = policy.judging(f) else {
        return Plan::nothing();
    };
    let mut plan = Plan::nothing();

    let mut to = f.to;
    let resubmit = policy.resubmit_rule(f.is_create(), f.resubmitted);
    if resubmit == Some(Resubmit::Reset) && to.is_some() {
        plan.remove_stage_label = true;
        to = None;
    }
    let stored_history = f.trusted_history();
    let incoming_history = f.incoming_history.as_deref();

    let override_reason = f.override_reason();
    let override_permitted =
        override_reason.is_some() && policy.override_.permits(f.username, f.groups);
    plan.remove_override = override_permitted;

    // A forced move into another pipeline is recorded even when the stage stays: it is the only trace
    // of the override (whose annotation is never stored), and the validating webhook reads it there.
    let moved = f.pipeline_changed() && override_permitted;
    let target: Option<String> = if f.from != to || moved {
        plan.recorded = Some((f.from.map(str::to_owned), to.map(str::to_owned)));
        let already = history::appended_entry(
            stored_history,
            incoming_history,
            f.from,
            to,
            f.username,
            policy.history.limit,
        );
        if already.is_some() {
            // A second call for the same change: keep the first stamp (reinvocation, retries).
            incoming_history.map(str::to_owned)
        } else {
            let forced = override_permitted
                && (f.pipeline_changed()
                    || pipeline.graph.judge(StageChange {
                        from: f.from,
                        to,
                        resubmit_keep_create: resubmit == Some(Resubmit::Keep),
                        override_permitted: true,
                    }) == Reason::Override);
            let mut entry = Entry::new(f.from, to, f.username, now);
            if forced {
                entry.override_ = override_reason.map(str::to_owned);
            }
            let base = match stored_history.map(history::parse) {
                Some(Err(_)) => {
                    plan.warnings.push(words::history_replaced(
                        &policy.history.annotation,
                        &f.workflow,
                    ));
                    Vec::new()
                }
                Some(Ok(entries)) => entries,
                None => Vec::new(),
            };
            Some(history::render(&history::append(
                &base,
                entry,
                policy.history.limit,
            )))
        }
    } else {
        // No stage change: the stored history stands, whatever the client sent.
        stored_history.map(str::to_owned)
    };

    plan.history = match (target, incoming_history) {
        (Some(t), Some(i)) if t == i => HistoryEdit::Keep,
        (Some(t), _) => HistoryEdit::Set(t),
        (None, Some(_)) => HistoryEdit::Remove,
        (None, None) => HistoryEdit::Keep,
    };
    // An edit is what this write changed: the incoming annotation differs from the stored one (a
    // merge patch that leaves it alone sends the stored text back) and stage-guard overrides it.
    if plan.history != HistoryEdit::Keep && incoming_history != f.stored_history.as_deref() {
        plan.discarded_edit = true;
        plan.warnings.push(words::history_edit_discarded(
            &policy.history.annotation,
            &f.workflow,
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::Operation;
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    const A: Option<&str> = Some("waiting-pr-created");
    const B: Option<&str> = Some("waiting-ready-for-qa");
    const C: Option<&str> = Some("waiting-pr-approved");

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_685_000)
    }

    fn facts<'a>(from: Option<&'a str>, to: Option<&'a str>) -> Facts<'a> {
        Facts {
            operation: Operation::Update,
            stale: false,
            resubmitted: false,
            from,
            to,
            username: "bob",
            groups: &[],
            stored_history: None,
            incoming_history: None,
            stored_override: None,
            incoming_override: None,
            pipeline: Some(0),
            incoming_pipeline: Some(0),
            workflow: "argo/wf".into(),
        }
    }

    fn text(s: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(s))
    }

    fn set(plan: &Plan) -> Vec<Entry> {
        match &plan.history {
            HistoryEdit::Set(s) => history::parse(s).unwrap(),
            other => panic!("expected a new history, got {other:?}"),
        }
    }

    fn policy(extra: &str) -> Policy {
        Policy::from_yaml(&format!("override:\n  users: [alice]\n{extra}")).unwrap()
    }

    #[test]
    fn stamps_every_change_legal_or_not() {
        let p = policy("");
        for (from, to) in [
            (None, A),
            (A, B),
            (A, C),
            (C, A),
            (B, None),
            (A, Some("bogus")),
        ] {
            let plan = plan(&p, &facts(from, to), now());
            let entries = set(&plan);
            assert_eq!(entries.len(), 1);
            assert!(entries[0].records(from, to, "bob"));
            assert_eq!(entries[0].at, "2026-11-26T09:23:20Z");
            assert_eq!(entries[0].override_, None);
        }
    }

    #[test]
    fn no_change_and_nothing_else_means_no_patch() {
        let stored = history::render(&[Entry::new(None, A, "ci", now())]);
        let mut f = facts(A, A);
        f.stored_history = text(&stored);
        f.incoming_history = text(&stored);
        assert!(plan(&policy(""), &f, now()).is_empty());
        assert!(plan(&policy(""), &facts(None, None), now()).is_empty());
    }

    #[test]
    fn restores_dropped_or_edited_history() {
        let stored = history::render(&[Entry::new(None, A, "ci", now())]);
        let mut f = facts(A, A);
        f.stored_history = text(&stored);
        assert_eq!(
            plan(&policy(""), &f, now()).history,
            HistoryEdit::Set(stored.clone())
        );
        f.incoming_history = text("[]");
        assert_eq!(
            plan(&policy(""), &f, now()).history,
            HistoryEdit::Set(stored.clone())
        );
        // a stored object without history means no annotation, never "[]"
        let mut f = facts(A, A);
        f.incoming_history = text("[]");
        assert_eq!(plan(&policy(""), &f, now()).history, HistoryEdit::Remove);
        // and a change appends to the stored history, not to what the client sent
        let mut f = facts(A, B);
        f.stored_history = text(&stored);
        f.incoming_history = text("[]");
        let entries = set(&plan(&policy(""), &f, now()));
        assert_eq!(entries.len(), 2);
        assert!(entries[1].records(A, B, "bob"));
    }

    #[test]
    fn a_discarded_edit_is_said_and_flagged_and_an_untouched_history_is_not() {
        let p = policy("");
        let stored = history::render(&[Entry::new(None, A, "ci", now())]);
        // edited, removed, edited on a stage change: discarded, with a warning naming the annotation
        for (from, to, incoming) in [(A, A, Some("[]")), (A, A, None), (A, B, Some("[]"))] {
            let mut f = facts(from, to);
            f.stored_history = text(&stored);
            f.incoming_history = incoming.map(Cow::Borrowed);
            let planned = plan(&p, &f, now());
            assert!(planned.discarded_edit, "{from:?} -> {to:?} {incoming:?}");
            assert_eq!(planned.warnings.len(), 1, "{:?}", planned.warnings);
            assert!(
                planned.warnings[0]
                    .starts_with("stage-guard.io/history is written by stage-guard: the edit"),
                "{:?}",
                planned.warnings
            );
            assert!(planned.warnings[0].chars().count() <= crate::core::WARNING_MAX_CHARS);
        }
        // the stored history sent back unchanged (a merge patch of the label): an ordinary append
        let mut f = facts(A, B);
        f.stored_history = text(&stored);
        f.incoming_history = text(&stored);
        let planned = plan(&p, &f, now());
        assert!(
            !planned.discarded_edit && planned.warnings.is_empty(),
            "{planned:?}"
        );
        // client history on CREATE is discarded too, and said
        let mut f = facts(None, A);
        f.operation = Operation::Create;
        f.incoming_history = text(&stored);
        assert!(plan(&p, &f, now()).discarded_edit);
    }

    #[test]
    fn an_unlabelled_object_is_not_judged_and_its_history_is_not_built_on() {
        let p = policy("");
        let forged = history::render(&[
            Entry::new(None, A, "mallory", now()),
            Entry::new(A, B, "mallory", now()),
        ]);
        // staying unlabelled: nothing is planned, whatever happens to the annotation
        let mut f = facts(None, None);
        f.stored_history = text(&forged);
        f.incoming_history = text("[]");
        assert!(plan(&p, &f, now()).is_empty());
        // entering the first stage: a fresh history, the stored one ignored, and no edit to report
        let mut f = facts(None, A);
        f.stored_history = text(&forged);
        f.incoming_history = text(&forged);
        let planned = plan(&p, &f, now());
        let entries = set(&planned);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].records(None, A, "bob"));
        assert!(!planned.discarded_edit);
    }

    #[test]
    fn a_second_call_for_the_same_change_keeps_the_first_stamp() {
        let p = policy("");
        let first = plan(&p, &facts(A, B), now());
        let HistoryEdit::Set(stamped) = &first.history else {
            panic!()
        };
        let mut again = facts(A, B);
        again.incoming_history = text(stamped);
        assert!(plan(&p, &again, now() + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn permitted_override_moves_the_reason_into_the_entry() {
        let p = policy("");
        let mut f = facts(A, C);
        f.username = "alice";
        f.incoming_override = text("QA re-run");
        let plan1 = plan(&p, &f, now());
        assert!(plan1.remove_override);
        assert_eq!(set(&plan1)[0].override_.as_deref(), Some("QA re-run"));
        // on a legal change the entry is ordinary, with no change nothing is recorded
        let mut f2 = f.clone();
        f2.to = B;
        let plan2 = plan(&p, &f2, now());
        assert!(plan2.remove_override);
        assert_eq!(set(&plan2)[0].override_, None);
        let mut f3 = f.clone();
        f3.to = A;
        let plan3 = plan(&p, &f3, now());
        assert!(plan3.remove_override && plan3.history == HistoryEdit::Keep);
        // not permitted: left as it came for the validating webhook to refuse
        let mut f4 = f.clone();
        f4.username = "bob";
        let plan4 = plan(&p, &f4, now());
        assert!(!plan4.remove_override);
        assert_eq!(set(&plan4)[0].override_, None);
        // the same reason as stored is not a request
        let mut f5 = f.clone();
        f5.stored_override = text("QA re-run");
        assert!(!plan(&p, &f5, now()).remove_override);
    }

    #[test]
    fn stale_put_is_left_alone() {
        let mut f = facts(A, C);
        f.stale = true;
        assert!(plan(&policy(""), &f, now()).is_empty());
    }

    #[test]
    fn corrupt_history_is_replaced_on_a_change_with_a_warning_and_kept_otherwise() {
        let mut f = facts(A, B);
        f.stored_history = text("{oops");
        f.incoming_history = text("{oops");
        let pl = plan(&policy(""), &f, now());
        assert_eq!(set(&pl).len(), 1);
        assert_eq!(pl.warnings.len(), 1);
        assert!(pl.warnings[0].contains("did not parse"));
        let mut f = facts(A, A);
        f.stored_history = text("{oops");
        f.incoming_history = text("{oops");
        assert!(plan(&policy(""), &f, now()).is_empty());
    }

    #[test]
    fn resubmitted_create_reset_and_keep() {
        let copied = history::render(&[
            Entry::new(None, A, "ci", now()),
            Entry::new(A, B, "ci", now()),
        ]);
        let mut f = facts(None, B);
        f.operation = Operation::Create;
        f.resubmitted = true;
        f.incoming_history = text(&copied);
        let reset = plan(&policy(""), &f, now());
        assert!(reset.remove_stage_label);
        assert_eq!(reset.history, HistoryEdit::Remove);
        let keep = plan(&policy("resubmit: keep\n"), &f, now());
        assert!(!keep.remove_stage_label);
        let entries = set(&keep);
        assert_eq!(entries.len(), 1);
        assert!(entries[0].records(None, B, "bob"));
    }

    #[test]
    fn history_limit_applies() {
        let full: Vec<Entry> = (0..3)
            .map(|i| Entry::new(None, A, &format!("u{i}"), now()))
            .collect();
        let stored = history::render(&full);
        let mut f = facts(A, B);
        f.stored_history = text(&stored);
        f.incoming_history = text(&stored);
        let entries = set(&plan(&policy("history:\n  limit: 3\n"), &f, now()));
        assert_eq!(
            entries.iter().map(|e| e.by.as_str()).collect::<Vec<_>>(),
            ["u1", "u2", "bob"]
        );
    }
}
