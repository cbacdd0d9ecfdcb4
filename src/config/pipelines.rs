//! `pipelines:`: each entry into a [`Pipeline`] (its selector, graph, mode and `stuck_after`), and the
//! checks across them (unique names, none hidden behind an earlier one).

use super::*;

/// A namespace name: a DNS label.
fn is_valid_namespace(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl RawPipeline {
    /// The `i`th pipeline; `mode` is the top-level mode, which a pipeline without its own takes.
    pub(super) fn validate(self, i: usize, mode: Mode) -> Result<Pipeline, Problem> {
        let prefix = format!("pipelines[{i}].");
        let name = self.name.value;
        if !is_valid_label_value(&name) {
            return Err(Problem::at(
                format!("{prefix}name"),
                self.name.referenced,
                format!(
                    "{name:?} is not a valid name (a label value: at most 63 characters, [A-Za-z0-9] at both ends, [-A-Za-z0-9_.] inside)"
                ),
            ));
        }
        if name == DEFAULT_PIPELINE {
            return Err(Problem::at(
                format!("{prefix}name"),
                self.name.referenced,
                "\"default\" is the name of the top-level graph; choose another",
            ));
        }
        let Some(raw_match) = self.match_ else {
            return Err(Problem::new(
                format!("{prefix}match"),
                "missing: say which Workflows the pipeline takes (labels, namespaces)",
            ));
        };
        let location = raw_match.referenced;
        let raw_match = raw_match.value;
        let mut labels = Vec::new();
        for (key, value) in raw_match.labels.into_iter().flatten() {
            if !is_valid_qualified_key(&key) {
                return Err(Problem::at(
                    format!("{prefix}match.labels"),
                    location,
                    format!("{key:?} is not a valid label key"),
                ));
            }
            if !value.is_empty() && !is_valid_label_value(&value) {
                return Err(Problem::at(
                    format!("{prefix}match.labels.{key}"),
                    location,
                    format!("{value:?} is not a valid label value"),
                ));
            }
            labels.push((key, value));
        }
        let namespaces = match raw_match.namespaces {
            Some(list) => {
                if list.is_empty() {
                    return Err(Problem::at(
                        format!("{prefix}match.namespaces"),
                        location,
                        "an empty list matches nothing; leave the key out to match every namespace",
                    ));
                }
                if let Some((j, bad)) = list
                    .iter()
                    .enumerate()
                    .find(|(_, n)| !is_valid_namespace(n))
                {
                    return Err(Problem::at(
                        format!("{prefix}match.namespaces[{j}]"),
                        location,
                        format!("{bad:?} is not a namespace name"),
                    ));
                }
                Some(list)
            }
            None => None,
        };
        if labels.is_empty() && namespaces.is_none() {
            return Err(Problem::at(
                format!("{prefix}match"),
                location,
                "matches every Workflow; that is what the top-level stages (the default pipeline) are for",
            ));
        }
        let Some(stages) = self.stages else {
            return Err(Problem::new(
                format!("{prefix}stages"),
                "missing: every pipeline lists its own stages",
            ));
        };
        let graph = stage_graph::build(&prefix, stages, self.entry, self.transitions)?;
        Ok(Pipeline {
            stuck_after: stage_graph::stuck_after(
                &format!("{prefix}stuck_after"),
                self.stuck_after,
                &graph,
            )?,
            graph,
            name,
            selector: Selector { labels, namespaces },
            mode: self.mode.unwrap_or(mode),
        })
    }
}

/// Names are unique, and no pipeline is hidden behind an earlier one that takes every object it
/// would (the first that matches decides, so it could never match).
pub(super) fn check_pipelines(pipelines: &[Pipeline]) -> Result<(), Problem> {
    for (j, later) in pipelines.iter().enumerate() {
        for (i, earlier) in pipelines[..j].iter().enumerate() {
            if earlier.name == later.name {
                return Err(Problem::new(
                    format!("pipelines[{j}].name"),
                    format!("{:?} is the name of pipelines[{i}] too", later.name),
                ));
            }
            if earlier.selector.covers(&later.selector) {
                return Err(Problem::new(
                    format!("pipelines[{j}].match"),
                    format!(
                        "never matches: pipelines[{i}] ({:?}) comes first and takes every Workflow this one would",
                        earlier.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
