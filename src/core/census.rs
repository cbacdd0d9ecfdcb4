//! Where the Workflows are, all at once: how many wait at each stage of each pipeline, how long the
//! one that has waited longest has been there, how many are stuck, and how many findings of each kind
//! the audit would report. What `stage-guard monitor` exports. Pure: the caller reads the Workflows
//! and passes `now`.
//!
//! Keys are bounded (SPEC 8): configured pipeline and stage names, `unknown` for a stage its pipeline
//! does not know, and the audit's fixed finding kinds. Every key exists from the start with zeros, so
//! a stage that empties reads 0 rather than disappearing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::audit::{self, Finding, Stored};
use super::policy::Policy;

/// The stage key of a label value its pipeline does not know.
pub const UNKNOWN_STAGE: &str = "unknown";

/// The Workflows at one stage of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtStage {
    pub workflows: u64,
    /// How long the Workflow that has been there longest has been there (`None`: none there, or no
    /// time known for any of them).
    pub oldest: Option<Duration>,
    /// Longer there than the pipeline's `stuck_after`.
    pub stuck: u64,
}

/// The counts of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    /// By (pipeline, stage): every configured stage of every pipeline, and `unknown` in each.
    pub stages: BTreeMap<(String, String), AtStage>,
    /// By finding kind ([`Finding::KINDS`]), every kind present.
    pub findings: BTreeMap<&'static str, u64>,
}

impl Census {
    /// Every key at zero.
    pub fn empty(policy: &Policy) -> Census {
        let mut stages = BTreeMap::new();
        for pipeline in &policy.pipelines {
            let names = pipeline.graph.stages().iter().map(String::as_str);
            for stage in names.chain([UNKNOWN_STAGE]) {
                stages.insert(
                    (pipeline.name.clone(), stage.to_owned()),
                    AtStage::default(),
                );
            }
        }
        Census {
            stages,
            findings: Finding::KINDS.iter().map(|k| (*k, 0)).collect(),
        }
    }

    /// The census of `workflows` at `now`.
    pub fn of<'w>(
        policy: &Policy,
        workflows: impl IntoIterator<Item = &'w Stored>,
        now: SystemTime,
    ) -> Census {
        let mut census = Census::empty(policy);
        for w in workflows {
            census.add(policy, w, now);
        }
        census
    }

    /// Counts one Workflow. One no pipeline takes is not counted; one without the stage label is in
    /// no stage (its findings still count).
    pub fn add(&mut self, policy: &Policy, w: &Stored, now: SystemTime) {
        let Some(pipeline) = audit::pipeline_of(policy, w) else {
            return;
        };
        let timeline = audit::timeline_in(Some(pipeline), policy, w, now);
        let findings = audit::findings_in(pipeline, &timeline);
        for f in &findings {
            *self.findings.entry(f.kind()).or_default() += 1;
        }
        let Some(stage) = w.labels.get(&policy.label) else {
            return;
        };
        let stage = if pipeline.graph.is_known(stage) {
            stage.as_str()
        } else {
            UNKNOWN_STAGE
        };
        let at = self
            .stages
            .entry((pipeline.name.clone(), stage.to_owned()))
            .or_default();
        at.workflows += 1;
        if let Some(for_) = timeline.in_stage_for {
            at.oldest = Some(at.oldest.map_or(for_, |o| o.max(for_)));
        }
        if findings.iter().any(|f| matches!(f, Finding::Stuck { .. })) {
            at.stuck += 1;
        }
    }

    /// One stage's counts (zeros for a key the census does not hold).
    pub fn at(&self, pipeline: &str, stage: &str) -> AtStage {
        self.stages
            .get(&(pipeline.to_owned(), stage.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::history::{self, Entry};

    const CONFIG: &str = "stages: [a, b, c]
stuck_after: {a: 1h, '*': 2h}
pipelines:
  - name: docs
    match: {namespaces: [docs]}
    stages: [draft, published]
";

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    /// A Workflow in `namespace` at `stage`, created at 0, whose history walks `path` one step per
    /// `step` seconds from 0.
    fn wf(namespace: &str, stage: Option<&str>, path: &[&str], step: u64) -> Stored {
        let mut labels = BTreeMap::new();
        if let Some(s) = stage {
            labels.insert("current-stage".to_owned(), s.to_owned());
        }
        let mut from = None;
        let mut entries = Vec::new();
        for (i, to) in path.iter().enumerate() {
            entries.push(Entry::new(from, Some(to), "bob", t(i as u64 * step)));
            from = Some(to);
        }
        Stored {
            namespace: namespace.into(),
            name: format!("wf-{}", path.len()),
            labels,
            history: (!entries.is_empty()).then(|| history::render(&entries)),
            created: Some(t(0)),
        }
    }

    fn policy() -> Policy {
        Policy::from_yaml(CONFIG).unwrap()
    }

    #[test]
    fn every_configured_stage_and_unknown_start_at_zero() {
        let c = Census::empty(&policy());
        let keys: Vec<(&str, &str)> = c
            .stages
            .keys()
            .map(|(p, s)| (p.as_str(), s.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("default", "a"),
                ("default", "b"),
                ("default", "c"),
                ("default", "unknown"),
                ("docs", "draft"),
                ("docs", "published"),
                ("docs", "unknown"),
            ]
        );
        assert!(c.stages.values().all(|at| *at == AtStage::default()));
        assert_eq!(c.findings.len(), Finding::KINDS.len());
        assert!(c.findings.values().all(|n| *n == 0));
    }

    #[test]
    fn workflows_count_at_their_pipelines_stage_with_the_oldest_stay() {
        let p = policy();
        let ws = [
            wf("argo", Some("b"), &["a", "b"], 600), // at b since 600
            wf("argo", Some("b"), &["a", "b"], 60),  // at b since 60: the oldest
            wf("argo", Some("a"), &["a"], 0),
            wf("docs", Some("draft"), &["draft"], 0),
        ];
        let c = Census::of(&p, &ws, t(1_000));
        assert_eq!(
            c.at("default", "b"),
            AtStage {
                workflows: 2,
                oldest: Some(Duration::from_secs(940)),
                stuck: 0
            }
        );
        assert_eq!(c.at("default", "a").workflows, 1);
        assert_eq!(c.at("default", "c"), AtStage::default());
        assert_eq!(c.at("docs", "draft").workflows, 1);
        // The docs Workflow is not counted in the default pipeline's stage of the same name.
        assert_eq!(c.at("default", "draft"), AtStage::default());
        assert!(c.findings.values().all(|n| *n == 0), "{:?}", c.findings);
    }

    #[test]
    fn an_unknown_stage_counts_as_unknown_and_as_a_finding() {
        let p = policy();
        let mut w = wf("argo", Some("a"), &["a"], 0);
        w.labels.insert("current-stage".into(), "typo".into());
        let c = Census::of(&p, [&w], t(10));
        assert_eq!(c.at("default", "unknown").workflows, 1);
        assert!(!c.stages.contains_key(&("default".into(), "typo".into())));
        assert_eq!(c.findings["unknown-stage"], 1);
        assert_eq!(c.findings["label-disagrees"], 1);
    }

    #[test]
    fn stuck_follows_stuck_after_stage_by_stage_and_never_a_final_stage() {
        let p = policy();
        let ws = [
            wf("argo", Some("a"), &["a"], 0),            // 1h at a: limit 1h
            wf("argo", Some("b"), &["a", "b"], 10),      // under 2h at b
            wf("argo", Some("c"), &["a", "b", "c"], 10), // final
            wf("argo", Some("b"), &["a", "b"], 1),       // also under 2h
            wf("docs", Some("draft"), &["draft"], 0),    // docs has no stuck_after
        ];
        let c = Census::of(&p, &ws, t(3_601));
        assert_eq!(c.at("default", "a").stuck, 1);
        assert_eq!(c.at("default", "b").stuck, 0);
        assert_eq!(c.findings["stuck"], 1);
        let c = Census::of(&p, &ws, t(7_300));
        assert_eq!(c.at("default", "b").stuck, 2);
        assert_eq!(c.at("default", "c").stuck, 0);
        assert_eq!(c.at("docs", "draft").stuck, 0);
        assert_eq!(c.findings["stuck"], 3);
    }

    #[test]
    fn unlabelled_workflows_are_in_no_stage_and_unmatched_ones_are_not_counted() {
        let p = Policy::from_yaml(
            "label: current-stage
pipelines:
  - name: qa
    match: {labels: {team: qa}}
    stages: [x, y]
",
        )
        .unwrap();
        let mut taken = wf("argo", None, &[], 0);
        taken.labels.insert("team".into(), "qa".into());
        let mut broken = wf("argo", Some("x"), &[], 0);
        broken.labels.insert("team".into(), "qa".into());
        broken.history = Some("{not json".into());
        let stray = wf("argo", Some("x"), &["x"], 0); // no pipeline takes it
        let c = Census::of(&p, [&taken, &broken, &stray], t(5));
        assert_eq!(c.at("qa", "x").workflows, 1);
        assert_eq!(c.stages.values().map(|a| a.workflows).sum::<u64>(), 1);
        assert_eq!(c.findings["history-unreadable"], 1);
        assert_eq!(c.findings.values().sum::<u64>(), 1);
        // No readable history: the time since it was created.
        assert_eq!(c.at("qa", "x").oldest, Some(Duration::from_secs(5)));
    }
}
