//! `stage-guard history`: one Workflow's stage timeline as a table for people, or as JSON or YAML for
//! tools, in one stable shape (README: "history"):
//!
//! ```json
//! {"namespace": "argo", "name": "task-7", "pipeline": "default", "stage": "waiting-ready-for-qa",
//!  "inStageSeconds": 7500,
//!  "changes": [{"from": null, "to": "waiting-pr-created", "at": "2026-11-26T09:22:46Z", "by": "alice",
//!               "override": null, "stayedSeconds": 2306}],
//!  "historyError": null, "labelDisagrees": false}
//! ```

use std::fmt::Write as _;

use serde::Serialize;

use super::table;
use crate::core::audit::{Finding, Stored, Timeline, human};

/// The timeline in the shape `-o json` and `-o yaml` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    pub namespace: String,
    pub name: String,
    /// The pipeline that judges the Workflow; `null` when none takes it.
    pub pipeline: Option<String>,
    /// The stage label now; `null` when it has none.
    pub stage: Option<String>,
    /// Since the last change recorded for the current stage (else since creation); `null` when unknown.
    pub in_stage_seconds: Option<u64>,
    /// Oldest first.
    pub changes: Vec<ChangeView>,
    /// Why the history annotation does not parse; `null` when it does (or there is none).
    pub history_error: Option<String>,
    /// The label is not where the last history entry says the Workflow went.
    pub label_disagrees: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeView {
    pub from: Option<String>,
    pub to: Option<String>,
    pub at: String,
    pub by: String,
    /// The reason of a forced change; `null` on ordinary ones.
    #[serde(rename = "override")]
    pub override_: Option<String>,
    /// Until the next change, or until now for the last one.
    pub stayed_seconds: Option<u64>,
}

impl HistoryView {
    pub fn new(w: &Stored, t: &Timeline) -> HistoryView {
        HistoryView {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            pipeline: t.pipeline.clone(),
            stage: t.stage.clone(),
            in_stage_seconds: t.in_stage_for.map(|d| d.as_secs()),
            changes: t
                .steps
                .iter()
                .map(|s| ChangeView {
                    from: s.entry.from.clone(),
                    to: s.entry.to.clone(),
                    at: s.entry.at.clone(),
                    by: s.entry.by.clone(),
                    override_: s.entry.override_.clone(),
                    stayed_seconds: s.stayed.map(|d| d.as_secs()),
                })
                .collect(),
            history_error: t.unreadable.clone(),
            label_disagrees: t.unreadable.is_none() && t.disagrees(),
        }
    }

    /// For people: a header, the changes as aligned columns, and notes.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Workflow:  {}/{}", self.namespace, self.name);
        let _ = writeln!(
            out,
            "Pipeline:  {}",
            self.pipeline
                .as_deref()
                .unwrap_or("none (no pipeline takes it: its stage changes are not judged)")
        );
        let since = self
            .in_stage_seconds
            .map(|s| format!(", for {}", human(std::time::Duration::from_secs(s))))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "Stage:     {}{since}",
            self.stage.as_deref().unwrap_or("none (no stage label)")
        );
        out.push('\n');
        if self.changes.is_empty() {
            out.push_str("No stage changes recorded.\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .changes
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    vec![
                        (i + 1).to_string(),
                        c.from.clone().unwrap_or_else(|| "none".into()),
                        c.to.clone().unwrap_or_else(|| "none".into()),
                        c.at.clone(),
                        c.by.clone(),
                        c.stayed_seconds
                            .map(|s| human(std::time::Duration::from_secs(s)))
                            .unwrap_or_else(|| "?".into()),
                        c.override_.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table::render(
                &["#", "FROM", "TO", "AT", "BY", "STAYED", "OVERRIDE"],
                &rows,
            ));
        }
        if let Some(error) = &self.history_error {
            let _ = writeln!(out, "\nNote: the history does not parse: {error}");
        } else if self.label_disagrees {
            let last = Finding::LabelDisagrees {
                label: self.stage.clone(),
                last: self.changes.last().and_then(|c| c.to.clone()),
            };
            let _ = writeln!(out, "\nNote: {}", last.describe());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Policy;
    use crate::core::audit::timeline;
    use crate::core::history::{self, Entry};
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    fn stored(stage: &str, entries: &[Entry]) -> Stored {
        Stored {
            namespace: "argo".into(),
            name: "task-7".into(),
            labels: BTreeMap::from([("current-stage".to_owned(), stage.to_owned())]),
            history: Some(history::render(entries)),
            created: Some(t(0)),
        }
    }

    fn entries() -> Vec<Entry> {
        let mut forced = Entry::new(
            Some("waiting-pr-created"),
            Some("waiting-pr-approved"),
            "alice",
            t(3_600),
        );
        forced.override_ = Some("hotfix".into());
        vec![
            Entry::new(
                None,
                Some("waiting-pr-created"),
                "system:serviceaccount:argo:argo-workflow",
                t(60),
            ),
            forced,
        ]
    }

    #[test]
    fn the_table_aligns_the_changes_and_says_how_long_each_stay_was() {
        let p = Policy::from_yaml(
            "stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]",
        )
        .unwrap();
        let w = stored("waiting-pr-approved", &entries());
        let view = HistoryView::new(&w, &timeline(&p, &w, t(3_600 + 7_500)));
        assert_eq!(
            view.table(),
            "Workflow:  argo/task-7\n\
             Pipeline:  default\n\
             Stage:     waiting-pr-approved, for 2h 5m\n\
             \n\
             #   FROM                 TO                    AT                     BY                                         STAYED   OVERRIDE\n\
             1   none                 waiting-pr-created    2026-11-26T08:01:00Z   system:serviceaccount:argo:argo-workflow   59m\n\
             2   waiting-pr-created   waiting-pr-approved   2026-11-26T09:00:00Z   alice                                      2h 5m    hotfix\n"
        );
    }

    #[test]
    fn the_json_shape_is_stable_and_notes_a_disagreeing_label() {
        let p = Policy::from_yaml(
            "stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]",
        )
        .unwrap();
        let w = stored("waiting-ready-for-qa", &entries()[..1]);
        let view = HistoryView::new(&w, &timeline(&p, &w, t(120)));
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::json!({
                "namespace": "argo", "name": "task-7", "pipeline": "default",
                "stage": "waiting-ready-for-qa", "inStageSeconds": null,
                "changes": [{"from": null, "to": "waiting-pr-created", "at": "2026-11-26T08:01:00Z",
                             "by": "system:serviceaccount:argo:argo-workflow", "override": null,
                             "stayedSeconds": 60}],
                "historyError": null, "labelDisagrees": true,
            })
        );
        assert!(view.table().ends_with(
            "\nNote: the label says \"waiting-ready-for-qa\" but the history's last entry went to \"waiting-pr-created\"\n"
        ));
        let mut broken = w.clone();
        broken.history = Some("[{]".into());
        let view = HistoryView::new(&broken, &timeline(&p, &broken, t(120)));
        assert!(!view.label_disagrees);
        assert!(
            view.table()
                .contains("No stage changes recorded.\n\nNote: the history does not parse: ")
        );
    }
}
