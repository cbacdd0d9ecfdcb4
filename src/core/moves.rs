//! Moving a stored Workflow on purpose (`stage-guard next`, `set`, `rollback`): which stages are open
//! from where it stands, and where a rollback may go. Pure: the caller reads the Workflow and sends
//! the write; the webhooks stay the judges of the write itself.

use super::audit::{Stored, pipeline_of};
use super::history;
use super::policy::Policy;

/// The stages open to a Workflow from where it stands, by its pipeline's graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The pipeline that judges it (`None`: no pipeline takes it, so no write of it is judged).
    pub pipeline: Option<String>,
    /// The stage label now.
    pub stage: Option<String>,
    /// The stage is one its pipeline knows (true for no label).
    pub known: bool,
    /// The edges from here (the entry stages, for no label), in configuration order.
    pub next: Vec<String>,
    /// Every other known stage: only a forced change (a permitted override) reaches these.
    pub forced_only: Vec<String>,
}

impl Open {
    /// A known stage with no edge out of it.
    pub fn is_final(&self) -> bool {
        self.known && self.stage.is_some() && self.next.is_empty()
    }
}

/// What is open to `w` from its current stage.
pub fn open_from(policy: &Policy, w: &Stored) -> Open {
    let stage = w.labels.get(&policy.label).cloned();
    let Some(pipeline) = pipeline_of(policy, w) else {
        return Open {
            pipeline: None,
            stage,
            known: true,
            next: Vec::new(),
            forced_only: Vec::new(),
        };
    };
    let graph = &pipeline.graph;
    let known = stage.as_deref().is_none_or(|s| graph.is_known(s));
    let next: Vec<String> = graph
        .next_stages(stage.as_deref())
        .into_iter()
        .map(str::to_owned)
        .collect();
    let forced_only = graph
        .stages()
        .iter()
        .filter(|s| Some(s.as_str()) != stage.as_deref() && !next.contains(s))
        .cloned()
        .collect();
    Open {
        pipeline: Some(pipeline.name.clone()),
        stage,
        known,
        next,
        forced_only,
    }
}

/// Why a rollback is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefused {
    #[error("its history does not parse, so it cannot show where the Workflow was: {0}")]
    HistoryUnreadable(String),
    #[error("it has no stage history, so it cannot show where the Workflow was")]
    NoHistory,
    #[error("it was never at {target:?}: its history shows {}", list(.visited))]
    NeverThere {
        target: String,
        visited: Vec<String>,
    },
}

fn list(stages: &[String]) -> String {
    let quoted: Vec<String> = stages.iter().map(|s| format!("{s:?}")).collect();
    quoted.join(", ")
}

/// The stages the history shows `w` in, oldest first, each once.
pub fn visited(w: &Stored) -> Result<Vec<String>, RollbackRefused> {
    let raw = w.history.as_deref().ok_or(RollbackRefused::NoHistory)?;
    let entries =
        history::parse(raw).map_err(|e| RollbackRefused::HistoryUnreadable(e.to_string()))?;
    let mut seen: Vec<String> = Vec::new();
    for stage in entries
        .iter()
        .flat_map(|e| [e.from.as_deref(), e.to.as_deref()])
        .flatten()
    {
        if !seen.iter().any(|s| s == stage) {
            seen.push(stage.to_owned());
        }
    }
    Ok(seen)
}

/// A rollback of `w` to `target` may be sent: its history shows it at `target` once.
pub fn check_rollback(w: &Stored, target: &str) -> Result<(), RollbackRefused> {
    let visited = visited(w)?;
    if visited.iter().any(|s| s == target) {
        Ok(())
    } else {
        Err(RollbackRefused::NeverThere {
            target: target.to_owned(),
            visited,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::history::Entry;
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    const CONFIG: &str = "stages: [a, b, c, d]\ntransitions:\n  a: [b]\n  b: [c, a]\n  c: [d]\n";

    fn wf(stage: Option<&str>, path: &[(Option<&str>, &str)]) -> Stored {
        let mut labels = BTreeMap::new();
        if let Some(s) = stage {
            labels.insert("current-stage".to_owned(), s.to_owned());
        }
        let entries: Vec<Entry> = path
            .iter()
            .map(|(from, to)| Entry::new(*from, Some(to), "bob", SystemTime::UNIX_EPOCH))
            .collect();
        Stored {
            namespace: "argo".into(),
            name: "wf".into(),
            labels,
            history: (!entries.is_empty()).then(|| history::render(&entries)),
            created: None,
        }
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn open_stages_are_the_edges_and_the_rest_is_for_overrides() {
        let p = Policy::from_yaml(CONFIG).unwrap();
        let open = open_from(&p, &wf(Some("b"), &[]));
        assert_eq!(open.pipeline.as_deref(), Some("default"));
        assert_eq!(open.next, strings(&["c", "a"]));
        assert_eq!(open.forced_only, strings(&["d"]));
        assert!(open.known && !open.is_final());
        // No label: the entry stages.
        let open = open_from(&p, &wf(None, &[]));
        assert_eq!(open.next, strings(&["a"]));
        assert_eq!(open.forced_only, strings(&["b", "c", "d"]));
        // A final stage has nothing next; an unknown one only forced moves.
        assert!(open_from(&p, &wf(Some("d"), &[])).is_final());
        let open = open_from(&p, &wf(Some("zz"), &[]));
        assert!(!open.known && !open.is_final());
        assert!(open.next.is_empty());
        assert_eq!(open.forced_only, strings(&["a", "b", "c", "d"]));
    }

    #[test]
    fn a_workflow_no_pipeline_takes_has_nothing_open() {
        let p = Policy::from_yaml(
            "label: current-stage\npipelines:\n  - name: docs\n    match: {namespaces: [docs]}\n    stages: [draft, done]\n",
        )
        .unwrap();
        let open = open_from(&p, &wf(Some("draft"), &[]));
        assert_eq!(open.pipeline, None);
        assert!(open.next.is_empty() && open.forced_only.is_empty());
    }

    #[test]
    fn a_rollback_goes_only_where_the_history_was() {
        let w = wf(
            Some("c"),
            &[(None, "a"), (Some("a"), "b"), (Some("b"), "c")],
        );
        assert_eq!(check_rollback(&w, "a"), Ok(()));
        assert_eq!(check_rollback(&w, "b"), Ok(()));
        assert_eq!(
            check_rollback(&w, "d").unwrap_err().to_string(),
            "it was never at \"d\": its history shows \"a\", \"b\", \"c\""
        );
        assert_eq!(
            check_rollback(&wf(Some("a"), &[]), "a"),
            Err(RollbackRefused::NoHistory)
        );
        let mut broken = wf(Some("a"), &[]);
        broken.history = Some("[{".into());
        assert!(matches!(
            check_rollback(&broken, "a"),
            Err(RollbackRefused::HistoryUnreadable(_))
        ));
    }
}
