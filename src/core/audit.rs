//! What a stored Workflow says about itself, read against its pipeline: the timeline of its stage
//! history (`stage-guard history`) and what is wrong with it (`stage-guard audit`, the monitor). Pure:
//! the caller reads the Workflows from the API server and passes `now`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::history::{self, Entry};
use super::pipeline::Pipeline;
use super::policy::Policy;

/// A stored Workflow, as much of it as the rules read.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The history annotation's raw value.
    pub history: Option<String>,
    /// `metadata.creationTimestamp`, for the time in a stage a Workflow entered before any history.
    pub created: Option<SystemTime>,
}

/// One change of the timeline, with how long the Workflow stayed where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub entry: Entry,
    pub at: Option<SystemTime>,
    /// Until the next change (or until now, for the last one).
    pub stayed: Option<Duration>,
}

/// The stage timeline of one Workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The pipeline that judges the Workflow (`None`: none takes it).
    pub pipeline: Option<String>,
    /// The stage label now.
    pub stage: Option<String>,
    pub steps: Vec<Step>,
    /// How long the Workflow has been at its current stage: since the last change recorded for it,
    /// else since it was created.
    pub in_stage_for: Option<Duration>,
    /// The history does not parse (the error, in words).
    pub unreadable: Option<String>,
}

impl Timeline {
    /// The label and the last history entry disagree: the stage changed while the webhook did not
    /// see it, or the history was trimmed or rewritten.
    pub fn disagrees(&self) -> bool {
        match self.steps.last() {
            Some(last) => last.entry.to != self.stage,
            None => self.stage.is_some() && self.unreadable.is_none(),
        }
    }
}

/// What is wrong with a stored Workflow. The kinds are a small fixed set (metric label values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The stage label holds a stage its pipeline does not know.
    UnknownStage { stage: String },
    /// The history annotation does not parse.
    HistoryUnreadable { error: String },
    /// An entry is not an edge of the graph, or does not start where the previous one ended.
    HistoryNotAPath { index: usize, detail: String },
    /// The label is not where the last history entry says the Workflow went.
    LabelDisagrees {
        label: Option<String>,
        last: Option<String>,
    },
    /// Longer at a stage than its pipeline's `stuck_after`.
    Stuck {
        stage: String,
        for_: Duration,
        limit: Duration,
    },
}

impl Finding {
    /// Every kind, for metrics exported from start-up.
    pub const KINDS: [&'static str; 5] = [
        "unknown-stage",
        "history-unreadable",
        "history-not-a-path",
        "label-disagrees",
        "stuck",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Finding::UnknownStage { .. } => "unknown-stage",
            Finding::HistoryUnreadable { .. } => "history-unreadable",
            Finding::HistoryNotAPath { .. } => "history-not-a-path",
            Finding::LabelDisagrees { .. } => "label-disagrees",
            Finding::Stuck { .. } => "stuck",
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let stage =
            |s: &Option<String>| s.as_deref().map_or("none".to_owned(), |s| format!("{s:?}"));
        match self {
            Finding::UnknownStage { stage } => {
                format!("stage {stage:?} is not a stage of its pipeline")
            }
            Finding::HistoryUnreadable { error } => format!("the history does not parse: {error}"),
            Finding::HistoryNotAPath { index, detail } => {
                format!("history entry {index} is not a step of the graph: {detail}")
            }
            Finding::LabelDisagrees { label, last } => format!(
                "the label says {} but the history's last entry {}",
                stage(label),
                match last {
                    Some(_) => format!("went to {}", stage(last)),
                    None => "is missing (no history)".to_owned(),
                }
            ),
            Finding::Stuck { stage, for_, limit } => format!(
                "at {stage:?} for {} (stuck after {})",
                human(*for_),
                human(*limit)
            ),
        }
    }
}

/// A duration to the minute (or the second, below one), as people read it.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

fn parse_at(at: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(at).ok()
}

/// The Workflow's pipeline: as admission finds it (labels and namespace).
pub fn pipeline_of<'p>(policy: &'p Policy, w: &Stored) -> Option<&'p Pipeline> {
    let i = policy.pipeline_for(|k| w.labels.get(k).map(String::as_str), &w.namespace)?;
    policy.pipelines.get(i)
}

/// The timeline of `w` at `now`.
pub fn timeline(policy: &Policy, w: &Stored, now: SystemTime) -> Timeline {
    timeline_in(pipeline_of(policy, w), policy, w, now)
}

/// The timeline of `w` at `now`, its pipeline already found (the census reads the timeline and the
/// findings of every Workflow, and finds the pipeline once for both).
pub fn timeline_in(
    pipeline: Option<&Pipeline>,
    policy: &Policy,
    w: &Stored,
    now: SystemTime,
) -> Timeline {
    let stage = w.labels.get(&policy.label).cloned();
    let (entries, unreadable) = match w.history.as_deref().map(history::parse) {
        None => (Vec::new(), None),
        Some(Ok(entries)) => (entries, None),
        Some(Err(e)) => (Vec::new(), Some(e.to_string())),
    };
    let times: Vec<Option<SystemTime>> = entries.iter().map(|e| parse_at(&e.at)).collect();
    let steps: Vec<Step> = entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let until = times.get(i + 1).copied().flatten().or(Some(now));
            let stayed = match (times[i], until) {
                (Some(from), Some(to)) => to.duration_since(from).ok(),
                _ => None,
            };
            Step {
                entry,
                at: times[i],
                stayed,
            }
        })
        .collect();
    let entered = match steps.last() {
        Some(last) if last.entry.to == stage => last.at,
        Some(_) => None,
        None => w.created,
    };
    Timeline {
        pipeline: pipeline.map(|p| p.name.clone()),
        in_stage_for: entered.and_then(|t| now.duration_since(t).ok()),
        stage,
        steps,
        unreadable,
    }
}

/// What is wrong with `w` at `now`, against its pipeline (nothing when no pipeline takes it, or it
/// carries no stage and no history).
pub fn findings(policy: &Policy, w: &Stored, now: SystemTime) -> Vec<Finding> {
    let Some(pipeline) = pipeline_of(policy, w) else {
        return Vec::new();
    };
    findings_in(pipeline, &timeline_in(Some(pipeline), policy, w, now))
}

/// The findings of a Workflow of `pipeline` whose timeline is `t`.
pub fn findings_in(pipeline: &Pipeline, t: &Timeline) -> Vec<Finding> {
    if t.stage.is_none() && t.steps.is_empty() && t.unreadable.is_none() {
        return Vec::new();
    }
    let graph = &pipeline.graph;
    let mut out = Vec::new();
    if let Some(stage) = &t.stage
        && !graph.is_known(stage)
    {
        out.push(Finding::UnknownStage {
            stage: stage.clone(),
        });
    }
    if let Some(error) = &t.unreadable {
        out.push(Finding::HistoryUnreadable {
            error: error.clone(),
        });
    }
    // The history is a path: each entry starts where the previous ended and is an edge, unless it is
    // a forced change (its `override` says so).
    let mut at: Option<Option<&str>> = None;
    for (index, step) in t.steps.iter().enumerate() {
        let e = &step.entry;
        if let Some(prev) = at
            && prev != e.from.as_deref()
        {
            out.push(Finding::HistoryNotAPath {
                index,
                detail: format!(
                    "starts at {} where the previous entry ended at {}",
                    show(e.from.as_deref()),
                    show(prev)
                ),
            });
            break;
        }
        let legal = e.override_.is_some()
            || e.to
                .as_deref()
                .is_some_and(|to| graph.is_edge(e.from.as_deref(), to));
        if !legal {
            out.push(Finding::HistoryNotAPath {
                index,
                detail: format!(
                    "{} -> {} is not an edge of pipeline {:?} and no override is recorded",
                    show(e.from.as_deref()),
                    show(e.to.as_deref()),
                    pipeline.name
                ),
            });
            break;
        }
        at = Some(e.to.as_deref());
    }
    if t.unreadable.is_none() && t.disagrees() {
        out.push(Finding::LabelDisagrees {
            label: t.stage.clone(),
            last: t.steps.last().and_then(|s| s.entry.to.clone()),
        });
    }
    if let (Some(stage), Some(for_)) = (&t.stage, t.in_stage_for)
        && let Some(limit) = pipeline.stuck_after(stage)
        && for_ > limit
    {
        out.push(Finding::Stuck {
            stage: stage.clone(),
            for_,
            limit,
        });
    }
    out
}

fn show(stage: Option<&str>) -> String {
    stage.map_or("none".to_owned(), |s| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "stages: [a, b, c]\nstuck_after: 1h\noverride:\n  users: [alice]\n";

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    /// (from, to, seconds after the start, override reason)
    type Change<'a> = (Option<&'a str>, Option<&'a str>, u64, Option<&'a str>);

    fn wf(stage: Option<&str>, entries: &[Change<'_>]) -> Stored {
        let mut labels = BTreeMap::new();
        if let Some(s) = stage {
            labels.insert("current-stage".to_owned(), s.to_owned());
        }
        let history = (!entries.is_empty()).then(|| {
            let es: Vec<Entry> = entries
                .iter()
                .map(|(from, to, at, reason)| {
                    let mut e = Entry::new(*from, *to, "bob", t(*at));
                    e.override_ = reason.map(str::to_owned);
                    e
                })
                .collect();
            history::render(&es)
        });
        Stored {
            namespace: "argo".into(),
            name: "wf".into(),
            labels,
            history,
            created: Some(t(0)),
        }
    }

    fn kinds(p: &Policy, w: &Stored, now: u64) -> Vec<&'static str> {
        findings(p, w, t(now)).iter().map(Finding::kind).collect()
    }

    #[test]
    fn a_timeline_gives_each_stay_and_the_time_at_the_current_stage() {
        let p = Policy::from_yaml(CONFIG).unwrap();
        let w = wf(
            Some("b"),
            &[
                (None, Some("a"), 60, None),
                (Some("a"), Some("b"), 660, None),
            ],
        );
        let tl = timeline(&p, &w, t(1_260));
        assert_eq!(tl.pipeline.as_deref(), Some("default"));
        assert_eq!(tl.steps.len(), 2);
        assert_eq!(tl.steps[0].stayed, Some(Duration::from_secs(600)));
        assert_eq!(tl.steps[1].stayed, Some(Duration::from_secs(600)));
        assert_eq!(tl.in_stage_for, Some(Duration::from_secs(600)));
        assert!(!tl.disagrees());
        // No history yet: the time since creation.
        let tl = timeline(&p, &wf(Some("a"), &[]), t(90));
        assert_eq!(tl.in_stage_for, Some(Duration::from_secs(90)));
        assert!(tl.disagrees());
    }

    #[test]
    fn findings_name_each_kind_of_inconsistency() {
        let p = Policy::from_yaml(CONFIG).unwrap();
        let clean = wf(
            Some("b"),
            &[(None, Some("a"), 0, None), (Some("a"), Some("b"), 60, None)],
        );
        assert!(kinds(&p, &clean, 120).is_empty());
        // An unlabelled Workflow without history is not the audit's business.
        assert!(kinds(&p, &wf(None, &[]), 0).is_empty());
        assert_eq!(
            kinds(&p, &wf(Some("x"), &[(None, Some("x"), 0, None)]), 1),
            ["unknown-stage", "history-not-a-path"]
        );
        assert_eq!(
            kinds(
                &p,
                &wf(
                    Some("c"),
                    &[(None, Some("a"), 0, None), (Some("a"), Some("c"), 10, None)]
                ),
                20
            ),
            ["history-not-a-path"]
        );
        // A forced change is a legal step of the path.
        assert!(
            kinds(
                &p,
                &wf(
                    Some("c"),
                    &[
                        (None, Some("a"), 0, None),
                        (Some("a"), Some("c"), 10, Some("qa"))
                    ]
                ),
                20
            )
            .is_empty()
        );
        assert_eq!(
            kinds(
                &p,
                &wf(
                    Some("b"),
                    &[(None, Some("a"), 0, None), (Some("b"), Some("c"), 10, None)]
                ),
                20
            ),
            ["history-not-a-path", "label-disagrees"]
        );
        // Changed while the webhook was down: the label moved on, the history did not.
        assert_eq!(
            kinds(&p, &wf(Some("b"), &[(None, Some("a"), 0, None)]), 20),
            ["label-disagrees"]
        );
        // Stuck: over an hour at a stage that is not final; a final stage is never stuck.
        assert_eq!(
            kinds(&p, &wf(Some("a"), &[(None, Some("a"), 0, None)]), 3_601),
            ["stuck"]
        );
        let done = wf(
            Some("c"),
            &[
                (None, Some("a"), 0, None),
                (Some("a"), Some("b"), 1, None),
                (Some("b"), Some("c"), 2, None),
            ],
        );
        assert!(kinds(&p, &done, 999_999).is_empty());
        let mut broken = wf(Some("a"), &[]);
        broken.history = Some("{not json".into());
        assert_eq!(kinds(&p, &broken, 0), ["history-unreadable"]);
        let f = findings(&p, &wf(Some("a"), &[(None, Some("a"), 0, None)]), t(7_260));
        assert_eq!(f[0].describe(), "at \"a\" for 2h 1m (stuck after 1h)");
    }
}
