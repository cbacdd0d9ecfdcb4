//! The text of every decision: one-line messages that name the workflow, the change, the reason and
//! what is allowed next, and the warnings the API server passes on (SPEC 4.1, 4.7).

use std::borrow::Cow;

use super::facts::Facts;
use super::policy::Policy;
use super::reason::Reason;

/// The API server asks for warnings of at most 120 characters.
pub const WARNING_MAX_CHARS: usize = 120;

/// The words of a decision on one write.
pub(crate) struct Say<'p, 'f> {
    pub policy: &'p Policy,
    pub w: &'p Facts<'f>,
}

impl Say<'_, '_> {
    pub(crate) fn change(&self) -> String {
        if self.w.from == self.w.to {
            let verb = if self.w.is_create() {
                "create"
            } else {
                "update"
            };
            format!("{verb} at stage {}", show_stage(self.w.to))
        } else {
            format!(
                "stage change {} -> {}",
                show_stage(self.w.from),
                show_stage(self.w.to)
            )
        }
    }

    pub(crate) fn allowed_next(&self) -> String {
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

    /// The message of a denial.
    pub(crate) fn denied(&self, reason: Reason) -> String {
        let mut message = format!(
            "{} on {} denied ({reason}): {}",
            self.change(),
            show(&self.w.workflow),
            self.detail(reason)
        );
        if reason.is_stage_rule_denial() || reason == Reason::HistoryMissing {
            message.push_str("; allowed next: ");
            message.push_str(&self.allowed_next());
        }
        message
    }

    /// The message and the warning of a change admitted by `mode: warn`.
    pub(crate) fn warned(&self, reason: Reason) -> (String, String) {
        let message = format!(
            "{} on {} warned ({reason}): {}; allowed next: {}",
            self.change(),
            show(&self.w.workflow),
            self.detail(reason),
            self.allowed_next()
        );
        let warning = warning(&format!("stage-guard warn mode: {message}"));
        (message, warning)
    }

    /// The message and the warning of a forced change.
    pub(crate) fn forced(&self) -> (String, String) {
        let (change, workflow, user) =
            (self.change(), show(&self.w.workflow), show(self.w.username));
        (
            format!("{change} on {workflow} allowed (override): forced by {user}"),
            warning(&format!("forced {change} on {workflow} by {user}")),
        )
    }

    /// The message of an admitted change.
    pub(crate) fn allowed(&self, reason: Reason) -> String {
        format!(
            "{} on {} allowed ({reason})",
            self.change(),
            show(&self.w.workflow)
        )
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
