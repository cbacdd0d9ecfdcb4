//! The configuration file (SPEC 2): schema, embedded default, and strict validation.
//!
//! Parsing is strict at every depth (unknown keys and duplicate keys are errors). A parsed file is then
//! checked as a whole and turned into a [`Policy`] (`core::policy`), the only form the rest of the program
//! uses. Every error is one line that starts with the file's name (and, where known, the line and
//! column), names the key and says why (`syntax` words the parser's errors).

mod pipelines;
mod render;
mod stage_graph;
pub(crate) mod syntax;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::core::{
    DEFAULT_PIPELINE, HistoryConfig, Mode, OverrideConfig, Pipeline, Policy, Resubmit, Selector,
    StageGraph, StuckAfter,
};
use crate::suggest;

pub use render::effective_yaml;

/// The embedded default configuration, printed by `stage-guard config default`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

/// How the embedded default names itself in errors (which would be a build defect).
const EMBEDDED: &str = "embedded default";

/// A configuration problem: one line naming the file, the key and why it is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{file}: the file is empty; run 'stage-guard config default' for a starting point")]
    Empty { file: String },
    /// The text is not YAML, or not the configuration's shape (an unknown key, a wrong type).
    #[error("{file}{}: {message}", position(.at))]
    Syntax {
        file: String,
        at: Option<(u64, u64)>,
        message: String,
    },
    /// Well-formed, but the values do not make a stage graph (an unknown stage, a duplicate).
    #[error("{file}{}: {key}: {reason}", position(.at))]
    Invalid {
        file: String,
        at: Option<(u64, u64)>,
        key: String,
        reason: String,
    },
}

/// `:line:column`, or nothing when the position is not known.
fn position(at: &Option<(u64, u64)>) -> String {
    at.map(|(line, column)| format!(":{line}:{column}"))
        .unwrap_or_default()
}

/// Line and column of a value read from the file; `None` for values from the embedded default.
fn line_column(location: Location) -> Option<(u64, u64)> {
    (location.line() > 0).then(|| (location.line(), location.column()))
}

/// What is wrong with a set of keys, before the file's name is known.
#[derive(Debug)]
struct Problem {
    at: Option<(u64, u64)>,
    key: String,
    reason: String,
}

impl Problem {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            at: None,
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn at(key: impl Into<String>, location: Location, reason: impl Into<String>) -> Problem {
        Problem {
            at: line_column(location),
            ..Problem::new(key, reason)
        }
    }

    fn in_file(self, file: &str) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_owned(),
            at: self.at,
            key: self.key,
            reason: self.reason,
        }
    }
}

/// A stage name and where the file wrote it.
type Name = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    label: Option<String>,
    stages: Option<Vec<Name>>,
    entry: Option<Vec<Name>>,
    transitions: Option<RawTransitions>,
    mode: Option<Mode>,
    #[serde(default)]
    history: RawHistory,
    #[serde(default, rename = "override")]
    override_: RawOverride,
    resubmit: Option<Resubmit>,
    stuck_after: Option<RawStuck>,
    pipelines: Option<Vec<RawPipeline>>,
}

/// `stuck_after`: a duration for every stage, or stage -> duration (`'*'` for the rest).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawStuck {
    All(String),
    PerStage(BTreeMap<String, String>),
}

/// The transitions as the file writes them: stage -> stages it may move to.
type RawTransitions = BTreeMap<String, Spanned<Vec<Name>>>;

/// One entry of `pipelines:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Spanned<String>,
    #[serde(rename = "match")]
    match_: Option<Spanned<RawMatch>>,
    stages: Option<Vec<Name>>,
    entry: Option<Vec<Name>>,
    transitions: Option<RawTransitions>,
    mode: Option<Mode>,
    stuck_after: Option<RawStuck>,
}

/// A pipeline's `match`: labels that must all be on the object, and the namespaces it may be in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    labels: Option<BTreeMap<String, String>>,
    namespaces: Option<Vec<String>>,
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
        Policy::from_source(DEFAULT_CONFIG_YAML, EMBEDDED)
            .unwrap_or_else(|e| panic!("embedded default config: {e}"))
    }

    /// Reads and validates a configuration file; errors name it as given.
    pub fn from_file(path: &Path) -> Result<Policy, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Policy::from_source(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text (errors call it `(configuration)`).
    pub fn from_yaml(text: &str) -> Result<Policy, ConfigError> {
        Policy::from_source(text, "(configuration)")
    }

    /// Parses and validates configuration text read from `file`.
    pub fn from_source(text: &str, file: &str) -> Result<Policy, ConfigError> {
        // A file without a single key is a mistake (a wrong mount, a truncated ConfigMap), not a
        // wish for the default pipeline: that is what running without --config is for.
        if text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        }) {
            return Err(ConfigError::Empty {
                file: file.to_owned(),
            });
        }
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
            let (at, message) = syntax::describe(&e);
            ConfigError::Syntax {
                file: file.to_owned(),
                at,
                message,
            }
        })?;
        raw.or(embedded_default()?)
            .validate()
            .map_err(|p| p.in_file(file))
    }

    /// Reads `path` when given, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Policy, ConfigError> {
        match path {
            Some(p) => Policy::from_file(p),
            None => Ok(Policy::default_policy()),
        }
    }
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
    fn validate(self) -> Result<Policy, Problem> {
        let label = defaulted(self.label, "label")?;
        if !is_valid_qualified_key(&label) {
            return Err(Problem::new(
                "label",
                format!("{label:?} is not a valid label key"),
            ));
        }

        let mode = defaulted(self.mode, "mode")?;
        let mut pipelines = Vec::new();
        for (i, raw) in self.pipelines.into_iter().flatten().enumerate() {
            pipelines.push(raw.validate(i, mode)?);
        }
        pipelines::check_pipelines(&pipelines)?;
        match self.stages {
            Some(stages) => {
                let graph = stage_graph::build("", stages, self.entry, self.transitions)?;
                let stuck_after =
                    stage_graph::stuck_after("stuck_after", self.stuck_after, &graph)?;
                pipelines.push(Pipeline {
                    name: DEFAULT_PIPELINE.to_owned(),
                    selector: Selector::everything(),
                    graph,
                    mode,
                    stuck_after,
                });
            }
            // `pipelines:` without top-level stages: objects no pipeline matches are not judged.
            None => {
                for (key, given) in [
                    ("entry", self.entry.is_some()),
                    ("transitions", self.transitions.is_some()),
                    ("stuck_after", self.stuck_after.is_some()),
                ] {
                    if given {
                        return Err(Problem::new(
                            key,
                            "needs top-level stages (the default pipeline); set stages, or move it into a pipeline",
                        ));
                    }
                }
                if pipelines.is_empty() {
                    return Err(Problem::new("stages", "missing, and no pipelines either"));
                }
            }
        }
        let warnings = pipelines
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let at = if p.name == DEFAULT_PIPELINE {
                    "stages".to_owned()
                } else {
                    format!("pipelines[{i}] ({:?})", p.name)
                };
                p.unreachable_stages()
                    .into_iter()
                    .map(move |s| {
                        format!("{at}: stage {s:?} cannot be reached from an entry stage (only a forced change gets there)")
                    })
                    .collect::<Vec<_>>()
            })
            .collect();

        let history_annotation = defaulted(self.history.annotation, "history.annotation")?;
        if !is_valid_qualified_key(&history_annotation) {
            return Err(Problem::new(
                "history.annotation",
                format!("{history_annotation:?} is not a valid annotation key"),
            ));
        }
        let limit = defaulted(self.history.limit, "history.limit")?;
        if limit == 0 {
            return Err(Problem::new("history.limit", "must be at least 1"));
        }
        let override_annotation = defaulted(self.override_.annotation, "override.annotation")?;
        if !is_valid_qualified_key(&override_annotation) {
            return Err(Problem::new(
                "override.annotation",
                format!("{override_annotation:?} is not a valid annotation key"),
            ));
        }
        if override_annotation == history_annotation {
            return Err(Problem::new(
                "override.annotation",
                "must differ from history.annotation",
            ));
        }
        let users = defaulted(self.override_.users, "override.users")?;
        let groups = defaulted(self.override_.groups, "override.groups")?;
        for (key, list) in [("override.users", &users), ("override.groups", &groups)] {
            if let Some(i) = list.iter().position(String::is_empty) {
                return Err(Problem::new(format!("{key}[{i}]"), "empty name"));
            }
        }

        Ok(Policy {
            pipelines,
            warnings,
            label,
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
    serde_saphyr::from_str::<RawConfig>(DEFAULT_CONFIG_YAML)
        .map(RawConfig::without_locations)
        .map_err(|e| {
            let (at, message) = syntax::describe(&e);
            ConfigError::Syntax {
                file: EMBEDDED.to_owned(),
                at,
                message,
            }
        })
}

/// The same name, nowhere in the user's file.
fn unplaced(name: Name) -> Name {
    Spanned::new(name.value, Location::UNKNOWN, Location::UNKNOWN)
}

impl RawConfig {
    /// The default's names point into the embedded file, not into the one being checked: an error
    /// about one of them carries no line.
    fn without_locations(self) -> RawConfig {
        let names = |list: Option<Vec<Name>>| list.map(|l| l.into_iter().map(unplaced).collect());
        RawConfig {
            stages: names(self.stages),
            entry: names(self.entry),
            transitions: self.transitions.map(|map| {
                map.into_iter()
                    .map(|(from, targets)| {
                        let targets = targets.value.into_iter().map(unplaced).collect();
                        (
                            from,
                            Spanned::new(targets, Location::UNKNOWN, Location::UNKNOWN),
                        )
                    })
                    .collect()
            }),
            ..self
        }
    }

    /// This file's keys, and the default's for those it leaves out. `entry` and `transitions` are
    /// derived from `stages` when absent, so a file that lists its own stages does not inherit them.
    fn or(self, default: RawConfig) -> RawConfig {
        let own_stages = self.stages.is_some();
        // `pipelines:` without top-level stages means no default pipeline: nothing is inherited.
        let own_graph = own_stages || self.pipelines.is_some();
        RawConfig {
            label: self.label.or(default.label),
            stages: if own_graph {
                self.stages
            } else {
                default.stages
            },
            entry: if own_graph {
                self.entry
            } else {
                self.entry.or(default.entry)
            },
            transitions: if own_graph {
                self.transitions
            } else {
                self.transitions.or(default.transitions)
            },
            pipelines: self.pipelines,
            stuck_after: self.stuck_after,
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
fn defaulted<T>(value: Option<T>, key: &str) -> Result<T, Problem> {
    value.ok_or_else(|| Problem::new(key, "missing, and the embedded default sets none"))
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
            p.only().graph.stages(),
            [
                "waiting-pr-created",
                "waiting-ready-for-qa",
                "waiting-pr-approved"
            ]
        );
        assert_eq!(p.only().graph.entry_stages(), ["waiting-pr-created"]);
        assert_eq!(
            p.only().graph.next_stages(Some("waiting-pr-created")),
            ["waiting-ready-for-qa"]
        );
        assert_eq!(
            p.only().graph.next_stages(Some("waiting-ready-for-qa")),
            ["waiting-pr-approved"]
        );
        assert!(
            p.only()
                .graph
                .next_stages(Some("waiting-pr-approved"))
                .is_empty()
        );
        assert_eq!(p.only().mode, Mode::Enforce);
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
    fn an_empty_file_is_an_error_not_the_default_pipeline() {
        for text in [
            "",
            "\n  \n",
            "# nothing here\n",
            "---\n# still nothing\n...\n",
        ] {
            assert_eq!(
                Policy::from_source(text, "config.yaml")
                    .unwrap_err()
                    .to_string(),
                "config.yaml: the file is empty; run 'stage-guard config default' for a starting point",
                "{text:?}"
            );
        }
        // An explicit empty mapping is a deliberate "all defaults".
        assert_eq!(
            Policy::from_yaml("{}\n")
                .unwrap()
                .only()
                .graph
                .stages()
                .len(),
            3
        );
    }

    /// The error for `text`, as read from `config.yaml`.
    fn in_file(text: &str) -> String {
        Policy::from_source(text, "config.yaml")
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn syntax_errors_are_one_line_with_the_file_line_and_column() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("trasitions: {}\n",
             r#"config.yaml:1:1: unknown key "trasitions"; did you mean "transitions"?"#),
            ("label: x\nhistory:\n  limt: 3\n",
             r#"config.yaml:3:3: unknown key "history.limt"; did you mean "history.limit"?"#),
            ("override:\n  user: [a]\n",
             r#"config.yaml:2:3: unknown key "override.user"; did you mean "override.users"?"#),
            ("colour: blue\n",
             r#"config.yaml:1:1: unknown key "colour" (expected one of: label, stages, entry, transitions, mode, history, override, resubmit, stuck_after, pipelines)"#),
            ("mode: enforse\n",
             r#"config.yaml:1:7: mode: unknown value "enforse"; did you mean "enforce"? (enforce or warn)"#),
            ("resubmit: maybe\n",
             r#"config.yaml:1:11: resubmit: unknown value "maybe" (expected reset or keep)"#),
            ("label: x\nlabel: y\n", r#"config.yaml:2:1: duplicate key "label""#),
            ("stages: [a, b\nlabel: x\n", "config.yaml:2:6: "),
            ("history:\n  limit: -1\n", "config.yaml:2:10: "),
            ("mode: warn\n---\nmode: enforce\n",
             "config.yaml:3:1: more than one YAML document; a configuration is a single document"),
        ];
        for (yaml, want) in cases {
            let got = in_file(yaml);
            assert!(
                got.starts_with(want),
                "{yaml:?}:\n  got  {got}\n  want {want}"
            );
            assert!(!got.contains('\n'), "{got}");
            for noise in [
                "<input>",
                "-->",
                "DuplicateKeyPolicy",
                "from_str_multiple",
                "at line",
            ] {
                assert!(!got.contains(noise), "{got}");
            }
        }
    }

    #[test]
    fn misspelt_stage_names_get_a_suggestion_and_a_position() {
        let yaml = "stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]\n\
                    transitions:\n  waiting-pr-created: [waiting-ready-for-qa]\n  \
                    waiting-ready-for-qa: [waiting-pr-aproved]\n";
        assert_eq!(
            in_file(yaml),
            r#"config.yaml:4:26: transitions.waiting-ready-for-qa[0]: unknown stage "waiting-pr-aproved"; did you mean "waiting-pr-approved"?"#
        );
        assert_eq!(
            in_file("stages: [a, b]\nentry:\n  - zzz\n"),
            r#"config.yaml:3:5: entry[0]: unknown stage "zzz" (known: a, b)"#
        );
        // The stages come from the embedded default; the misspelt one is in this file.
        assert_eq!(
            in_file("transitions:\n  waiting-pr-created: [waiting-ready-for-q]\n"),
            r#"config.yaml:2:24: transitions.waiting-pr-created[0]: unknown stage "waiting-ready-for-q"; did you mean "waiting-ready-for-qa"?"#
        );
        assert_eq!(
            in_file("stages: [a, b, a]\n"),
            r#"config.yaml:1:16: stages[2]: duplicate stage "a""#
        );
        assert_eq!(
            in_file("label: 'bad key!'\n"),
            r#"config.yaml: label: "bad key!" is not a valid label key"#
        );
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
        assert_eq!(p.only().graph.entry_stages(), ["implementing", "reviewing"]);
        assert_eq!(
            p.only().graph.next_stages(Some("merging")),
            ["done", "testing"]
        );
        assert!(p.only().graph.next_stages(Some("done")).is_empty());
    }

    #[test]
    fn refusals_name_the_key_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("labl: x\n", "unknown key \"labl\"; did you mean \"label\"?"),
            ("history:\n  limt: 3\n", "unknown key \"history.limt\""),
            ("override:\n  user: [a]\n", "unknown key \"override.user\""),
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
        assert_eq!(warn.only().mode, Mode::Warn);
        assert_eq!(warn.label, default.label);
        assert_eq!(warn.history, default.history);
        assert_eq!(warn.override_, default.override_);
        assert_eq!(warn.resubmit, default.resubmit);
        assert_eq!(warn.only().graph.stages(), default.only().graph.stages());
        // A file with stages of its own gets entry and transitions from them, not the default's.
        let own = Policy::from_yaml("stages: [a, b, c]\n").unwrap();
        assert_eq!(own.only().graph.entry_stages(), ["a"]);
        assert_eq!(own.only().graph.next_stages(Some("a")), ["b"]);
        assert_eq!(own.history, default.history);
    }

    const TWO_PIPELINES: &str = "\
stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]
pipelines:
  - name: qa-loop
    match:
      labels: {workflows.argoproj.io/workflow-template: qa-template}
    stages: [implementing, reviewing, testing, merging]
    transitions:
      implementing: [reviewing]
      reviewing: [testing, implementing]
      testing: [merging, implementing]
    mode: warn
  - name: docs
    match:
      labels: {team: docs}
      namespaces: [docs, argo]
    stages: [draft, published]
";

    #[test]
    fn pipelines_come_in_order_with_the_top_level_graph_as_the_default_last() {
        let p = Policy::from_yaml(TWO_PIPELINES).unwrap();
        let names: Vec<&str> = p.pipelines.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["qa-loop", "docs", "default"]);
        assert_eq!(p.pipelines[0].mode, Mode::Warn);
        // A pipeline without its own mode takes the top-level one.
        assert_eq!(p.pipelines[1].mode, Mode::Enforce);
        assert_eq!(
            p.pipelines[0].graph.next_stages(Some("testing")),
            ["merging", "implementing"]
        );
        assert_eq!(
            p.pipelines[1].graph.next_stages(Some("draft")),
            ["published"]
        );
        let labels = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
        };
        let qa = labels(&[("workflows.argoproj.io/workflow-template", "qa-template")]);
        assert_eq!(p.pipeline_for(qa, "argo"), Some(0));
        assert_eq!(p.pipeline_for(labels(&[("team", "docs")]), "docs"), Some(1));
        assert_eq!(p.pipeline_for(labels(&[("team", "docs")]), "ci"), Some(2));
        assert_eq!(
            p.default_pipeline().map(|d| d.graph.stages().len()),
            Some(3)
        );
        // The reasonable warning: `merging` has no way out, but every stage is reachable here.
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn pipelines_without_top_level_stages_judge_only_what_they_match() {
        let p = Policy::from_yaml(
            "pipelines:\n  - name: only\n    match: {namespaces: [argo]}\n    stages: [a, b]\n",
        )
        .unwrap();
        assert!(p.default_pipeline().is_none());
        assert_eq!(p.pipeline_for(|_| None, "argo"), Some(0));
        assert_eq!(p.pipeline_for(|_| None, "elsewhere"), None);
        assert_eq!(
            err(
                "pipelines:\n  - name: only\n    match: {namespaces: [argo]}\n    stages: [a]\nentry: [a]\n"
            ),
            "(configuration): entry: needs top-level stages (the default pipeline); set stages, or move it into a pipeline"
        );
    }

    #[test]
    fn pipeline_errors_name_the_pipeline_and_the_key() {
        let cases = [
            (
                "pipelines:\n  - name: qa\n    match: {labels: {t: q}}\n    stages: [a, b]\n    transitions: {a: [c]}\n",
                "(configuration):5:23: pipelines[0].transitions.a[0]: unknown stage \"c\"; did you mean \"a\"?",
            ),
            (
                "pipelines:\n  - name: qa\n    match: {labels: {t: q}}\n    stages: [a]\n  - name: qa\n    match: {labels: {t: r}}\n    stages: [a]\n",
                "(configuration): pipelines[1].name: \"qa\" is the name of pipelines[0] too",
            ),
            (
                "pipelines:\n  - name: wide\n    match: {labels: {t: q}}\n    stages: [a]\n  - name: narrow\n    match: {labels: {t: q, u: v}}\n    stages: [a]\n",
                "(configuration): pipelines[1].match: never matches: pipelines[0] (\"wide\") comes first and takes every Workflow this one would",
            ),
            (
                "pipelines:\n  - name: default\n    match: {labels: {t: q}}\n    stages: [a]\n",
                "(configuration):2:11: pipelines[0].name: \"default\" is the name of the top-level graph; choose another",
            ),
            (
                "pipelines:\n  - name: qa\n    stages: [a]\n",
                "(configuration): pipelines[0].match: missing: say which Workflows the pipeline takes (labels, namespaces)",
            ),
            (
                "pipelines:\n  - name: qa\n    match: {labels: {}}\n    stages: [a]\n",
                "(configuration):3:12: pipelines[0].match: matches every Workflow; that is what the top-level stages (the default pipeline) are for",
            ),
            (
                "pipelines:\n  - name: qa\n    match: {namespaces: [Bad_NS]}\n    stages: [a]\n",
                "(configuration):3:12: pipelines[0].match.namespaces[0]: \"Bad_NS\" is not a namespace name",
            ),
            (
                "pipelines:\n  - name: qa\n    match: {labels: {t: q}}\n",
                "(configuration): pipelines[0].stages: missing: every pipeline lists its own stages",
            ),
            (
                "pipelines:\n  - name: qa\n    match: {labels: {t: q}}\n    stages: [a]\n    colour: red\n",
                "unknown key \"colour\"",
            ),
        ];
        for (yaml, want) in cases {
            let got = err(yaml);
            assert!(got.contains(want), "{yaml}\n  got  {got}\n  want {want}");
        }
    }

    #[test]
    fn stages_no_entry_reaches_are_warned_about() {
        let p = Policy::from_yaml(
            "stages: [a, b, c]\ntransitions: {a: [b]}\npipelines:\n  - name: qa\n    match: {labels: {t: q}}\n    stages: [x, y, z]\n    entry: [y]\n    transitions: {y: [z], x: [y]}\n",
        )
        .unwrap();
        assert_eq!(
            p.warnings,
            [
                "pipelines[0] (\"qa\"): stage \"x\" cannot be reached from an entry stage (only a forced change gets there)",
                "stages: stage \"c\" cannot be reached from an entry stage (only a forced change gets there)",
            ]
        );
    }

    #[test]
    fn stuck_after_is_a_duration_for_every_stage_or_one_per_stage() {
        let p = Policy::from_yaml(
            "stages: [a, b, c]\nstuck_after: 24h\npipelines:\n  - name: qa\n    match: {labels: {t: q}}\n    stages: [x, y, z]\n    stuck_after: {x: 30m, '*': 2h}\n",
        )
        .unwrap();
        let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
        let default = p.default_pipeline().unwrap();
        assert_eq!(default.stuck_after("a"), hours(24));
        // A final stage is done, never stuck; an unknown one has no limit.
        assert_eq!(default.stuck_after("c"), None);
        assert_eq!(default.stuck_after("nope"), None);
        let qa = p.pipeline("qa").unwrap();
        assert_eq!(
            qa.stuck_after("x"),
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(qa.stuck_after("y"), hours(2));
        for (yaml, want) in [
            (
                "stages: [a, b]\nstuck_after: soon\n",
                "stuck_after: \"soon\" is not a duration",
            ),
            (
                "stages: [a, b]\nstuck_after: 0s\n",
                "stuck_after: must be longer than zero",
            ),
            (
                "stages: [a, b]\nstuck_after: {c: 1h}\n",
                "stuck_after.c: unknown stage \"c\"",
            ),
            (
                "pipelines:\n  - name: qa\n    match: {labels: {t: q}}\n    stages: [x]\nstuck_after: 1h\n",
                "stuck_after: needs top-level stages",
            ),
        ] {
            let e = err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
