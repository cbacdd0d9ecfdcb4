//! The configuration file (SPEC 2): schema, embedded default, and strict validation.
//!
//! Parsing is strict at every depth (unknown keys and duplicate keys are errors). A parsed file is then
//! checked as a whole and turned into a [`Policy`] (`core::policy`), the only form the rest of the program
//! uses.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::core::{HistoryConfig, Mode, OverrideConfig, Policy, Resubmit, StageGraph};

/// The embedded default configuration, printed by `stage-guard config default`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

/// A configuration problem, naming the key and why it is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    label: Option<String>,
    stages: Option<Vec<String>>,
    entry: Option<Vec<String>>,
    transitions: Option<BTreeMap<String, Vec<String>>>,
    mode: Option<Mode>,
    #[serde(default)]
    history: RawHistory,
    #[serde(default, rename = "override")]
    override_: RawOverride,
    resubmit: Option<Resubmit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    annotation: Option<String>,
    limit: Option<usize>,
    required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    annotation: Option<String>,
    users: Option<Vec<String>>,
    groups: Option<Vec<String>>,
}

impl Policy {
    /// The embedded default (SPEC 2).
    pub fn default_policy() -> Policy {
        // The embedded file is checked by a unit test; failing here would be a build defect.
        Policy::from_yaml(DEFAULT_CONFIG_YAML)
            .unwrap_or_else(|e| panic!("embedded default config: {e}"))
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Policy, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Policy::from_yaml(&text)
    }

    /// Parses and validates configuration text.
    pub fn from_yaml(text: &str) -> Result<Policy, ConfigError> {
        // An empty file (or one holding only comments) means "all defaults".
        let raw: RawConfig = if text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---"
        }) {
            serde_saphyr::from_str("{}")
        } else {
            serde_saphyr::from_str(text)
        }
        .map_err(|e| ConfigError::Syntax(single_line(&e.to_string())))?;
        raw.or(embedded_default()?).validate()
    }

    /// Reads `path` when given, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Policy, ConfigError> {
        match path {
            Some(p) => Policy::from_file(p),
            None => Ok(Policy::default_policy()),
        }
    }
}

fn single_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A Kubernetes label value: at most 63 characters, alphanumeric at both ends, `-_.` inside.
pub fn is_valid_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return false;
    }
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric() && b.iter().all(inner_ok)
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name like a label value.
pub fn is_valid_qualified_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                let b = part.as_bytes();
                !b.is_empty()
                    && b.len() <= 63
                    && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
                    && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    });
    prefix_ok && is_valid_label_value(name)
}

impl RawConfig {
    /// Checks a complete set of keys (see [`RawConfig::or`]) and builds the policy.
    fn validate(self) -> Result<Policy, ConfigError> {
        let label = defaulted(self.label, "label")?;
        if !is_valid_qualified_key(&label) {
            return Err(ConfigError::invalid(
                "label",
                format!("{label:?} is not a valid label key"),
            ));
        }

        let stages = defaulted(self.stages, "stages")?;
        if stages.is_empty() {
            return Err(ConfigError::invalid(
                "stages",
                "must list at least one stage",
            ));
        }
        let mut seen = HashSet::new();
        for (i, s) in stages.iter().enumerate() {
            let key = format!("stages[{i}]");
            if s.is_empty() {
                return Err(ConfigError::invalid(key, "stage name is empty"));
            }
            if !is_valid_label_value(s) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{s:?} is not a valid label value (at most 63 characters, [A-Za-z0-9] at both ends, [-A-Za-z0-9_.] inside)"
                    ),
                ));
            }
            if !seen.insert(s.as_str()) {
                return Err(ConfigError::invalid(key, format!("duplicate stage {s:?}")));
            }
        }
        let known = |key: &str, s: &str| -> Result<(), ConfigError> {
            if seen.contains(s) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("unknown stage {s:?} (known: {})", stages.join(", ")),
                ))
            }
        };

        let entry = match self.entry {
            Some(entry) => {
                if entry.is_empty() {
                    return Err(ConfigError::invalid(
                        "entry",
                        "must name at least one stage",
                    ));
                }
                let mut dup = HashSet::new();
                for (i, s) in entry.iter().enumerate() {
                    known(&format!("entry[{i}]"), s)?;
                    if !dup.insert(s.as_str()) {
                        return Err(ConfigError::invalid(
                            format!("entry[{i}]"),
                            format!("duplicate entry stage {s:?}"),
                        ));
                    }
                }
                entry
            }
            None => vec![stages[0].clone()],
        };

        let transitions: Vec<(String, Vec<String>)> = match self.transitions {
            Some(map) => {
                for (from, targets) in &map {
                    known(&format!("transitions.{from}"), from)?;
                    let mut dup = HashSet::new();
                    for (i, to) in targets.iter().enumerate() {
                        let key = format!("transitions.{from}[{i}]");
                        known(&key, to)?;
                        if to == from {
                            return Err(ConfigError::invalid(
                                key,
                                format!(
                                    "{from:?} -> {to:?} is not a change; a stage cannot lead to itself"
                                ),
                            ));
                        }
                        if !dup.insert(to.as_str()) {
                            return Err(ConfigError::invalid(
                                key,
                                format!("duplicate edge {from:?} -> {to:?}"),
                            ));
                        }
                    }
                }
                map.into_iter().collect()
            }
            None => stages
                .windows(2)
                .map(|w| (w[0].clone(), vec![w[1].clone()]))
                .collect(),
        };

        let history_annotation = defaulted(self.history.annotation, "history.annotation")?;
        if !is_valid_qualified_key(&history_annotation) {
            return Err(ConfigError::invalid(
                "history.annotation",
                format!("{history_annotation:?} is not a valid annotation key"),
            ));
        }
        let limit = defaulted(self.history.limit, "history.limit")?;
        if limit == 0 {
            return Err(ConfigError::invalid("history.limit", "must be at least 1"));
        }
        let override_annotation = defaulted(self.override_.annotation, "override.annotation")?;
        if !is_valid_qualified_key(&override_annotation) {
            return Err(ConfigError::invalid(
                "override.annotation",
                format!("{override_annotation:?} is not a valid annotation key"),
            ));
        }
        if override_annotation == history_annotation {
            return Err(ConfigError::invalid(
                "override.annotation",
                "must differ from history.annotation",
            ));
        }
        let users = defaulted(self.override_.users, "override.users")?;
        let groups = defaulted(self.override_.groups, "override.groups")?;
        for (key, list) in [("override.users", &users), ("override.groups", &groups)] {
            if let Some(i) = list.iter().position(String::is_empty) {
                return Err(ConfigError::invalid(format!("{key}[{i}]"), "empty name"));
            }
        }

        Ok(Policy {
            graph: StageGraph::new(stages, &entry, &transitions),
            label,
            mode: defaulted(self.mode, "mode")?,
            history: HistoryConfig {
                annotation: history_annotation,
                limit,
                required: defaulted(self.history.required, "history.required")?,
            },
            override_: OverrideConfig {
                annotation: override_annotation,
                users,
                groups,
            },
            resubmit: defaulted(self.resubmit, "resubmit")?,
        })
    }
}

/// The embedded default as raw keys: the one source of every value a file leaves out.
fn embedded_default() -> Result<RawConfig, ConfigError> {
    serde_saphyr::from_str(DEFAULT_CONFIG_YAML).map_err(|e| {
        ConfigError::Syntax(format!("embedded default: {}", single_line(&e.to_string())))
    })
}

impl RawConfig {
    /// This file's keys, and the default's for those it leaves out. `entry` and `transitions` are
    /// derived from `stages` when absent, so a file that lists its own stages does not inherit them.
    fn or(self, default: RawConfig) -> RawConfig {
        let own_stages = self.stages.is_some();
        RawConfig {
            label: self.label.or(default.label),
            stages: self.stages.or(default.stages),
            entry: if own_stages {
                self.entry
            } else {
                self.entry.or(default.entry)
            },
            transitions: if own_stages {
                self.transitions
            } else {
                self.transitions.or(default.transitions)
            },
            mode: self.mode.or(default.mode),
            history: RawHistory {
                annotation: self.history.annotation.or(default.history.annotation),
                limit: self.history.limit.or(default.history.limit),
                required: self.history.required.or(default.history.required),
            },
            override_: RawOverride {
                annotation: self.override_.annotation.or(default.override_.annotation),
                users: self.override_.users.or(default.override_.users),
                groups: self.override_.groups.or(default.override_.groups),
            },
            resubmit: self.resubmit.or(default.resubmit),
        }
    }
}

/// A key the embedded default must set; missing, the default file itself is broken.
fn defaulted<T>(value: Option<T>, key: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::invalid(key, "missing, and the embedded default sets none"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Policy::from_yaml(yaml)
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn embedded_default_is_the_three_stage_chain() {
        let p = Policy::from_yaml(DEFAULT_CONFIG_YAML).unwrap();
        assert_eq!(p.label, "current-stage");
        assert_eq!(
            p.graph.stages(),
            [
                "waiting-pr-created",
                "waiting-ready-for-qa",
                "waiting-pr-approved"
            ]
        );
        assert_eq!(p.graph.entry_stages(), ["waiting-pr-created"]);
        assert_eq!(
            p.graph.next_stages(Some("waiting-pr-created")),
            ["waiting-ready-for-qa"]
        );
        assert_eq!(
            p.graph.next_stages(Some("waiting-ready-for-qa")),
            ["waiting-pr-approved"]
        );
        assert!(p.graph.next_stages(Some("waiting-pr-approved")).is_empty());
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.history.annotation, "stage-guard.io/history");
        assert_eq!(p.history.limit, 50);
        assert!(p.history.required);
        assert_eq!(p.override_.annotation, "stage-guard.io/override-reason");
        // Break-glass from day one: cluster administrators may force a stuck Workflow's stage.
        assert!(p.override_.users.is_empty());
        assert_eq!(p.override_.groups, ["system:masters"]);
        assert!(p.override_.permits("admin", &["system:masters".into()]));
        assert!(!p.override_.permits("bob", &["developers".into()]));
        assert_eq!(p.resubmit, Resubmit::Reset);
    }

    #[test]
    fn empty_file_means_defaults() {
        let p = Policy::from_yaml("# nothing here\n").unwrap();
        assert_eq!(p.graph.stages().len(), 3);
    }

    #[test]
    fn graph_with_loops_entries_and_a_final_stage() {
        let p = Policy::from_yaml(
            "stages: [implementing, reviewing, testing, merging, done]\n\
             entry: [implementing, reviewing]\n\
             transitions:\n  implementing: [reviewing]\n  reviewing: [testing, implementing]\n  \
             testing: [merging, implementing]\n  merging: [done, testing]\n",
        )
        .unwrap();
        assert_eq!(p.graph.entry_stages(), ["implementing", "reviewing"]);
        assert_eq!(p.graph.next_stages(Some("merging")), ["done", "testing"]);
        assert!(p.graph.next_stages(Some("done")).is_empty());
    }

    #[test]
    fn refusals_name_the_key_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("labl: x\n", "unknown field"),
            ("history:\n  limt: 3\n", "unknown field"),
            ("override:\n  user: [a]\n", "unknown field"),
            ("stages: [a, b, a]\n", "stages[2]: duplicate stage \"a\""),
            ("stages: [a, '']\n", "stages[1]: stage name is empty"),
            (
                "stages: [a, -b]\n",
                "stages[1]: \"-b\" is not a valid label value",
            ),
            ("stages: []\n", "stages: must list at least one stage"),
            (
                "stages: [a, b]\nentry: []\n",
                "entry: must name at least one stage",
            ),
            (
                "stages: [a, b]\nentry: [c]\n",
                "entry[0]: unknown stage \"c\"",
            ),
            (
                "stages: [a, b]\ntransitions:\n  a: [x]\n",
                "transitions.a[0]: unknown stage \"x\"",
            ),
            (
                "stages: [a, b]\ntransitions:\n  z: [a]\n",
                "transitions.z: unknown stage \"z\"",
            ),
            (
                "stages: [a, b]\ntransitions:\n  a: [b, b]\n",
                "transitions.a[1]: duplicate edge",
            ),
            (
                "stages: [a, b]\ntransitions:\n  a: [b]\n  a: [a]\n",
                "duplicate",
            ),
            ("mode: lenient\n", "lenient"),
            ("resubmit: maybe\n", "maybe"),
            (
                "history:\n  limit: 0\n",
                "history.limit: must be at least 1",
            ),
            (
                "label: 'bad key!'\n",
                "label: \"bad key!\" is not a valid label key",
            ),
            (
                "stages: [a, b]\ntransitions:\n  a: [a]\n",
                "transitions.a[0]",
            ),
        ];
        for (yaml, want) in cases {
            let got = err(yaml);
            assert!(
                got.contains(want),
                "config {yaml:?}: error {got:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn a_64_character_stage_is_refused() {
        let long = "a".repeat(64);
        assert!(err(&format!("stages: [{long}]\n")).contains("stages[0]"));
        assert!(Policy::from_yaml(&format!("stages: [{}]\n", "a".repeat(63))).is_ok());
    }

    #[test]
    fn label_value_and_key_syntax() {
        for ok in ["a", "a.b-c_d", "A9", "0"] {
            assert!(is_valid_label_value(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "ä", "a/b"] {
            assert!(!is_valid_label_value(bad), "{bad}");
        }
        for ok in ["current-stage", "stage-guard.io/history", "example.com/x"] {
            assert!(is_valid_qualified_key(ok), "{ok}");
        }
        for bad in ["", "/x", "Upper.io/x", "a/b/c", "x/"] {
            assert!(!is_valid_qualified_key(bad), "{bad}");
        }
    }

    #[test]
    fn permitted_overrides_by_user_or_group() {
        let p = Policy::from_yaml("override:\n  users: [alice]\n  groups: [sre]\n").unwrap();
        assert!(p.override_.permits("alice", &[]));
        assert!(p.override_.permits("bob", &["dev".into(), "sre".into()]));
        assert!(!p.override_.permits("bob", &["dev".into()]));
    }

    #[test]
    fn keys_left_out_come_from_the_embedded_default() {
        let default = Policy::default_policy();
        let warn = Policy::from_yaml("mode: warn\n").unwrap();
        assert_eq!(warn.mode, Mode::Warn);
        assert_eq!(warn.label, default.label);
        assert_eq!(warn.history, default.history);
        assert_eq!(warn.override_, default.override_);
        assert_eq!(warn.resubmit, default.resubmit);
        assert_eq!(warn.graph.stages(), default.graph.stages());
        // A file with stages of its own gets entry and transitions from them, not the default's.
        let own = Policy::from_yaml("stages: [a, b, c]\n").unwrap();
        assert_eq!(own.graph.entry_stages(), ["a"]);
        assert_eq!(own.graph.next_stages(Some("a")), ["b"]);
        assert_eq!(own.history, default.history);
    }
}
