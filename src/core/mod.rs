//! The rule book: everything stage-guard decides, and nothing else. No I/O, HTTP or AdmissionReview
//! JSON in here (the history annotation's own format, a JSON array, is part of the rules: SPEC 4.3).
//!
//! A write is read once into [`Facts`]; the core has two doors:
//! - [`validate`]: the validating webhook's decision (SPEC 4.1), a [`Verdict`];
//! - [`mutate`]: the mutating webhook's [`Plan`] (SPEC 4.2): what to change in the incoming object.
//!
//! The server, `stage-guard review` and `stage-guard check` reach the rules through these two only.

pub mod audit;
pub mod census;
mod facts;
mod fit;
mod graph;
pub mod history;
mod mode;
pub mod moves;
mod pipeline;
mod plan;
mod policy;
mod reason;
mod verdict;
mod words;

use std::time::SystemTime;

pub use facts::{Facts, Operation, RESUBMITTED_FROM_LABEL};
pub use graph::{StageChange, StageGraph};
pub use history::{Entry, HistoryWrite};
pub use mode::Mode;
pub use pipeline::{DEFAULT_PIPELINE, Pipeline, Selector, StuckAfter};
pub use plan::{HistoryEdit, Plan};
pub use policy::{HistoryConfig, OverrideConfig, Policy, Resubmit};
pub use reason::Reason;
pub use verdict::{Outcome, Verdict};
pub use words::{
    UNKNOWN_USER, WARNING_MAX_CHARS, plural, quote_stage, show, show_stage, show_user,
};

/// The validating webhook's decision on one write; `None` for what is not judged (DELETE,
/// CONNECT: SPEC 4.1).
pub fn validate(policy: &Policy, facts: &Facts<'_>) -> Option<Verdict> {
    if !facts.is_judged() {
        return None;
    }
    let pipeline = policy.judging(facts)?;
    let history = history::classify(
        facts.trusted_history(),
        facts.incoming_history.as_deref(),
        facts.from,
        facts.to,
        facts.username,
        policy.history.limit,
        facts.pipeline_changed(),
    );
    Some(verdict::decide(policy, pipeline, facts, &history))
}

/// The mutating webhook's plan for one write; `now` is stamped into a new history entry.
pub fn mutate(policy: &Policy, facts: &Facts<'_>, now: SystemTime) -> Plan {
    plan::plan(policy, facts, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const A: Option<&str> = Some("waiting-pr-created");

    fn facts<'a>(from: Option<&'a str>, to: Option<&'a str>) -> Facts<'a> {
        Facts {
            operation: Operation::Update,
            workflow: "argo/wf".into(),
            from,
            to,
            resubmitted: false,
            stale: false,
            username: "bob",
            groups: &[],
            stored_history: None,
            incoming_history: None,
            stored_override: None,
            incoming_override: None,
            pipeline: Some(0),
            incoming_pipeline: Some(0),
        }
    }

    #[test]
    fn both_doors_agree_that_an_unlabelled_object_is_not_judged() {
        let p = Policy::default_policy();
        let mut f = facts(None, None);
        f.stored_history = Some("[]".into());
        f.incoming_history = Some("not even json".into());
        f.incoming_override = Some("no reason".into());
        assert!(validate(&p, &f).is_none());
        assert!(mutate(&p, &f, UNIX_EPOCH).is_empty());
    }

    #[test]
    fn a_workflow_entering_its_first_stage_starts_a_fresh_history() {
        let p = Policy::default_policy();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_685_000);
        let forged = history::render(&[
            Entry::new(None, A, "mallory", now),
            Entry::new(A, Some("waiting-ready-for-qa"), "mallory", now),
        ]);
        let mut f = facts(None, A);
        f.stored_history = Some(forged.as_str().into());
        f.incoming_history = Some(forged.as_str().into());
        // What the mutating webhook writes is what the validating webhook accepts ...
        let HistoryEdit::Set(fresh) = mutate(&p, &f, now).history else {
            panic!("expected a fresh history")
        };
        assert_eq!(history::parse(&fresh).map(|h| h.len()).ok(), Some(1));
        f.incoming_history = Some(fresh.as_str().into());
        assert_eq!(validate(&p, &f).map(|v| v.reason), Some(Reason::Entry));
        // ... and the forged history with the entry appended is not taken as stage-guard's own.
        let mut built_on = history::parse(&forged).unwrap_or_default();
        built_on.push(Entry::new(None, A, "bob", now));
        let built_on = history::render(&built_on);
        f.incoming_history = Some(built_on.as_str().into());
        let v = validate(&p, &f).map(|v| (v.allowed(), v.reason));
        assert!(matches!(v, Some((false, _))), "{v:?}");
    }
}
