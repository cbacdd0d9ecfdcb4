//! The validating decision (SPEC 4.1): the whole decision table, warn mode, the history check, and the
//! one-line messages. Pure: it takes plain facts about one write and returns a [`Verdict`].

use std::borrow::Cow;

use crate::config::{Mode, Policy};
use crate::history::HistoryWrite;
use crate::stages::{Reason, StageChange};

/// What the validating webhook knows about one CREATE or UPDATE.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    /// `namespace/name`, for messages.
    pub workflow: &'a str,
    pub is_create: bool,
    /// `O`
    pub from: Option<&'a str>,
    /// `N`
    pub to: Option<&'a str>,
    /// Carries `workflows.argoproj.io/resubmitted-from-workflow`.
    pub resubmitted: bool,
    pub username: &'a str,
    pub groups: &'a [String],
    /// The override annotation is set, non-empty, and differs from the stored one.
    pub override_annotation_requested: bool,
    /// How the history annotation changed.
    pub history: &'a HistoryWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Single-line warnings of at most [`WARNING_MAX_CHARS`] characters.
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.outcome != Outcome::Denied
    }
}

/// The API server asks for warnings of at most 120 characters.
pub const WARNING_MAX_CHARS: usize = 120;

/// Decides one write: the rows of SPEC 4.1 from top to bottom, then warn mode, then the history requirement.
pub fn decide(policy: &Policy, w: &Write<'_>) -> Verdict {
    let graph = &policy.graph;
    let entry_override = matches!(w.history, HistoryWrite::Appended(e) if e.override_.is_some());
    let override_requested = w.override_annotation_requested || entry_override;
    let override_permitted = override_requested && policy.override_.permits(w.username, w.groups);
    let say = Say { policy, w };

    if override_requested && !override_permitted {
        return say.deny(Reason::OverrideNotPermitted);
    }
    if *w.history == HistoryWrite::Tampered {
        return say.deny(Reason::HistoryTampered);
    }

    let reason = graph.judge(StageChange {
        from: w.from,
        to: w.to,
        resubmit_keep_create: policy.resubmit_rule(w.is_create, w.resubmitted)
            == Some(crate::config::Resubmit::Keep),
        override_permitted,
    });

    let outcome = if reason.admits() {
        Outcome::Allowed
    } else if policy.mode == Mode::Warn && reason.is_stage_rule_denial() {
        Outcome::Warned
    } else {
        return say.deny(reason);
    };

    let changed = w.from != w.to;
    if changed && policy.history.required && !matches!(w.history, HistoryWrite::Appended(_)) {
        return say.deny(Reason::HistoryMissing);
    }

    match outcome {
        Outcome::Warned => say.warned(reason),
        _ if reason == Reason::Override => say.forced(),
        _ => Verdict {
            outcome,
            reason,
            message: format!(
                "{} on {} allowed ({reason})",
                say.change(),
                show(w.workflow)
            ),
            warnings: Vec::new(),
        },
    }
}

/// Builds the words of a verdict.
struct Say<'p, 'w> {
    policy: &'p Policy,
    w: &'p Write<'w>,
}

impl Say<'_, '_> {
    fn change(&self) -> String {
        if self.w.from == self.w.to {
            let verb = if self.w.is_create { "create" } else { "update" };
            format!("{verb} at stage {}", show_stage(self.w.to))
        } else {
            format!(
                "stage change {} -> {}",
                show_stage(self.w.from),
                show_stage(self.w.to)
            )
        }
    }

    fn allowed_next(&self) -> String {
        let graph = &self.policy.graph;
        match self.w.from {
            Some(o) if !graph.is_known(o) => {
                "none from an unknown stage (a permitted override can set a known one)".to_owned()
            }
            from => {
                let next = graph.next_stages(from);
                if next.is_empty() {
                    format!("none ({} is final)", show_stage(from))
                } else {
                    next.join(", ")
                }
            }
        }
    }

    /// Why the rule fired, in words.
    fn detail(&self, reason: Reason) -> String {
        let w = self.w;
        let graph = &self.policy.graph;
        match reason {
            Reason::OverrideNotPermitted => format!(
                "{} may not force stage changes (not listed under override.users or override.groups); remove the {} annotation",
                show(w.username),
                self.policy.override_.annotation
            ),
            Reason::HistoryTampered => format!(
                "the {} annotation is written by stage-guard only; leave it as stored",
                self.policy.history.annotation
            ),
            Reason::HistoryMissing => format!(
                "the change has no entry in {}; is the mutating webhook mutate.stage-guard.io installed?",
                self.policy.history.annotation
            ),
            Reason::UnknownStage => match w.to {
                Some(n) if !graph.is_known(n) => {
                    format!("{} is not a known stage", show_stage(Some(n)))
                }
                _ => format!(
                    "the stored stage {} is not a known stage",
                    show_stage(w.from)
                ),
            },
            Reason::LabelRemoved => format!("removes the {} label", self.policy.label),
            Reason::Skip => {
                let skipped = w.to.map(|n| graph.between(w.from, n)).unwrap_or_default();
                if skipped.is_empty() {
                    "is not an edge of the stage graph".to_owned()
                } else {
                    format!("skips {}", skipped.join(", "))
                }
            }
            Reason::Regression => format!(
                "moves back from {} to {}",
                show_stage(w.from),
                show_stage(w.to)
            ),
            r => r.code().to_owned(),
        }
    }

    fn deny(&self, reason: Reason) -> Verdict {
        let mut message = format!(
            "{} on {} denied ({reason}): {}",
            self.change(),
            show(self.w.workflow),
            self.detail(reason)
        );
        if reason.is_stage_rule_denial() || reason == Reason::HistoryMissing {
            message.push_str("; allowed next: ");
            message.push_str(&self.allowed_next());
        }
        Verdict {
            outcome: Outcome::Denied,
            reason,
            message,
            warnings: Vec::new(),
        }
    }

    fn warned(&self, reason: Reason) -> Verdict {
        let message = format!(
            "{} on {} warned ({reason}): {}; allowed next: {}",
            self.change(),
            show(self.w.workflow),
            self.detail(reason),
            self.allowed_next()
        );
        Verdict {
            outcome: Outcome::Warned,
            reason,
            warnings: vec![warning(&format!("stage-guard warn mode: {message}"))],
            message,
        }
    }

    fn forced(&self) -> Verdict {
        let (change, workflow, user) =
            (self.change(), show(self.w.workflow), show(self.w.username));
        Verdict {
            outcome: Outcome::Allowed,
            reason: Reason::Override,
            warnings: vec![warning(&format!("forced {change} on {workflow} by {user}"))],
            message: format!("{change} on {workflow} allowed (override): forced by {user}"),
        }
    }
}

/// Request data shown in a message: one line, bounded, control characters escaped.
pub fn show(s: &str) -> Cow<'_, str> {
    const MAX: usize = 80;
    let clean = s.chars().all(|c| !c.is_control());
    if clean && s.chars().count() <= MAX {
        return Cow::Borrowed(s);
    }
    let mut out: String = s
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .take(MAX)
        .collect();
    out.push('…');
    Cow::Owned(out)
}

/// A stage for messages: `none` for no label.
pub fn show_stage(s: Option<&str>) -> Cow<'_, str> {
    s.map_or(Cow::Borrowed("none"), show)
}

/// A warning the API server will pass on: single line, at most [`WARNING_MAX_CHARS`] characters.
pub fn warning(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= WARNING_MAX_CHARS {
        return one_line;
    }
    let mut out: String = one_line.chars().take(WARNING_MAX_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Entry;
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
            decide(
                p,
                &Write {
                    workflow: "argo/play-task-7",
                    is_create: self.create,
                    from: self.from,
                    to: self.to,
                    resubmitted: self.resubmitted,
                    username: self.user,
                    groups: &[],
                    override_annotation_requested: self.annotation,
                    history: &self.history,
                },
            )
        }
    }

    #[test]
    fn the_spec_example_message() {
        let v = Case::change(A, C).decide(&policy(""));
        assert_eq!(v.outcome, Outcome::Denied);
        assert_eq!(
            v.message,
            "stage change waiting-pr-created -> waiting-pr-approved on argo/play-task-7 denied (skip): \
             skips waiting-ready-for-qa; allowed next: waiting-ready-for-qa"
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
        assert!(
            v.warnings[0].contains("forced stage change waiting-pr-created -> waiting-pr-approved")
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
        assert!(v.message.ends_with("moves back from waiting-pr-approved to waiting-ready-for-qa; allowed next: none (waiting-pr-approved is final)"), "{}", v.message);
        let v = Case::change(B, None).decide(&p);
        assert!(v.message.contains("(label-removed): removes the current-stage label; allowed next: waiting-pr-approved"), "{}", v.message);
        let v = Case::change(Some("legacy"), A).decide(&p);
        assert!(
            v.message
                .contains("the stored stage legacy is not a known stage"),
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
