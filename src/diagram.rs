//! `stage-guard graph`: each pipeline's stage graph for READMEs and reviews, as text, Mermaid or
//! Graphviz DOT. Entry stages, final stages (no way out) and loops are marked: a loop edge goes back
//! to a stage listed earlier in `stages` and closes a cycle (the stage it leaves can be reached again).

use std::fmt::Write as _;

use crate::core::{Pipeline, StageGraph};

/// The output formats of `stage-guard graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Mermaid,
    Dot,
}

/// One edge and whether it closes a loop.
struct Edge<'g> {
    from: usize,
    to: usize,
    from_name: &'g str,
    to_name: &'g str,
    loop_back: bool,
}

fn index(graph: &StageGraph, stage: &str) -> usize {
    graph.position(stage).unwrap_or_default()
}

/// `to` reaches `from` again: the edge `from -> to` closes a loop.
fn reaches(graph: &StageGraph, start: &str, goal: &str) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    let mut todo = vec![start];
    while let Some(s) = todo.pop() {
        if s == goal {
            return true;
        }
        if seen.contains(&s) {
            continue;
        }
        seen.push(s);
        todo.extend(graph.next_stages(Some(s)));
    }
    false
}

fn edges(graph: &StageGraph) -> Vec<Edge<'_>> {
    graph
        .stages()
        .iter()
        .flat_map(|from| {
            graph
                .next_stages(Some(from))
                .into_iter()
                .map(move |to| Edge {
                    from: index(graph, from),
                    to: index(graph, to),
                    from_name: from.as_str(),
                    to_name: to,
                    loop_back: index(graph, to) <= index(graph, from) && reaches(graph, to, from),
                })
        })
        .collect()
}

fn is_final(graph: &StageGraph, stage: &str) -> bool {
    graph.next_stages(Some(stage)).is_empty()
}

/// The drawing of `pipelines` in `format`.
pub fn draw(pipelines: &[&Pipeline], format: Format) -> String {
    match format {
        Format::Text => text(pipelines),
        Format::Mermaid => mermaid(pipelines),
        Format::Dot => dot(pipelines),
    }
}

fn text(pipelines: &[&Pipeline]) -> String {
    let mut out = String::new();
    for (n, p) in pipelines.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let g = &p.graph;
        // Writing into a String cannot fail.
        let _ = writeln!(out, "pipeline {} (mode {})", p.name, p.mode.as_str());
        let _ = writeln!(out, "  entry: {}", g.entry_stages().join(", "));
        for e in edges(g) {
            let mark = if e.loop_back { "   (loop)" } else { "" };
            let _ = writeln!(out, "  {} -> {}{mark}", e.from_name, e.to_name);
        }
        let finals: Vec<&str> = g
            .stages()
            .iter()
            .map(String::as_str)
            .filter(|s| is_final(g, s))
            .collect();
        let _ = writeln!(
            out,
            "  final: {}",
            if finals.is_empty() {
                "none".to_owned()
            } else {
                finals.join(", ")
            }
        );
    }
    out
}

/// Mermaid ids must be plain words: pipeline and stage positions, with the names as labels.
fn mermaid(pipelines: &[&Pipeline]) -> String {
    let mut out = String::from("flowchart LR\n");
    for (n, p) in pipelines.iter().enumerate() {
        let g = &p.graph;
        let id = |i: usize| format!("p{n}s{i}");
        let _ = writeln!(
            out,
            "  subgraph p{n}[\"{} ({})\"]",
            escape_mermaid(&p.name),
            p.mode.as_str()
        );
        let _ = writeln!(out, "    p{n}start(( ))");
        for (i, stage) in g.stages().iter().enumerate() {
            // A final stage gets a double border.
            let (open, close) = if is_final(g, stage) {
                ("[[", "]]")
            } else {
                ("[", "]")
            };
            let _ = writeln!(
                out,
                "    {}{open}\"{}\"{close}",
                id(i),
                escape_mermaid(stage)
            );
        }
        for entry in g.entry_stages() {
            let _ = writeln!(out, "    p{n}start --> {}", id(index(g, entry)));
        }
        for e in edges(g) {
            let arrow = if e.loop_back { "-. loop .->" } else { "-->" };
            let _ = writeln!(out, "    {} {arrow} {}", id(e.from), id(e.to));
        }
        out.push_str("  end\n");
    }
    out
}

fn escape_mermaid(s: &str) -> String {
    s.replace('"', "#quot;")
}

fn dot(pipelines: &[&Pipeline]) -> String {
    let mut out = String::from("digraph stages {\n  rankdir=LR;\n  node [shape=box];\n");
    for (n, p) in pipelines.iter().enumerate() {
        let g = &p.graph;
        let id = |i: usize| format!("\"p{n}s{i}\"");
        let _ = writeln!(out, "  subgraph cluster_p{n} {{");
        let _ = writeln!(
            out,
            "    label={};",
            quote_dot(&format!("{} ({})", p.name, p.mode.as_str()))
        );
        let _ = writeln!(out, "    \"p{n}start\" [shape=point];");
        for (i, stage) in g.stages().iter().enumerate() {
            let peripheries = if is_final(g, stage) {
                ", peripheries=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label={}{peripheries}];",
                id(i),
                quote_dot(stage)
            );
        }
        for entry in g.entry_stages() {
            let _ = writeln!(out, "    \"p{n}start\" -> {};", id(index(g, entry)));
        }
        for e in edges(g) {
            let style = if e.loop_back {
                " [style=dashed, label=\"loop\"]"
            } else {
                ""
            };
            let _ = writeln!(out, "    {} -> {}{style};", id(e.from), id(e.to));
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

fn quote_dot(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Policy;

    const LOOPS: &str = "stages: [implementing, reviewing, testing, merging, done]\n\
        entry: [implementing, reviewing]\n\
        transitions:\n  implementing: [reviewing]\n  reviewing: [testing, implementing]\n  \
        testing: [merging, implementing]\n  merging: [done, testing]\n";

    #[test]
    fn text_marks_entries_loops_and_finals() {
        let p = Policy::from_yaml(LOOPS).unwrap();
        let all: Vec<&Pipeline> = p.pipelines.iter().collect();
        assert_eq!(
            draw(&all, Format::Text),
            "pipeline default (mode enforce)\n  entry: implementing, reviewing\n  \
             implementing -> reviewing\n  reviewing -> testing\n  \
             reviewing -> implementing   (loop)\n  testing -> merging\n  \
             testing -> implementing   (loop)\n  merging -> done\n  merging -> testing   (loop)\n  \
             final: done\n"
        );
        let chain = Policy::default_policy();
        let all: Vec<&Pipeline> = chain.pipelines.iter().collect();
        let text = draw(&all, Format::Text);
        assert!(!text.contains("(loop)"), "{text}");
        assert!(text.ends_with("  final: waiting-pr-approved\n"), "{text}");
    }

    #[test]
    fn mermaid_and_dot_name_every_stage_and_edge_once() {
        let p = Policy::from_yaml(LOOPS).unwrap();
        let all: Vec<&Pipeline> = p.pipelines.iter().collect();
        let m = draw(&all, Format::Mermaid);
        assert!(m.starts_with("flowchart LR\n"), "{m}");
        assert!(m.contains("p0s4[[\"done\"]]"), "{m}");
        assert_eq!(m.matches(" -. loop .-> ").count(), 3, "{m}");
        assert_eq!(m.matches("p0start --> ").count(), 2, "{m}");
        let d = draw(&all, Format::Dot);
        assert!(
            d.contains("\"p0s4\" [label=\"done\", peripheries=2];"),
            "{d}"
        );
        assert_eq!(d.matches("style=dashed").count(), 3, "{d}");
        assert!(d.trim_end().ends_with('}'));
    }
}
