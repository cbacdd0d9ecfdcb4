//! The configuration as the rules read it (SPEC 2): a [`Policy`] is what `config` makes of a valid
//! file, and the rules that depend on it alone live beside it.

use serde::Deserialize;

use super::facts::Facts;
use super::pipeline::{DEFAULT_PIPELINE, Pipeline};

/// `resubmit`: what happens to the stage of a Workflow created by `argo resubmit` (SPEC 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resubmit {
    Reset,
    Keep,
}

impl Resubmit {
    /// As the configuration file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Resubmit::Reset => "reset",
            Resubmit::Keep => "keep",
        }
    }
}

/// `history`: the stage-history annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    pub annotation: String,
    pub limit: usize,
    pub required: bool,
}

/// `override`: who may force a change that is not an edge, and where the reason goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideConfig {
    pub annotation: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl OverrideConfig {
    /// A requester may force a change when its username, or one of its groups, is listed.
    pub fn permits(&self, username: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == username) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// A validated configuration: everything the admission logic needs.
#[derive(Debug, Clone)]
pub struct Policy {
    pub label: String,
    /// In the configuration's order; the default pipeline (the top-level graph), when there is one,
    /// last, so the first that matches decides. Never empty.
    pub pipelines: Vec<Pipeline>,
    pub history: HistoryConfig,
    pub override_: OverrideConfig,
    pub resubmit: Resubmit,
    /// What the configuration check found worth saying but not refusing (unreachable stages, ...).
    pub warnings: Vec<String>,
}

impl Policy {
    /// The `resubmit` rule when it applies: to the CREATE of a Workflow made by `argo resubmit` (SPEC 4.5).
    pub fn resubmit_rule(&self, is_create: bool, resubmitted: bool) -> Option<Resubmit> {
        (is_create && resubmitted).then_some(self.resubmit)
    }

    /// The pipeline of an object with these labels in this namespace: the first whose selector
    /// matches (the default pipeline matches everything). `None`: no pipeline takes the object, so
    /// it is not judged.
    pub fn pipeline_for<'l>(
        &self,
        label: impl Fn(&str) -> Option<&'l str> + Copy,
        namespace: &str,
    ) -> Option<usize> {
        self.pipelines
            .iter()
            .position(|p| p.selector.matches(label, namespace))
    }

    /// The pipeline that judges a write (see [`Facts::pipeline`]).
    pub fn judging(&self, facts: &Facts<'_>) -> Option<&Pipeline> {
        self.pipelines.get(facts.pipeline?)
    }

    /// The pipeline named `default` (the top-level graph), if the configuration has one.
    pub fn default_pipeline(&self) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == DEFAULT_PIPELINE)
    }

    /// A pipeline by name.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// A stage name as a metric label: a stage of any pipeline, `none` for no label, else `unknown`
    /// (bounded: configured names only, SPEC 8).
    pub fn stage_label(&self, pipeline: Option<&Pipeline>, stage: Option<&str>) -> String {
        match stage {
            None => "none".to_owned(),
            Some(s) if pipeline.is_some_and(|p| p.graph.is_known(s)) => s.to_owned(),
            Some(_) => "unknown".to_owned(),
        }
    }
}

#[cfg(test)]
impl Policy {
    /// The one pipeline of a single-graph configuration (the tests' usual case).
    pub(crate) fn only(&self) -> &Pipeline {
        assert_eq!(self.pipelines.len(), 1, "not a single-graph configuration");
        &self.pipelines[0]
    }
}
