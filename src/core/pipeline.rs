//! Pipelines: several stage graphs in one cluster. Each has a name, a selector (labels that must all
//! match the object's, and optionally the namespaces it may be in), its own graph and its own mode.
//! The first pipeline whose selector matches decides; the top-level graph of the configuration, when
//! it has one, is the pipeline named `default` for objects that match none.

use std::time::Duration;

use super::graph::StageGraph;
use super::mode::Mode;

/// The name of the pipeline the top-level `stages`/`entry`/`transitions`/`mode` make.
pub const DEFAULT_PIPELINE: &str = "default";

/// Which objects a pipeline takes: all of `labels` (key and value) on the object, and, when
/// `namespaces` is given, a namespace in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub labels: Vec<(String, String)>,
    pub namespaces: Option<Vec<String>>,
}

impl Selector {
    /// Every object (the default pipeline's selector).
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn matches<'l>(&self, label: impl Fn(&str) -> Option<&'l str>, namespace: &str) -> bool {
        self.labels
            .iter()
            .all(|(key, value)| label(key) == Some(value.as_str()))
            && self
                .namespaces
                .as_ref()
                .is_none_or(|list| list.iter().any(|n| n == namespace))
    }

    /// Every object `other` matches, this selector matches too: a pipeline listed after one that
    /// covers it can never match.
    pub fn covers(&self, other: &Selector) -> bool {
        self.labels.iter().all(|l| other.labels.contains(l))
            && match (&self.namespaces, &other.namespaces) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs.iter().all(|n| mine.contains(n)),
            }
    }
}

/// `stuck_after`: how long a Workflow may wait at a stage before it counts as stuck (for `stage-guard
/// audit` and the monitor; admission never uses it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StuckAfter {
    /// Every stage without a value of its own (`stuck_after: 24h`, or `'*': 24h` in the map form).
    pub all: Option<Duration>,
    /// Stage by stage.
    pub stages: Vec<(String, Duration)>,
}

/// One pipeline: the graph and mode that judge the objects its selector takes.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub selector: Selector,
    pub graph: StageGraph,
    pub mode: Mode,
    pub stuck_after: StuckAfter,
}

impl Pipeline {
    /// How long a Workflow may stay at `stage`; `None`: no limit, or a final stage (it is done).
    pub fn stuck_after(&self, stage: &str) -> Option<Duration> {
        if !self.graph.is_known(stage) || self.graph.next_stages(Some(stage)).is_empty() {
            return None;
        }
        self.stuck_after
            .stages
            .iter()
            .find(|(s, _)| s == stage)
            .map(|(_, d)| *d)
            .or(self.stuck_after.all)
    }

    /// The stages no path from an entry stage reaches (worth a warning: only an override gets there).
    pub fn unreachable_stages(&self) -> Vec<&str> {
        let g = &self.graph;
        let mut seen: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = g.entry_stages();
        while let Some(s) = todo.pop() {
            if seen.contains(&s) {
                continue;
            }
            seen.push(s);
            todo.extend(g.next_stages(Some(s)));
        }
        g.stages()
            .iter()
            .map(String::as_str)
            .filter(|s| !seen.contains(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(labels: &[(&str, &str)], namespaces: Option<&[&str]>) -> Selector {
        Selector {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            namespaces: namespaces.map(|n| n.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn a_selector_wants_every_label_and_one_of_its_namespaces() {
        let s = sel(&[("tmpl", "qa"), ("team", "a")], Some(&["argo", "ci"]));
        let labels = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
        };
        assert!(s.matches(labels(&[("tmpl", "qa"), ("team", "a"), ("x", "y")]), "ci"));
        assert!(!s.matches(labels(&[("tmpl", "qa")]), "ci"));
        assert!(!s.matches(labels(&[("tmpl", "qa"), ("team", "b")]), "ci"));
        assert!(!s.matches(labels(&[("tmpl", "qa"), ("team", "a")]), "default"));
        assert!(Selector::everything().matches(labels(&[]), "anywhere"));
    }

    #[test]
    fn covering_is_a_subset_of_labels_and_a_superset_of_namespaces() {
        let wide = sel(&[("tmpl", "qa")], None);
        let narrow = sel(&[("tmpl", "qa"), ("team", "a")], Some(&["argo"]));
        assert!(wide.covers(&narrow));
        assert!(!narrow.covers(&wide));
        assert!(Selector::everything().covers(&narrow));
        assert!(sel(&[], Some(&["argo", "ci"])).covers(&sel(&[], Some(&["ci"]))));
        assert!(!sel(&[], Some(&["ci"])).covers(&sel(&[], Some(&["argo", "ci"]))));
        assert!(!sel(&[], Some(&["ci"])).covers(&sel(&[], None)));
    }

    #[test]
    fn unreachable_stages_are_the_ones_no_path_from_an_entry_reaches() {
        let graph = StageGraph::new(
            ["a", "b", "c", "d"].map(String::from).to_vec(),
            &["a".to_string()],
            &[
                ("a".into(), vec!["b".into()]),
                ("b".into(), vec!["a".into()]),
                ("d".into(), vec!["c".into()]),
            ],
        );
        let p = Pipeline {
            name: "p".into(),
            selector: Selector::everything(),
            graph,
            mode: Mode::Enforce,
            stuck_after: StuckAfter::default(),
        };
        assert_eq!(p.unreachable_stages(), ["c", "d"]);
    }
}
