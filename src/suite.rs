//! `stage-guard test`: graph tests as code. A suite is a YAML file of declarative cases, each a write
//! (the Workflow's labels and namespace, the stored and the new stage, who writes, CREATE or not, an
//! override reason) and the verdict expected. Every case runs through the cluster's pipeline, as the
//! server answers it: the mutating webhook, its patch, the validating webhook.
//!
//! ```yaml
//! config: ../base/config.yaml      # optional, relative to this file
//! cases:
//!   - name: a step advances
//!     from: waiting-pr-created     # omitted or null: no label
//!     to: waiting-ready-for-qa
//!     labels: {workflows.argoproj.io/workflow-template: qa}   # the Workflow's other labels
//!     user: system:serviceaccount:argo:argo-workflow
//!     expect: allowed              # allowed | denied | warned
//!     reason: advance              # optional: the reason code
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::admission::pipeline::{self, Change, ClusterAnswer, Requester};
use crate::config::syntax;
use crate::core::{Operation, Outcome, Policy, Reason};
use crate::suggest;

/// What a case expects of the validating webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allowed,
    Denied,
    Warned,
}

impl Expect {
    fn of(outcome: Outcome) -> Expect {
        match outcome {
            Outcome::Allowed => Expect::Allowed,
            Outcome::Denied => Expect::Denied,
            Outcome::Warned => Expect::Warned,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Expect::Allowed => "allowed",
            Expect::Denied => "denied",
            Expect::Warned => "warned",
        }
    }
}

/// One case as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The Workflow's labels besides the stage label: they choose its pipeline.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The new object's labels when the write changes them (a relabel that may move it to another
    /// pipeline); the same as `labels` when absent.
    pub new_labels: Option<BTreeMap<String, String>>,
    pub namespace: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub create: bool,
    #[serde(rename = "override")]
    pub override_reason: Option<String>,
    pub expect: Expect,
    pub reason: Option<String>,
}

fn default_user() -> String {
    "stage-guard-test".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    config: Option<String>,
    cases: Vec<Case>,
}

/// A loaded suite.
#[derive(Debug)]
pub struct Suite {
    pub path: PathBuf,
    /// The configuration file the suite names, resolved against the suite's folder.
    pub config: Option<PathBuf>,
    pub cases: Vec<Case>,
}

/// A suite that cannot run: one line naming the file (and, where known, line and column).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SuiteError(String);

impl Suite {
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SuiteError(format!("cannot read {file}: {e}")))?;
        let raw: RawSuite = serde_saphyr::from_str(&text).map_err(|e| {
            let (at, message) = syntax::describe(&e);
            let at = at.map_or(String::new(), |(l, c)| format!(":{l}:{c}"));
            SuiteError(format!("{file}{at}: {message}"))
        })?;
        if raw.cases.is_empty() {
            return Err(SuiteError(format!("{file}: no cases")));
        }
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        for (i, case) in raw.cases.iter().enumerate() {
            let key = format!("{file}: cases[{i}] ({:?})", case.name);
            if case.create && case.from.is_some() {
                return Err(SuiteError(format!(
                    "{key}: a CREATE has no stored stage; drop `from`"
                )));
            }
            if let Some(reason) = &case.reason
                && !codes.contains(&reason.as_str())
            {
                let hint = suggest::closest(reason, codes.iter().copied())
                    .map_or(String::new(), |near| format!("; did you mean {near:?}?"));
                return Err(SuiteError(format!(
                    "{key}: unknown reason {reason:?}{hint}"
                )));
            }
        }
        let config = raw.config.map(|c| {
            path.parent()
                .map_or_else(|| PathBuf::from(&c), |dir| dir.join(&c))
        });
        Ok(Suite {
            path: path.to_owned(),
            config,
            cases: raw.cases,
        })
    }
}

/// What one case got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub outcome: Expect,
    /// The reason code; `None` when the write is not judged (no pipeline, no stage on either side).
    pub reason: Option<&'static str>,
    pub message: String,
}

impl Got {
    pub fn describe(&self) -> String {
        match self.reason {
            Some(r) => format!("{} ({r})", self.outcome.as_str()),
            None => format!("{} (not judged)", self.outcome.as_str()),
        }
    }
}

impl Case {
    /// The verdict the expectation stands for, for the report: `denied (skip)`.
    pub fn expected(&self) -> String {
        match &self.reason {
            Some(r) => format!("{} ({r})", self.expect.as_str()),
            None => self.expect.as_str().to_owned(),
        }
    }

    /// Runs the case through both webhooks, as the API server calls them.
    pub fn run(&self, policy: &Policy, now: SystemTime) -> Result<Got, String> {
        let labels: Vec<(String, String)> = self.labels.clone().into_iter().collect();
        let new_labels: Option<Vec<(String, String)>> =
            self.new_labels.clone().map(|l| l.into_iter().collect());
        let (old, new) = pipeline::change_objects(
            policy,
            &Change {
                name: "test-case",
                namespace: Some(self.namespace.as_deref().unwrap_or("default")),
                labels: &labels,
                new_labels: new_labels.as_deref(),
                from: self.from.as_deref(),
                to: self.to.as_deref(),
                override_reason: self.override_reason.as_deref(),
            },
        );
        let (operation, old) = if self.create {
            (Operation::Create, None)
        } else {
            (Operation::Update, Some(&old))
        };
        let requester = Requester {
            username: self.user.clone(),
            groups: self.groups.clone(),
        };
        let review = pipeline::review_of(operation, &requester, old, &new);
        let answer: ClusterAnswer =
            pipeline::run(policy, &review, now).map_err(|e| e.to_string())?;
        let record = &answer.validate.record;
        Ok(Got {
            outcome: Expect::of(record.decision),
            reason: record.reason.map(Reason::code),
            message: record.message.clone(),
        })
    }

    /// The case passes: the outcome, and the reason when the case names one.
    pub fn passes(&self, got: &Got) -> bool {
        got.outcome == self.expect && self.reason.as_deref().is_none_or(|r| got.reason == Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(text: &str) -> Result<Suite, SuiteError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suite.yaml");
        std::fs::write(&path, text).unwrap();
        Suite::load(&path)
    }

    #[test]
    fn cases_run_through_both_webhooks_and_compare_outcome_and_reason() {
        let s = suite(
            "cases:\n  - {name: advance, from: waiting-pr-created, to: waiting-ready-for-qa, expect: allowed, reason: advance}\n  \
             - {name: skip, from: waiting-pr-created, to: waiting-pr-approved, expect: denied, reason: skip}\n  \
             - {name: wrong, from: waiting-pr-created, to: waiting-pr-approved, expect: allowed}\n  \
             - {name: forced, from: waiting-pr-approved, to: waiting-pr-created, groups: [system:masters], override: qa, expect: allowed, reason: override}\n  \
             - {name: create, create: true, to: waiting-pr-created, expect: allowed, reason: entry}\n",
        )
        .unwrap();
        let policy = Policy::default_policy();
        let results: Vec<bool> = s
            .cases
            .iter()
            .map(|c| c.passes(&c.run(&policy, SystemTime::now()).unwrap()))
            .collect();
        assert_eq!(results, [true, true, false, true, true]);
        let got = s.cases[2].run(&policy, SystemTime::now()).unwrap();
        assert_eq!(got.describe(), "denied (skip)");
    }

    #[test]
    fn a_malformed_suite_is_one_line_naming_the_file() {
        let cases = [
            ("cases:\n  - {name: x, to: a, expect: maybe}\n", "unknown"),
            (
                "cases:\n  - {name: x, to: a, expect: allowed, colour: red}\n",
                "colour",
            ),
            ("cases: []\n", "no cases"),
            (
                "cases:\n  - {name: x, create: true, from: a, to: b, expect: denied}\n",
                "a CREATE has no stored stage",
            ),
            (
                "cases:\n  - {name: x, to: a, expect: denied, reason: skiped}\n",
                "unknown reason \"skiped\"; did you mean \"skip\"?",
            ),
        ];
        for (text, want) in cases {
            let e = suite(text).unwrap_err().to_string();
            assert!(e.contains("suite.yaml"), "{e}");
            assert!(e.contains(want), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
