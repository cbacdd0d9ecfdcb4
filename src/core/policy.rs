//! The configuration as the rules read it (SPEC 2): a [`Policy`] is what `config` makes of a valid
//! file, and the rules that depend on it alone live beside it.

use serde::Deserialize;

use super::graph::StageGraph;

/// `mode`: whether rule violations are denied or only warned about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Warn,
}

impl Mode {
    /// As the configuration file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
        }
    }
}

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
    pub graph: StageGraph,
    pub mode: Mode,
    pub history: HistoryConfig,
    pub override_: OverrideConfig,
    pub resubmit: Resubmit,
}

impl Policy {
    /// The `resubmit` rule when it applies: to the CREATE of a Workflow made by `argo resubmit` (SPEC 4.5).
    pub fn resubmit_rule(&self, is_create: bool, resubmitted: bool) -> Option<Resubmit> {
        (is_create && resubmitted).then_some(self.resubmit)
    }
}
