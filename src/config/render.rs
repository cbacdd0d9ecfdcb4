//! The effective configuration as YAML (`stage-guard config check`): every key, with the values the
//! embedded default filled in and the graph written out, in the spelling the file accepts. The
//! output is itself a configuration that checks to the same policy.

use std::fmt::Write as _;

use crate::core::{DEFAULT_PIPELINE, Pipeline, Policy, StageGraph, StuckAfter};

/// The policy as a complete configuration file.
pub fn effective_yaml(policy: &Policy) -> String {
    let mut y = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(y, "label: {}", scalar(&policy.label));
    if let Some(default) = policy.default_pipeline() {
        graph(&mut y, "", &default.graph);
        let _ = writeln!(y, "mode: {}", default.mode.as_str());
        stuck_after(&mut y, "", &default.stuck_after);
    }
    y.push_str("history:\n");
    let _ = writeln!(y, "  annotation: {}", scalar(&policy.history.annotation));
    let _ = writeln!(y, "  limit: {}", policy.history.limit);
    let _ = writeln!(y, "  required: {}", policy.history.required);
    y.push_str("override:\n");
    let _ = writeln!(y, "  annotation: {}", scalar(&policy.override_.annotation));
    let _ = writeln!(y, "  users: {}", list(&policy.override_.users));
    let _ = writeln!(y, "  groups: {}", list(&policy.override_.groups));
    let _ = writeln!(y, "resubmit: {}", policy.resubmit.as_str());
    let named: Vec<&Pipeline> = policy
        .pipelines
        .iter()
        .filter(|p| p.name != DEFAULT_PIPELINE)
        .collect();
    if !named.is_empty() {
        y.push_str("pipelines:                     # the first that matches decides\n");
        for p in named {
            let _ = writeln!(y, "  - name: {}", scalar(&p.name));
            y.push_str("    match:\n");
            if !p.selector.labels.is_empty() {
                y.push_str("      labels:\n");
                for (key, value) in &p.selector.labels {
                    let _ = writeln!(y, "        {}: {}", scalar(key), scalar(value));
                }
            }
            if let Some(namespaces) = &p.selector.namespaces {
                let _ = writeln!(y, "      namespaces: {}", list(namespaces));
            }
            graph(&mut y, "    ", &p.graph);
            let _ = writeln!(y, "    mode: {}", p.mode.as_str());
            stuck_after(&mut y, "    ", &p.stuck_after);
        }
    }
    y
}

/// `stuck_after`, when set: the map form, which says everything.
fn stuck_after(y: &mut String, indent: &str, s: &StuckAfter) {
    if s.all.is_none() && s.stages.is_empty() {
        return;
    }
    let _ = writeln!(y, "{indent}stuck_after:");
    for (stage, d) in &s.stages {
        let _ = writeln!(
            y,
            "{indent}  {}: {}",
            scalar(stage),
            humantime::format_duration(*d)
        );
    }
    if let Some(d) = s.all {
        let _ = writeln!(y, "{indent}  '*': {}", humantime::format_duration(d));
    }
}

/// `stages`, `entry` and `transitions` of one graph, indented by `indent`.
fn graph(y: &mut String, indent: &str, graph: &StageGraph) {
    let _ = writeln!(y, "{indent}stages:");
    for stage in graph.stages() {
        let _ = writeln!(y, "{indent}  - {}", scalar(stage));
    }
    let _ = writeln!(y, "{indent}entry: {}", list(&graph.entry_stages()));
    let edges: Vec<(&String, Vec<&str>)> = graph
        .stages()
        .iter()
        .map(|s| (s, graph.next_stages(Some(s))))
        .filter(|(_, next)| !next.is_empty())
        .collect();
    if edges.is_empty() {
        let _ = writeln!(y, "{indent}transitions: {{}}");
    } else {
        let _ = writeln!(
            y,
            "{indent}transitions:                 # stages not listed here are final"
        );
        for (from, next) in edges {
            let _ = writeln!(y, "{indent}  {}: {}", scalar(from), list(&next));
        }
    }
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| scalar(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A string as a YAML scalar: plain when YAML reads it back as that same string, else in double
/// quotes (JSON's escapes are YAML's).
fn scalar(s: &str) -> String {
    // Words YAML reads as booleans or null, in either YAML version.
    const SPECIAL: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "",
    ];
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
        && !s.ends_with(':')
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CONFIG_YAML;

    #[test]
    fn the_default_in_full_in_the_file_s_own_spelling() {
        let yaml = effective_yaml(&Policy::default_policy());
        assert_eq!(
            yaml,
            "label: current-stage\n\
             stages:\n  - waiting-pr-created\n  - waiting-ready-for-qa\n  - waiting-pr-approved\n\
             entry: [waiting-pr-created]\n\
             transitions:                 # stages not listed here are final\n\
             \x20 waiting-pr-created: [waiting-ready-for-qa]\n\
             \x20 waiting-ready-for-qa: [waiting-pr-approved]\n\
             mode: enforce\n\
             history:\n  annotation: stage-guard.io/history\n  limit: 50\n  required: true\n\
             override:\n  annotation: stage-guard.io/override-reason\n  users: []\n  groups: [system:masters]\n\
             resubmit: reset\n"
        );
        assert!(!DEFAULT_CONFIG_YAML.is_empty());
    }

    #[test]
    fn the_output_checks_to_the_same_policy() {
        for yaml in [
            "stages: [implementing, reviewing, testing, merging, done]\n\
             entry: [implementing, reviewing]\n\
             transitions:\n  implementing: [reviewing]\n  reviewing: [testing, implementing]\n  \
             testing: [merging, implementing]\n  merging: [done, testing]\n\
             mode: warn\nresubmit: keep\nhistory:\n  limit: 7\n  required: false\n",
            // Names YAML would otherwise read as numbers, booleans or null, and users of any shape.
            "stages: ['1', 'true', 'null', 'on', 'N', 'a_b.c', '1e3']\n\
             override:\n  users: ['a: b', '#x', 'ünï', 'q\"uote', ' lead', 'system:serviceaccount:argo:bot']\n  groups: []\n",
            "stages: [only]\n",
            "pipelines:\n  - name: qa\n    match:\n      labels: {tmpl: qa, 'example.com/team': '7'}\n      namespaces: [argo, ci]\n    stages: [a, b]\n    mode: warn\n  - name: docs\n    match: {namespaces: [docs]}\n    stages: [draft, published]\n",
            "stages: [x, y]\nstuck_after: 1day 2h\npipelines:\n  - name: p1\n    match: {labels: {k: v}}\n    stages: [s1, s2, s3]\n    transitions: {s1: [s2, s3], s3: [s1]}\n    stuck_after: {s1: 30m, '*': 4h}\n",
        ] {
            let first = Policy::from_yaml(yaml).unwrap();
            let printed = effective_yaml(&first);
            let again = Policy::from_yaml(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            assert_eq!(effective_yaml(&again), printed);
            let shape = |p: &Policy| {
                p.pipelines
                    .iter()
                    .map(|q| {
                        (
                            q.name.clone(),
                            q.selector.clone(),
                            q.graph.stages().to_vec(),
                            q.graph.entry_stages().join(","),
                            q.mode,
                            q.stuck_after.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(shape(&again), shape(&first));
            assert_eq!(again.override_, first.override_);
            assert_eq!(again.history, first.history);
            assert_eq!(again.resubmit, first.resubmit);
        }
    }
}
