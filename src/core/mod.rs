//! The rule book: everything stage-guard decides, and nothing else. No I/O, HTTP or AdmissionReview
//! JSON in here (the history annotation's own format, a JSON array, is part of the rules: SPEC 4.3).
//!
//! A write is read once into [`Facts`]; the core has two doors:
//! - [`validate`]: the validating webhook's decision (SPEC 4.1), a [`Verdict`];
//! - [`mutate`]: the mutating webhook's [`Plan`] (SPEC 4.2): what to change in the incoming object.
//!
//! The server, `stage-guard review` and `stage-guard check` reach the rules through these two only.

mod facts;
mod fit;
mod graph;
pub mod history;
mod plan;
mod policy;
mod reason;
mod verdict;
mod words;

use std::time::SystemTime;

pub use facts::{Facts, Operation, RESUBMITTED_FROM_LABEL};
pub use graph::{StageChange, StageGraph};
pub use history::{Entry, HistoryWrite};
pub use plan::{HistoryEdit, Plan};
pub use policy::{HistoryConfig, Mode, OverrideConfig, Policy, Resubmit};
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
    let history = history::classify(
        facts.stored_history.as_deref(),
        facts.incoming_history.as_deref(),
        facts.from,
        facts.to,
        facts.username,
        policy.history.limit,
    );
    Some(verdict::decide(policy, facts, &history))
}

/// The mutating webhook's plan for one write; `now` is stamped into a new history entry.
pub fn mutate(policy: &Policy, facts: &Facts<'_>, now: SystemTime) -> Plan {
    plan::plan(policy, facts, now)
}
