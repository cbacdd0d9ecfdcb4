//! `stage-guard audit`: what is wrong with the Workflows read, as a table for people or JSON for
//! tools, in one stable shape (README: "audit"):
//!
//! ```json
//! {"checked": 1200,
//!  "counts": {"history-not-a-path": 0, "history-unreadable": 1, "label-disagrees": 0, "stuck": 2, "unknown-stage": 0},
//!  "workflows": [{"namespace": "argo", "name": "task-7", "pipeline": "default", "stage": "waiting-ready-for-qa",
//!                 "findings": [{"kind": "stuck", "message": "at \"waiting-ready-for-qa\" for 3h (stuck after 1h)"}]}]}
//! ```
//!
//! Only Workflows with findings are listed; `counts` has every kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::table;
use crate::core::audit::{Finding, Stored};
use crate::core::plural;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Workflows read.
    pub checked: usize,
    /// Findings of each kind, every kind present.
    pub counts: BTreeMap<&'static str, usize>,
    /// The Workflows with findings, in the order read.
    pub workflows: Vec<AuditedWorkflow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditedWorkflow {
    pub namespace: String,
    pub name: String,
    pub pipeline: Option<String>,
    pub stage: Option<String>,
    pub findings: Vec<FindingView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingView {
    pub kind: &'static str,
    pub message: String,
}

impl Default for AuditReport {
    fn default() -> Self {
        AuditReport {
            checked: 0,
            counts: Finding::KINDS.iter().map(|k| (*k, 0)).collect(),
            workflows: Vec::new(),
        }
    }
}

impl AuditReport {
    /// Counts one Workflow read, and keeps it when it has findings.
    pub fn add(
        &mut self,
        w: &Stored,
        pipeline: Option<&str>,
        stage: Option<&str>,
        findings: &[Finding],
    ) {
        self.checked += 1;
        if findings.is_empty() {
            return;
        }
        for f in findings {
            *self.counts.entry(f.kind()).or_default() += 1;
        }
        self.workflows.push(AuditedWorkflow {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            pipeline: pipeline.map(str::to_owned),
            stage: stage.map(str::to_owned),
            findings: findings
                .iter()
                .map(|f| FindingView {
                    kind: f.kind(),
                    message: f.describe(),
                })
                .collect(),
        });
    }

    pub fn is_clean(&self) -> bool {
        self.workflows.is_empty()
    }

    /// `12 Workflows checked: 3 with findings (stuck: 2, history-unreadable: 1)`.
    pub fn summary(&self) -> String {
        let checked = format!("{} checked", plural(self.checked, "Workflow"));
        if self.is_clean() {
            return format!("{checked}: no findings");
        }
        let kinds: Vec<String> = Finding::KINDS
            .iter()
            .filter_map(|k| {
                let n = self.counts.get(k).copied().unwrap_or(0);
                (n > 0).then(|| format!("{k}: {n}"))
            })
            .collect();
        format!(
            "{checked}: {} with findings ({})",
            self.workflows.len(),
            kinds.join(", ")
        )
    }

    /// For people: a row per finding, then the summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if !self.is_clean() {
            let rows: Vec<Vec<String>> = self
                .workflows
                .iter()
                .flat_map(|w| {
                    w.findings.iter().map(move |f| {
                        vec![
                            w.namespace.clone(),
                            w.name.clone(),
                            w.pipeline.clone().unwrap_or_else(|| "none".into()),
                            w.stage.clone().unwrap_or_else(|| "none".into()),
                            f.kind.to_owned(),
                            f.message.clone(),
                        ]
                    })
                })
                .collect();
            out.push_str(&table::render(
                &[
                    "NAMESPACE",
                    "NAME",
                    "PIPELINE",
                    "STAGE",
                    "FINDING",
                    "DETAIL",
                ],
                &rows,
            ));
            out.push('\n');
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn w(name: &str) -> Stored {
        Stored {
            namespace: "argo".into(),
            name: name.into(),
            ..Stored::default()
        }
    }

    #[test]
    fn a_report_counts_every_workflow_and_lists_the_ones_with_findings() {
        let mut r = AuditReport::default();
        r.add(&w("clean"), Some("default"), Some("a"), &[]);
        assert!(r.is_clean());
        assert_eq!(r.summary(), "1 Workflow checked: no findings");
        assert_eq!(r.table(), "1 Workflow checked: no findings\n");
        r.add(
            &w("bad"),
            Some("default"),
            Some("x"),
            &[
                Finding::UnknownStage { stage: "x".into() },
                Finding::Stuck {
                    stage: "x".into(),
                    for_: Duration::from_secs(7_200),
                    limit: Duration::from_secs(3_600),
                },
            ],
        );
        assert_eq!(r.checked, 2);
        assert_eq!(r.counts["unknown-stage"], 1);
        assert_eq!(r.counts["history-unreadable"], 0);
        assert_eq!(
            r.table(),
            "NAMESPACE   NAME   PIPELINE   STAGE   FINDING         DETAIL\n\
             argo        bad    default    x       unknown-stage   stage \"x\" is not a stage of its pipeline\n\
             argo        bad    default    x       stuck           at \"x\" for 2h (stuck after 1h)\n\
             \n\
             2 Workflows checked: 1 with findings (unknown-stage: 1, stuck: 1)\n"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checked"], 2);
        assert_eq!(json["counts"].as_object().unwrap().len(), 5);
        assert_eq!(json["workflows"][0]["findings"][1]["kind"], "stuck");
    }
}
