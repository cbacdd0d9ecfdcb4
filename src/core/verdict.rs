//! The validating decision (SPEC 4.1): the whole decision table, warn mode and the history check.

use super::facts::Facts;
use super::graph::StageChange;
use super::history::HistoryWrite;
use super::mode::Mode;
use super::pipeline::Pipeline;
use super::policy::{Policy, Resubmit};
use super::reason::Reason;
use super::words::Say;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    /// Admitted by `mode: warn` although the stage rules deny it.
    Warned,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
        }
    }
}

/// The decision on one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reason: Reason,
    /// One line: the denial message, or a description of what was admitted.
    pub message: String,
    /// Single-line warnings of at most [`super::words::WARNING_MAX_CHARS`] characters.
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.outcome != Outcome::Denied
    }
}

/// Decides one write, given how its history annotation changed: the rows of SPEC 4.1 from top to
/// bottom, then warn mode, then the history requirement.
pub(crate) fn decide(
    policy: &Policy,
    pipeline: &Pipeline,
    w: &Facts<'_>,
    history: &HistoryWrite,
) -> Verdict {
    let graph = &pipeline.graph;
    let entry_override = matches!(history, HistoryWrite::Appended(e) if e.override_.is_some());
    let override_requested = w.override_reason().is_some() || entry_override;
    let override_permitted = override_requested && policy.override_.permits(w.username, w.groups);
    let say = Say { policy, graph, w };
    let deny = |reason: Reason| Verdict {
        outcome: Outcome::Denied,
        reason,
        message: say.denied(reason),
        warnings: Vec::new(),
    };

    if override_requested && !override_permitted {
        return deny(Reason::OverrideNotPermitted);
    }
    if *history == HistoryWrite::Tampered {
        return deny(Reason::HistoryTampered);
    }

    // Moving a staged object into another pipeline changes which rules judge it from then on: only a
    // permitted override may do that, and it is then a forced change whatever the stages.
    if w.pipeline_changed() {
        if !override_permitted {
            return deny(Reason::PipelineChanged);
        }
        // Forced into another pipeline: it must land on a stage that pipeline knows (or none), in
        // every mode, for it is judged by that pipeline from now on.
        let lands = policy
            .pipelines
            .get(w.incoming_pipeline.unwrap_or(usize::MAX))
            .is_none_or(|target| w.to.is_none_or(|n| target.graph.is_known(n)));
        if !lands {
            return deny(Reason::UnknownStage);
        }
    }
    let reason = if w.pipeline_changed() {
        Reason::Override
    } else {
        graph.judge(StageChange {
            from: w.from,
            to: w.to,
            resubmit_keep_create: policy.resubmit_rule(w.is_create(), w.resubmitted)
                == Some(Resubmit::Keep),
            override_permitted,
        })
    };

    let outcome = if reason.admits() {
        Outcome::Allowed
    } else if pipeline.mode == Mode::Warn && reason.is_stage_rule_denial() {
        Outcome::Warned
    } else {
        return deny(reason);
    };

    let changed = w.from != w.to;
    if changed && policy.history.required && !matches!(history, HistoryWrite::Appended(_)) {
        return deny(Reason::HistoryMissing);
    }

    let (message, warnings) = match outcome {
        Outcome::Warned => {
            let (message, warning) = say.warned(reason);
            (message, vec![warning])
        }
        _ if reason == Reason::Override => {
            let (message, warning) = say.forced();
            (message, vec![warning])
        }
        _ => (say.allowed(reason), Vec::new()),
    };
    Verdict {
        outcome,
        reason,
        message,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::Operation;
    use crate::core::history::Entry;
    use crate::core::words::WARNING_MAX_CHARS;
    use std::time::UNIX_EPOCH;

    const A: Option<&str> = Some("waiting-pr-created");
    const B: Option<&str> = Some("waiting-ready-for-qa");
    const C: Option<&str> = Some("waiting-pr-approved");

    fn policy(extra: &str) -> Policy {
        Policy::from_yaml(&format!(
            "override:\n  users: [alice]\n  groups: [sre]\n{extra}"
        ))
        .unwrap()
    }

    fn appended(
        from: Option<&str>,
        to: Option<&str>,
        by: &str,
        reason: Option<&str>,
    ) -> HistoryWrite {
        let mut e = Entry::new(from, to, by, UNIX_EPOCH);
        e.override_ = reason.map(str::to_owned);
        HistoryWrite::Appended(e)
    }

    struct Case<'a> {
        from: Option<&'a str>,
        to: Option<&'a str>,
        user: &'a str,
        annotation: bool,
        history: HistoryWrite,
        create: bool,
        resubmitted: bool,
    }

    impl<'a> Case<'a> {
        /// A change as the mutating webhook leaves it: one history entry appended when the stage changed.
        fn change(from: Option<&'a str>, to: Option<&'a str>) -> Self {
            let history = if from == to {
                HistoryWrite::Unchanged
            } else {
                appended(from, to, "bob", None)
            };
            Case {
                from,
                to,
                user: "bob",
                annotation: false,
                history,
                create: false,
                resubmitted: false,
            }
        }
        fn decide(&self, p: &Policy) -> Verdict {
            let facts = Facts {
                operation: if self.create {
                    Operation::Create
                } else {
                    Operation::Update
                },
                workflow: "argo/play-task-7".into(),
                from: self.from,
                to: self.to,
                resubmitted: self.resubmitted,
                stale: false,
                username: self.user,
                groups: &[],
                stored_history: None,
                incoming_history: None,
                stored_override: None,
                incoming_override: self.annotation.then(|| "a reason".into()),
                pipeline: Some(0),
                incoming_pipeline: Some(0),
            };
            decide(p, p.only(), &facts, &self.history)
        }
    }

    #[test]
    fn the_spec_example_message() {
        let v = Case::change(A, C).decide(&policy(""));
        assert_eq!(v.outcome, Outcome::Denied);
        assert_eq!(
            v.message,
            "stage change \"waiting-pr-created\" -> \"waiting-pr-approved\" on argo/play-task-7 denied (skip): \
             skips \"waiting-ready-for-qa\"; allowed next: \"waiting-ready-for-qa\""
        );
    }

    #[test]
    fn override_rows_come_first() {
        let p = policy("");
        // bob requests an override through the annotation: refused whatever the change, even a legal one
        for (from, to) in [(A, B), (A, C), (B, B)] {
            let mut c = Case::change(from, to);
            c.annotation = true;
            let v = c.decide(&p);
            assert_eq!(v.reason, Reason::OverrideNotPermitted, "{from:?}->{to:?}");
            assert!(v.message.contains("bob may not force"), "{}", v.message);
        }
        // or through an `override` field in the new entry (the annotation already moved by the mutating webhook)
        let mut c = Case::change(A, C);
        c.history = appended(A, C, "bob", Some("because"));
        assert_eq!(c.decide(&p).reason, Reason::OverrideNotPermitted);
        // not permitted is enforced in warn mode too
        assert_eq!(c.decide(&policy("mode: warn\n")).outcome, Outcome::Denied);
    }

    #[test]
    fn permitted_override_forces_a_change_with_a_warning() {
        let p = policy("");
        let mut c = Case::change(A, C);
        c.user = "alice";
        c.history = appended(A, C, "alice", Some("QA re-run"));
        let v = c.decide(&p);
        assert_eq!((v.outcome, v.reason), (Outcome::Allowed, Reason::Override));
        assert_eq!(v.warnings.len(), 1);
        assert_eq!(
            v.warnings[0],
            "forced: argo/play-task-7 \"waiting-pr-created\" -> \"waiting-pr-approved\" by alice"
        );
        // where no mutating webhook ran: the annotation itself, and a legal change stays an advance
        let mut c = Case::change(A, B);
        c.user = "alice";
        c.annotation = true;
        assert_eq!(c.decide(&p).reason, Reason::Advance);
        // an override cannot reach an unknown stage
        let mut c = Case::change(A, Some("nope"));
        c.user = "alice";
        c.annotation = true;
        assert_eq!(c.decide(&p).reason, Reason::UnknownStage);
    }

    #[test]
    fn tampered_history_is_denied_before_the_stage_rules() {
        let mut c = Case::change(B, B);
        c.history = HistoryWrite::Tampered;
        let v = c.decide(&policy("mode: warn\n"));
        assert_eq!(
            (v.outcome, v.reason),
            (Outcome::Denied, Reason::HistoryTampered)
        );
    }

    #[test]
    fn a_change_without_its_history_entry_is_denied_when_required() {
        let mut c = Case::change(A, B);
        c.history = HistoryWrite::Unchanged;
        let v = c.decide(&policy(""));
        assert_eq!(
            (v.outcome, v.reason),
            (Outcome::Denied, Reason::HistoryMissing)
        );
        assert_eq!(
            c.decide(&policy("history:\n  required: false\n")).reason,
            Reason::Advance
        );
        // warn mode admits the skip, but not without history
        let mut c = Case::change(A, C);
        c.history = HistoryWrite::Unchanged;
        assert_eq!(
            c.decide(&policy("mode: warn\n")).reason,
            Reason::HistoryMissing
        );
        // no change, no history needed
        assert_eq!(
            Case::change(B, B).decide(&policy("")).reason,
            Reason::Unchanged
        );
    }

    #[test]
    fn warn_mode_admits_stage_rule_denials_with_a_warning() {
        let p = policy("mode: warn\n");
        for (from, to, reason) in [
            (A, C, Reason::Skip),
            (C, A, Reason::Regression),
            (B, None, Reason::LabelRemoved),
            (A, Some("nope"), Reason::UnknownStage),
        ] {
            let v = Case::change(from, to).decide(&p);
            assert_eq!(
                (v.outcome, v.reason),
                (Outcome::Warned, reason),
                "{from:?}->{to:?}"
            );
            assert_eq!(v.warnings.len(), 1);
            assert!(v.warnings[0].chars().count() <= WARNING_MAX_CHARS);
        }
    }

    #[test]
    fn resubmitted_create_under_keep_and_reset() {
        let mut c = Case::change(None, C);
        c.create = true;
        c.resubmitted = true;
        assert_eq!(
            c.decide(&policy("resubmit: keep\n")).reason,
            Reason::Resubmit
        );
        // under reset the mutating webhook clears the label; arriving mid-pipeline anyway is a skip
        assert_eq!(c.decide(&policy("")).reason, Reason::Skip);
    }

    #[test]
    fn messages_say_what_is_allowed_next() {
        let p = policy("");
        let v = Case::change(C, B).decide(&p);
        assert!(v.message.ends_with("moves back from \"waiting-pr-approved\" to \"waiting-ready-for-qa\"; allowed next: none (final stage)"), "{}", v.message);
        let v = Case::change(B, None).decide(&p);
        assert!(v.message.contains("(label-removed): removes the current-stage label; allowed next: \"waiting-pr-approved\""), "{}", v.message);
        let v = Case::change(Some("legacy"), A).decide(&p);
        assert!(
            v.message
                .contains("the stored stage \"legacy\" is not a known stage"),
            "{}",
            v.message
        );
    }

    #[test]
    fn request_data_in_messages_stays_one_bounded_line() {
        let long = "x".repeat(10_000);
        let evil = "a\nb\tc";
        for to in [long.as_str(), evil] {
            let v = Case::change(A, Some(to)).decide(&policy(""));
            assert_eq!(v.reason, Reason::UnknownStage);
            assert!(!v.message.chars().any(char::is_control), "{}", v.message);
            assert!(v.message.len() < 600, "{}", v.message.len());
            let w = Case::change(A, Some(to)).decide(&policy("mode: warn\n"));
            assert!(
                w.warnings
                    .iter()
                    .all(|w| w.chars().count() <= WARNING_MAX_CHARS && !w.contains('\n'))
            );
        }
    }
}
