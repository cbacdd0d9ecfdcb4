//! The stage graph and the stage rows of the decision table (SPEC 3, 4.1).

use std::collections::HashMap;

use super::reason::Reason;

/// Every known stage, the stages a Workflow may enter from "no label", and the legal edges between stages.
#[derive(Debug, Clone)]
pub struct StageGraph {
    stages: Vec<String>,
    index: HashMap<String, usize>,
    entry: Vec<usize>,
    /// `next[i]`: the stages reachable from stage `i` in one step, in configuration order.
    next: Vec<Vec<usize>>,
}

impl StageGraph {
    /// Builds the graph from already validated parts (see `config`): every name used is in `stages`.
    pub fn new(
        stages: Vec<String>,
        entry: &[String],
        transitions: &[(String, Vec<String>)],
    ) -> StageGraph {
        let index: HashMap<String, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        let entry = entry.iter().filter_map(|s| index.get(s).copied()).collect();
        let mut next = vec![Vec::new(); stages.len()];
        for (from, targets) in transitions {
            if let Some(&f) = index.get(from) {
                next[f] = targets
                    .iter()
                    .filter_map(|t| index.get(t).copied())
                    .collect();
            }
        }
        StageGraph {
            stages,
            index,
            entry,
            next,
        }
    }

    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    pub fn is_known(&self, stage: &str) -> bool {
        self.index.contains_key(stage)
    }

    /// Position in `stages` (pipeline order), used to tell a skip from a regression.
    pub fn position(&self, stage: &str) -> Option<usize> {
        self.index.get(stage).copied()
    }

    pub fn entry_stages(&self) -> Vec<&str> {
        self.entry
            .iter()
            .map(|&i| self.stages[i].as_str())
            .collect()
    }

    /// What may follow `from`: the entry stages for "no label", the listed edges for a known stage,
    /// nothing for an unknown one.
    pub fn next_stages(&self, from: Option<&str>) -> Vec<&str> {
        match from {
            None => self.entry_stages(),
            Some(s) => match self.index.get(s) {
                Some(&i) => self.next[i]
                    .iter()
                    .map(|&j| self.stages[j].as_str())
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// `from -> to` is an edge (for `from = ∅`: `to` is an entry stage).
    pub fn is_edge(&self, from: Option<&str>, to: &str) -> bool {
        let Some(&t) = self.index.get(to) else {
            return false;
        };
        match from {
            None => self.entry.contains(&t),
            Some(f) => self
                .index
                .get(f)
                .is_some_and(|&f| self.next[f].contains(&t)),
        }
    }

    /// The stages strictly between two known stages in pipeline order (what a forward jump skips).
    pub fn between(&self, from: Option<&str>, to: &str) -> &[String] {
        let start = from.and_then(|f| self.position(f)).map_or(0, |p| p + 1);
        match self.position(to) {
            Some(end) if end >= start => &self.stages[start..end],
            _ => &[],
        }
    }
}

/// The stage part of one write, as the decision table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageChange<'a> {
    /// `O`: the stage on the stored object (`None`: no label).
    pub from: Option<&'a str>,
    /// `N`: the stage on the incoming object (`None`: no label).
    pub to: Option<&'a str>,
    /// A CREATE of a resubmitted Workflow under `resubmit: keep`.
    pub resubmit_keep_create: bool,
    /// A permitted override was requested.
    pub override_permitted: bool,
}

impl StageGraph {
    /// Rows 3 to 12 of the decision table (SPEC 4.1): the first row that matches decides. The override rows
    /// that come before (not permitted, tampered history) are the caller's, since they need more than stages.
    pub fn judge(&self, c: StageChange<'_>) -> Reason {
        let StageChange { from, to, .. } = c;
        if from == to {
            return Reason::Unchanged;
        }
        if let Some(n) = to {
            if from.is_none() && self.is_edge(None, n) {
                return Reason::Entry;
            }
            if from.is_some() && self.is_edge(from, n) {
                return Reason::Advance;
            }
            if c.resubmit_keep_create && self.is_known(n) {
                return Reason::Resubmit;
            }
        }
        let to_known_or_none = to.is_none_or(|n| self.is_known(n));
        if c.override_permitted && to_known_or_none {
            return Reason::Override;
        }
        let Some(n) = to else {
            // `O` is set here (O = N = ∅ was handled above).
            return if from.is_some_and(|o| self.is_known(o)) {
                Reason::LabelRemoved
            } else {
                Reason::UnknownStage
            };
        };
        if !self.is_known(n) {
            return Reason::UnknownStage;
        }
        match from {
            None => Reason::Skip,
            Some(o) => match (self.position(o), self.position(n)) {
                (None, _) => Reason::UnknownStage,
                (Some(po), Some(pn)) if pn > po => Reason::Skip,
                _ => Reason::Regression,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn chain() -> StageGraph {
        let stages: Vec<String> = [
            "waiting-pr-created",
            "waiting-ready-for-qa",
            "waiting-pr-approved",
        ]
        .map(String::from)
        .to_vec();
        let transitions = stages
            .windows(2)
            .map(|w| (w[0].clone(), vec![w[1].clone()]))
            .collect::<Vec<_>>();
        StageGraph::new(stages.clone(), &stages[..1], &transitions)
    }

    /// implementing -> reviewing -> testing -> merging -> done, with loops back, two entries, `done` final.
    pub(crate) fn graph() -> StageGraph {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        StageGraph::new(
            s(&["implementing", "reviewing", "testing", "merging", "done"]),
            &s(&["implementing", "reviewing"]),
            &[
                ("implementing".into(), s(&["reviewing"])),
                ("reviewing".into(), s(&["testing", "implementing"])),
                ("testing".into(), s(&["merging", "implementing"])),
                ("merging".into(), s(&["done", "testing"])),
            ],
        )
    }

    fn judge(
        g: &StageGraph,
        from: Option<&str>,
        to: Option<&str>,
        keep: bool,
        forced: bool,
    ) -> Reason {
        g.judge(StageChange {
            from,
            to,
            resubmit_keep_create: keep,
            override_permitted: forced,
        })
    }

    const A: Option<&str> = Some("waiting-pr-created");
    const B: Option<&str> = Some("waiting-ready-for-qa");
    const C: Option<&str> = Some("waiting-pr-approved");
    const X: Option<&str> = Some("not-a-stage");
    const Y: Option<&str> = Some("also-not-a-stage");

    #[test]
    fn decision_table_rows_on_the_default_chain() {
        let g = chain();
        type Row<'a> = (Option<&'a str>, Option<&'a str>, bool, bool, Reason);
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // O = N, including both absent and an unknown value left unchanged
            (None, None, false, false, Reason::Unchanged),
            (A, A, false, false, Reason::Unchanged),
            (X, X, false, false, Reason::Unchanged),
            (C, C, false, true, Reason::Unchanged),
            // O = ∅ and N an entry stage
            (None, A, false, false, Reason::Entry),
            // edges
            (A, B, false, false, Reason::Advance),
            (B, C, false, false, Reason::Advance),
            // resubmitted CREATE under keep: any known stage
            (None, C, true, false, Reason::Resubmit),
            (None, X, true, false, Reason::UnknownStage),
            // permitted override: N known or ∅
            (A, C, false, true, Reason::Override),
            (C, A, false, true, Reason::Override),
            (B, None, false, true, Reason::Override),
            (X, A, false, true, Reason::Override),
            (A, X, false, true, Reason::UnknownStage),
            // unknown N
            (A, X, false, false, Reason::UnknownStage),
            (None, X, false, false, Reason::UnknownStage),
            (X, Y, false, false, Reason::UnknownStage),
            // removal
            (B, None, false, false, Reason::LabelRemoved),
            (X, None, false, false, Reason::UnknownStage),
            // O unknown, N known
            (X, A, false, false, Reason::UnknownStage),
            // jumps forward
            (A, C, false, false, Reason::Skip),
            (None, B, false, false, Reason::Skip),
            (None, C, false, false, Reason::Skip),
            // backwards
            (B, A, false, false, Reason::Regression),
            (C, A, false, false, Reason::Regression),
            (C, B, false, false, Reason::Regression),
        ];
        for &(from, to, keep, forced, want) in rows {
            assert_eq!(
                judge(&g, from, to, keep, forced),
                want,
                "{from:?} -> {to:?} keep={keep} forced={forced}"
            );
        }
    }

    #[test]
    fn decision_table_rows_on_a_graph_with_loops() {
        let g = graph();
        let s = Some;
        #[rustfmt::skip]
        let rows: &[(Option<&str>, Option<&str>, Reason)] = &[
            (None, s("implementing"), Reason::Entry),
            (None, s("reviewing"), Reason::Entry),
            (None, s("testing"), Reason::Skip),
            (s("reviewing"), s("implementing"), Reason::Advance), // a listed loop back is legal
            (s("testing"), s("implementing"), Reason::Advance),
            (s("merging"), s("testing"), Reason::Advance),
            (s("merging"), s("done"), Reason::Advance),
            (s("merging"), s("reviewing"), Reason::Regression),    // back, but not listed
            (s("implementing"), s("testing"), Reason::Skip),
            (s("done"), s("implementing"), Reason::Regression),   // final stage: nothing follows
            (s("done"), None, Reason::LabelRemoved),
            (s("testing"), s("qa"), Reason::UnknownStage),
        ];
        for &(from, to, want) in rows {
            assert_eq!(
                judge(&g, from, to, false, false),
                want,
                "{from:?} -> {to:?}"
            );
        }
        assert!(g.next_stages(Some("done")).is_empty());
        assert_eq!(g.next_stages(Some("testing")), ["merging", "implementing"]);
    }

    #[test]
    fn between_lists_what_a_jump_skips() {
        let g = chain();
        assert_eq!(
            g.between(A, "waiting-pr-approved"),
            ["waiting-ready-for-qa"]
        );
        assert_eq!(
            g.between(None, "waiting-pr-approved"),
            ["waiting-pr-created", "waiting-ready-for-qa"]
        );
        assert!(g.between(C, "waiting-pr-created").is_empty());
    }

    #[test]
    fn every_reason_has_a_distinct_code() {
        let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
    }
}
