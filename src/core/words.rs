//! The text of every decision: one-line messages that name the workflow, the change, the reason and
//! what is allowed next, and the warnings the API server passes on (SPEC 4.1, 4.7).
//!
//! Stage names are quoted, so that an empty label value shows as `""` and `none` (no label) cannot be
//! mistaken for a stage called `none`. Warnings keep to 120 characters by choosing a shorter wording
//! first and shortening names only when even that does not fit (`fit`).

use std::borrow::Cow;

use super::facts::Facts;
use super::fit::{self, Piece};
use super::graph::StageGraph;
use super::policy::Policy;
use super::reason::Reason;

/// The API server asks for warnings of at most 120 characters.
pub const WARNING_MAX_CHARS: usize = 120;

/// Shown instead of an empty username.
pub const UNKNOWN_USER: &str = "(unknown user)";

// What a warning gives up first when it is too long (lowest first). The requester knows which
// workflow they wrote and who they are; the change comes next; what is allowed next is the point of
// the warning and goes last.
const RANK_WORKFLOW: u8 = 1;
const RANK_USER: u8 = 1;
const RANK_CHANGE: u8 = 2;
const RANK_NEXT: u8 = 3;

/// The words of a decision on one write.
pub(crate) struct Say<'p, 'f> {
    pub policy: &'p Policy,
    /// The graph of the pipeline that judges the write.
    pub graph: &'p StageGraph,
    pub w: &'p Facts<'f>,
}

/// What may follow the stored stage.
enum Next<'g> {
    Stages(Vec<&'g str>),
    /// A known stage without outgoing edges.
    Final,
    /// The stored stage is not a known one: only a permitted override may move it.
    FromUnknown,
}

impl Say<'_, '_> {
    fn next(&self) -> Next<'_> {
        let graph = self.graph;
        match self.w.from {
            Some(o) if !graph.is_known(o) => Next::FromUnknown,
            from => {
                let next = graph.next_stages(from);
                if next.is_empty() {
                    Next::Final
                } else {
                    Next::Stages(next)
                }
            }
        }
    }

    /// `stage change "a" -> "b"`, or `update at stage "a"` when the stage stays.
    pub(crate) fn change(&self) -> String {
        let w = self.w;
        if w.from == w.to {
            let verb = if w.is_create() { "create" } else { "update" };
            match w.to {
                Some(_) => format!("{verb} at stage {}", quote_stage(w.to)),
                None => format!("{verb} without a stage"),
            }
        } else {
            format!(
                "stage change {} -> {}",
                quote_stage(w.from),
                quote_stage(w.to)
            )
        }
    }

    /// `"b", "c"`, `none (final stage)`, or why nothing may follow an unknown stage.
    pub(crate) fn allowed_next(&self) -> String {
        match self.next() {
            Next::Stages(stages) => stages
                .iter()
                .map(|s| quote_stage(Some(s)))
                .collect::<Vec<_>>()
                .join(", "),
            Next::Final => "none (final stage)".to_owned(),
            Next::FromUnknown => {
                "none from an unknown stage (a permitted override can set a known one)".to_owned()
            }
        }
    }

    /// The stages a forward jump skips, in pipeline order.
    fn skipped(&self) -> &[String] {
        let w = self.w;
        w.to.map(|n| self.graph.between(w.from, n))
            .unwrap_or_default()
    }

    /// The new stage is not a known one (rather than the stored one).
    fn to_unknown(&self) -> bool {
        self.w.to.is_some_and(|n| !self.graph.is_known(n))
    }

    /// Why the rule fired, in words.
    fn detail(&self, reason: Reason) -> String {
        let w = self.w;
        match reason {
            Reason::OverrideNotPermitted => format!(
                "{} may not force stage changes (not listed under override.users or override.groups); remove the {} annotation",
                show_user(w.username),
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
            Reason::UnknownStage if w.pipeline_changed() => {
                let target = w
                    .incoming_pipeline
                    .and_then(|i| self.policy.pipelines.get(i))
                    .map_or(String::new(), |p| format!(" of pipeline {:?}", p.name));
                format!(
                    "{} is not a stage{target}, where its labels move it",
                    quote_stage(w.to)
                )
            }
            Reason::UnknownStage if self.to_unknown() => {
                format!("{} is not a known stage", quote_stage(w.to))
            }
            Reason::UnknownStage => format!(
                "the stored stage {} is not a known stage",
                quote_stage(w.from)
            ),
            Reason::LabelRemoved => format!("removes the {} label", self.policy.label),
            Reason::PipelineChanged => {
                let name = |i: Option<usize>| {
                    i.and_then(|i| self.policy.pipelines.get(i))
                        .map_or("no pipeline".to_owned(), |p| {
                            format!("pipeline {:?}", p.name)
                        })
                };
                format!(
                    "its labels move it from {} to {}; only a permitted override may do that",
                    name(w.pipeline),
                    name(w.incoming_pipeline)
                )
            }
            Reason::Skip => match self.skipped() {
                [] => "is not an edge of the stage graph".to_owned(),
                skipped => format!(
                    "skips {}",
                    skipped
                        .iter()
                        .map(|s| quote_stage(Some(s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Reason::Regression => format!(
                "moves back from {} to {}",
                quote_stage(w.from),
                quote_stage(w.to)
            ),
            r => r.code().to_owned(),
        }
    }

    /// The message of a denial (the API server shows it in full: no length limit, one line).
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

    /// The message and the warning of a change admitted by `mode: warn`, for example
    /// `warn: argo/play-7 "a" -> "c" skips "b"; allowed next: "b"`.
    pub(crate) fn warned(&self, reason: Reason) -> (String, String) {
        let message = format!(
            "{} on {} warned ({reason}): {}; allowed next: {}",
            self.change(),
            show(&self.w.workflow),
            self.detail(reason),
            self.allowed_next()
        );
        (message, self.warn_mode_warning(reason))
    }

    /// The warning of `mode: warn`: the wordings from the fullest to the shortest; the first that
    /// fits is used, or the last, with its names shortened.
    fn warn_mode_warning(&self, reason: Reason) -> String {
        let w = self.w;
        let head = || {
            vec![
                Piece::fixed("warn: "),
                Piece::name(&w.workflow, RANK_WORKFLOW),
                Piece::fixed(" "),
                Piece::stage(w.from, RANK_CHANGE),
                Piece::fixed(" -> "),
                Piece::stage(w.to, RANK_CHANGE),
            ]
        };
        let next = |all: bool| -> Vec<Piece> {
            let mut pieces = vec![Piece::fixed("; allowed next: ")];
            match self.next() {
                Next::Stages(stages) => {
                    let shown = if all { stages.len() } else { 1 };
                    for (i, s) in stages.iter().take(shown).enumerate() {
                        if i > 0 {
                            pieces.push(Piece::fixed(", "));
                        }
                        pieces.push(Piece::stage(Some(s), RANK_NEXT));
                    }
                    if stages.len() > shown {
                        pieces.push(Piece::fixed(format!(" and {} more", stages.len() - shown)));
                    }
                }
                Next::Final => pieces.push(Piece::fixed("none (final stage)")),
                Next::FromUnknown => pieces.push(Piece::fixed("none (override only)")),
            }
            pieces
        };
        let full_detail: Vec<Piece> = match reason {
            Reason::Skip => match self.skipped() {
                [] => vec![Piece::fixed(" is not an edge")],
                skipped => {
                    let mut pieces = vec![Piece::fixed(" skips ")];
                    for (i, s) in skipped.iter().enumerate() {
                        if i > 0 {
                            pieces.push(Piece::fixed(", "));
                        }
                        pieces.push(Piece::stage(Some(s), RANK_CHANGE));
                    }
                    pieces
                }
            },
            Reason::Regression => vec![Piece::fixed(" moves back")],
            Reason::UnknownStage if self.to_unknown() => vec![Piece::fixed(" (unknown stage)")],
            Reason::UnknownStage => vec![Piece::fixed(" (unknown stored stage)")],
            Reason::LabelRemoved => vec![Piece::fixed(" removes the label")],
            r => vec![Piece::fixed(format!(" ({r})"))],
        };
        let counted_detail = match (reason, self.skipped().len()) {
            (Reason::Skip, n) if n > 0 => {
                vec![Piece::fixed(format!(" skips {}", plural(n, "stage")))]
            }
            _ => full_detail.clone(),
        };
        let code = vec![Piece::fixed(format!(" ({reason})"))];
        let shortest = [&full_detail, &counted_detail, &code]
            .into_iter()
            .min_by_key(|d| fit::length(d))
            .cloned()
            .unwrap_or_default();
        // Why it would be denied is the part to give up first: the change and what is allowed
        // next say it.
        let forms = [
            [head(), full_detail, next(true)].concat(),
            [head(), counted_detail, next(true)].concat(),
            [head(), shortest, next(true)].concat(),
            [head(), next(true)].concat(),
            [head(), next(false)].concat(),
        ];
        short_enough(&forms)
    }

    /// The message and the warning of a forced change.
    pub(crate) fn forced(&self) -> (String, String) {
        let w = self.w;
        let message = format!(
            "{} on {} allowed (override): forced by {}",
            self.change(),
            show(&w.workflow),
            show_user(w.username)
        );
        let warning = fit::fit(
            &[
                Piece::fixed("forced: "),
                Piece::name(&w.workflow, RANK_WORKFLOW),
                Piece::fixed(" "),
                Piece::stage(w.from, RANK_CHANGE),
                Piece::fixed(" -> "),
                Piece::stage(w.to, RANK_CHANGE),
                Piece::fixed(" by "),
                Piece::name(user_or_unknown(w.username), RANK_USER),
            ],
            WARNING_MAX_CHARS,
        );
        (message, warning)
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

/// The first of `forms` (fullest first) that fits a warning, or the last one, shortened.
fn short_enough(forms: &[Vec<Piece>]) -> String {
    forms
        .iter()
        .find(|f| fit::length(f) <= WARNING_MAX_CHARS)
        .map(|f| fit::render(f))
        .or_else(|| forms.last().map(|f| fit::fit(f, WARNING_MAX_CHARS)))
        .unwrap_or_default()
}

/// The mutating webhook's warning when a stored history does not parse (SPEC 4.3).
pub(crate) fn history_replaced(annotation: &str, workflow: &str) -> String {
    fit::fit(
        &[
            Piece::name(annotation, RANK_CHANGE),
            Piece::fixed(" of "),
            Piece::name(workflow, RANK_WORKFLOW),
            Piece::fixed(" did not parse; replaced by a fresh history"),
        ],
        WARNING_MAX_CHARS,
    )
}

/// The mutating webhook's warning when it restores a history the client changed or removed
/// (kubectl prints it; the write itself goes on).
pub(crate) fn history_edit_discarded(annotation: &str, workflow: &str) -> String {
    fit::fit(
        &[
            Piece::name(annotation, RANK_CHANGE),
            Piece::fixed(" is written by stage-guard: the edit to it on "),
            Piece::name(workflow, RANK_WORKFLOW),
            Piece::fixed(" was discarded"),
        ],
        WARNING_MAX_CHARS,
    )
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

/// A stage as written in audit annotations and logs (`O->N`): `none` for no label, unquoted.
pub fn show_stage(s: Option<&str>) -> Cow<'_, str> {
    s.map_or(Cow::Borrowed("none"), show)
}

/// A stage as written in messages: quoted (an empty value shows as `""`), bounded, escaped;
/// `none` for no label.
pub fn quote_stage(s: Option<&str>) -> String {
    const MAX: usize = 80;
    match s {
        None => "none".to_owned(),
        Some(s) => {
            let mut out = String::from('"');
            out.extend(s.chars().take(MAX).flat_map(char::escape_debug));
            if s.chars().nth(MAX).is_some() {
                out.push('…');
            }
            out.push('"');
            out
        }
    }
}

/// A username for messages: never empty.
pub fn show_user(username: &str) -> Cow<'_, str> {
    show(user_or_unknown(username))
}

fn user_or_unknown(username: &str) -> &str {
    if username.is_empty() {
        UNKNOWN_USER
    } else {
        username
    }
}

/// `1 stage`, `2 stages`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::facts::Operation;

    /// `a -> b -> c`, with short names, so the expected lines read easily.
    fn abc() -> Policy {
        Policy::from_yaml("stages: [a, b, c]\noverride:\n  users: [alice]\n").unwrap()
    }

    fn facts<'a>(
        workflow: &'a str,
        from: Option<&'a str>,
        to: Option<&'a str>,
        user: &'a str,
    ) -> Facts<'a> {
        Facts {
            operation: Operation::Update,
            workflow: workflow.into(),
            from,
            to,
            resubmitted: false,
            stale: false,
            username: user,
            groups: &[],
            stored_history: None,
            incoming_history: None,
            stored_override: None,
            incoming_override: None,
            pipeline: Some(0),
            incoming_pipeline: Some(0),
        }
    }

    type Stage = Option<&'static str>;

    const A: Option<&str> = Some("a");
    const B: Option<&str> = Some("b");
    const C: Option<&str> = Some("c");
    const EMPTY: Option<&str> = Some("");
    const BOGUS: Option<&str> = Some("bogus");

    #[test]
    fn denial_messages_name_the_change_the_reason_and_what_is_allowed_next() {
        let p = abc();
        #[rustfmt::skip]
        let rows: &[(Stage, Stage, &str, Reason, &str)] = &[
            (A, C, "bob", Reason::Skip,
             r#"stage change "a" -> "c" on argo/play-7 denied (skip): skips "b"; allowed next: "b""#),
            (None, C, "bob", Reason::Skip,
             r#"stage change none -> "c" on argo/play-7 denied (skip): skips "a", "b"; allowed next: "a""#),
            (C, A, "bob", Reason::Regression,
             r#"stage change "c" -> "a" on argo/play-7 denied (regression): moves back from "c" to "a"; allowed next: none (final stage)"#),
            (A, BOGUS, "bob", Reason::UnknownStage,
             r#"stage change "a" -> "bogus" on argo/play-7 denied (unknown-stage): "bogus" is not a known stage; allowed next: "b""#),
            (A, EMPTY, "bob", Reason::UnknownStage,
             r#"stage change "a" -> "" on argo/play-7 denied (unknown-stage): "" is not a known stage; allowed next: "b""#),
            (Some("legacy"), B, "bob", Reason::UnknownStage,
             r#"stage change "legacy" -> "b" on argo/play-7 denied (unknown-stage): the stored stage "legacy" is not a known stage; allowed next: none from an unknown stage (a permitted override can set a known one)"#),
            (B, None, "bob", Reason::LabelRemoved,
             r#"stage change "b" -> none on argo/play-7 denied (label-removed): removes the current-stage label; allowed next: "c""#),
            (A, C, "bob", Reason::OverrideNotPermitted,
             r#"stage change "a" -> "c" on argo/play-7 denied (override-not-permitted): bob may not force stage changes (not listed under override.users or override.groups); remove the stage-guard.io/override-reason annotation"#),
            (A, C, "", Reason::OverrideNotPermitted,
             r#"stage change "a" -> "c" on argo/play-7 denied (override-not-permitted): (unknown user) may not force stage changes (not listed under override.users or override.groups); remove the stage-guard.io/override-reason annotation"#),
            (B, B, "bob", Reason::HistoryTampered,
             r#"update at stage "b" on argo/play-7 denied (history-tampered): the stage-guard.io/history annotation is written by stage-guard only; leave it as stored"#),
            (A, B, "bob", Reason::HistoryMissing,
             r#"stage change "a" -> "b" on argo/play-7 denied (history-missing): the change has no entry in stage-guard.io/history; is the mutating webhook mutate.stage-guard.io installed?; allowed next: "b""#),
        ];
        for &(from, to, user, reason, want) in rows {
            let w = facts("argo/play-7", from, to, user);
            assert_eq!(
                Say {
                    policy: &p,
                    graph: &p.only().graph,
                    w: &w
                }
                .denied(reason),
                want
            );
        }
    }

    #[test]
    fn warn_mode_warnings_carry_the_workflow_the_change_and_what_is_allowed_next() {
        let p = abc();
        #[rustfmt::skip]
        let rows: &[(Option<&str>, Option<&str>, Reason, &str)] = &[
            (A, C, Reason::Skip, r#"warn: argo/play-7 "a" -> "c" skips "b"; allowed next: "b""#),
            (None, C, Reason::Skip, r#"warn: argo/play-7 none -> "c" skips "a", "b"; allowed next: "a""#),
            (C, A, Reason::Regression, r#"warn: argo/play-7 "c" -> "a" moves back; allowed next: none (final stage)"#),
            (B, A, Reason::Regression, r#"warn: argo/play-7 "b" -> "a" moves back; allowed next: "c""#),
            (A, BOGUS, Reason::UnknownStage, r#"warn: argo/play-7 "a" -> "bogus" (unknown stage); allowed next: "b""#),
            (A, EMPTY, Reason::UnknownStage, r#"warn: argo/play-7 "a" -> "" (unknown stage); allowed next: "b""#),
            (Some("legacy"), B, Reason::UnknownStage,
             r#"warn: argo/play-7 "legacy" -> "b" (unknown stored stage); allowed next: none (override only)"#),
            (B, None, Reason::LabelRemoved, r#"warn: argo/play-7 "b" -> none removes the label; allowed next: "c""#),
        ];
        for &(from, to, reason, want) in rows {
            let w = facts("argo/play-7", from, to, "bob");
            let (message, warning) = Say {
                policy: &p,
                graph: &p.only().graph,
                w: &w,
            }
            .warned(reason);
            assert_eq!(warning, want);
            assert!(message.contains(&format!("warned ({reason})")), "{message}");
        }
    }

    #[test]
    fn the_default_stage_names_fit_by_choosing_a_shorter_wording() {
        let p = Policy::default_policy();
        let w = facts(
            "argo/play-task-7",
            Some("waiting-pr-created"),
            Some("waiting-pr-approved"),
            "bob",
        );
        let (_, warning) = Say {
            policy: &p,
            graph: &p.only().graph,
            w: &w,
        }
        .warned(Reason::Skip);
        assert_eq!(
            warning,
            r#"warn: argo/play-task-7 "waiting-pr-created" -> "waiting-pr-approved" skips 1 stage; allowed next: "waiting-ready-for-qa""#
        );
        // A longer name: the reason code instead of what is skipped, the names kept whole.
        let w = facts(
            "argo/pr-pipeline-x7k2p",
            Some("waiting-pr-created"),
            Some("waiting-pr-approved"),
            "bob",
        );
        let (_, warning) = Say {
            policy: &p,
            graph: &p.only().graph,
            w: &w,
        }
        .warned(Reason::Skip);
        assert_eq!(
            warning,
            r#"warn: argo/pr-pipeline-x7k2p "waiting-pr-created" -> "waiting-pr-approved" (skip); allowed next: "waiting-ready-for-qa""#
        );
        // Longer: why it would be denied goes first (the change and what is allowed next say it).
        let w = facts(
            "argo/agent-pipeline-fmf9g",
            Some("waiting-pr-created"),
            Some("waiting-pr-approved"),
            "bob",
        );
        let (_, warning) = Say {
            policy: &p,
            graph: &p.only().graph,
            w: &w,
        }
        .warned(Reason::Skip);
        assert_eq!(
            warning,
            r#"warn: argo/agent-pipeline-fmf9g "waiting-pr-created" -> "waiting-pr-approved"; allowed next: "waiting-ready-for-qa""#
        );
        // Longer still: the workflow, which the requester knows, gives up its middle first.
        let w = facts(
            "agent-pipelines-of-team-7/pr-pipeline-x7k2p",
            Some("waiting-pr-created"),
            Some("waiting-pr-approved"),
            "bob",
        );
        let (_, warning) = Say {
            policy: &p,
            graph: &p.only().graph,
            w: &w,
        }
        .warned(Reason::Skip);
        assert_eq!(
            warning,
            r#"warn: agent-pipelines…pipeline-x7k2p "waiting-pr-created" -> "waiting-pr-approved"; allowed next: "waiting-ready-for-qa""#
        );
        assert_eq!(warning.chars().count(), WARNING_MAX_CHARS);
    }

    #[test]
    fn forced_changes_name_the_workflow_the_change_and_the_user() {
        let p = abc();
        for (user, want) in [
            ("alice", r#"forced: argo/play-7 "a" -> "c" by alice"#),
            ("", r#"forced: argo/play-7 "a" -> "c" by (unknown user)"#),
        ] {
            let w = facts("argo/play-7", A, C, user);
            let (message, warning) = Say {
                policy: &p,
                graph: &p.only().graph,
                w: &w,
            }
            .forced();
            assert_eq!(warning, want);
            assert!(
                !message.contains("by  ") && !message.ends_with("by "),
                "{message}"
            );
        }
        let w = facts("argo/play-7", C, None, "alice");
        assert_eq!(
            Say {
                policy: &p,
                graph: &p.only().graph,
                w: &w
            }
            .forced()
            .1,
            r#"forced: argo/play-7 "c" -> none by alice"#
        );
    }

    #[test]
    fn plurals_and_unchanged_writes() {
        assert_eq!(plural(0, "stage"), "0 stages");
        assert_eq!(plural(1, "stage"), "1 stage");
        assert_eq!(plural(2, "edge"), "2 edges");
        let p = abc();
        let mut w = facts("argo/wf", None, None, "bob");
        assert_eq!(
            Say {
                policy: &p,
                graph: &p.only().graph,
                w: &w
            }
            .change(),
            "update without a stage"
        );
        w.operation = Operation::Create;
        assert_eq!(
            Say {
                policy: &p,
                graph: &p.only().graph,
                w: &w
            }
            .change(),
            "create without a stage"
        );
        let w = facts("argo/wf", EMPTY, EMPTY, "bob");
        assert_eq!(
            Say {
                policy: &p,
                graph: &p.only().graph,
                w: &w
            }
            .change(),
            r#"update at stage """#
        );
    }

    /// Names as long as Kubernetes allows: 63-character stages, a 63-character namespace with a
    /// 253-character name, a long service-account username.
    fn long_policy() -> Policy {
        let s = |c: char| format!("{}-{}", c.to_string().repeat(30), "x".repeat(32));
        let (a, b, c, d) = (s('a'), s('b'), s('c'), s('d'));
        Policy::from_yaml(&format!(
            "stages: [{a}, {b}, {c}, {d}]\ntransitions:\n  {a}: [{b}, {c}, {d}]\n  {b}: [{c}]\n  {c}: [{d}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn every_warning_fits_in_one_line_of_120_characters_whatever_the_names() {
        let long = long_policy();
        let stages: Vec<&str> = long
            .only()
            .graph
            .stages()
            .iter()
            .map(String::as_str)
            .collect();
        assert!(stages.iter().all(|s| s.len() == 63));
        let workflow_253 = format!("{}/{}", "n".repeat(63), "w".repeat(253));
        let workflows = ["argo/play-7", workflow_253.as_str()];
        let long_user = format!(
            "system:serviceaccount:{}:{}",
            "n".repeat(63),
            "u".repeat(253)
        );
        let users = ["", "alice", long_user.as_str()];
        let nasty = "tab\there\nnewline";
        let mut seen = 0;
        for policy in [&abc(), &long, &Policy::default_policy()] {
            let known: Vec<Option<&str>> = policy
                .only()
                .graph
                .stages()
                .iter()
                .map(|s| Some(s.as_str()))
                .collect();
            let values: Vec<Option<&str>> = known
                .iter()
                .copied()
                .chain([None, EMPTY, BOGUS, Some(nasty), Some(stages[0])])
                .collect();
            for &workflow in &workflows {
                for &from in &values {
                    for &to in &values {
                        for &user in &users {
                            let w = facts(workflow, from, to, user);
                            let say = Say {
                                policy,
                                graph: &policy.only().graph,
                                w: &w,
                            };
                            let mut warnings = vec![say.forced().1];
                            for reason in
                                Reason::ALL.into_iter().filter(|r| r.is_stage_rule_denial())
                            {
                                let (message, warning) = say.warned(reason);
                                assert!(!message.chars().any(char::is_control), "{message}");
                                warnings.push(warning);
                            }
                            warnings.push(history_replaced(&policy.history.annotation, workflow));
                            for warning in warnings {
                                seen += 1;
                                assert!(
                                    warning.chars().count() <= WARNING_MAX_CHARS,
                                    "{} chars: {warning}",
                                    warning.chars().count()
                                );
                                assert!(!warning.chars().any(char::is_control), "{warning:?}");
                                assert!(
                                    !warning.contains("by \"\"") && !warning.ends_with("by "),
                                    "{warning}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(seen > 1000, "{seen} warnings checked");
    }

    #[test]
    fn long_names_are_shortened_in_their_middle_and_what_is_allowed_next_survives() {
        let p = long_policy();
        let st = |i: usize| p.only().graph.stages()[i].clone();
        let workflow = format!("{}/{}", "n".repeat(63), "w".repeat(253));
        // b -> d skips c; none -> c skips a and b.
        let (b, c, d) = (st(1), st(2), st(3));
        let skip_one = facts(&workflow, Some(&b), Some(&d), "bob");
        let skip_two = facts(&workflow, None, Some(&c), "bob");
        for (w, next) in [(&skip_one, st(2)), (&skip_two, st(0))] {
            let (_, warning) = Say {
                policy: &p,
                graph: &p.only().graph,
                w,
            }
            .warned(Reason::Skip);
            assert!(warning.chars().count() <= WARNING_MAX_CHARS, "{warning}");
            assert!(warning.starts_with("warn: nnnnn"), "{warning}");
            assert!(warning.contains('…'), "{warning}");
            // Every name keeps its beginning and its end.
            let allowed = warning.split("; allowed next: ").nth(1).unwrap_or_default();
            assert!(
                allowed.starts_with(&format!("\"{}", &next[..3])),
                "{warning}"
            );
            assert!(allowed.contains(&format!("{}\"", &next[60..])), "{warning}");
        }
        // Several stages allowed next: the first one is shown and the others counted.
        let a = st(0);
        let w = facts(&workflow, Some(&a), None, "bob");
        let (_, warning) = Say {
            policy: &p,
            graph: &p.only().graph,
            w: &w,
        }
        .warned(Reason::LabelRemoved);
        assert!(warning.ends_with("and 2 more"), "{warning}");
        assert!(warning.chars().count() <= WARNING_MAX_CHARS, "{warning}");
    }

    #[test]
    fn messages_quote_and_bound_request_data() {
        assert_eq!(quote_stage(None), "none");
        assert_eq!(quote_stage(Some("")), r#""""#);
        assert_eq!(quote_stage(Some("a\"b\n")), r#""a\"b\n""#);
        let long = quote_stage(Some(&"x".repeat(10_000)));
        assert_eq!(long.chars().count(), 83, "{long}");
        assert!(long.ends_with("…\""));
        assert_eq!(show_user(""), UNKNOWN_USER);
        assert_eq!(show_user("alice"), "alice");
        // The audit annotation keeps the plain `O->N` spelling of SPEC 4.7.
        assert_eq!(show_stage(None), "none");
        assert_eq!(show_stage(Some("a")), "a");
    }
}
