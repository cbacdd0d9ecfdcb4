//! A pipeline's stage graph and its `stuck_after` from the file's keys, each problem naming its key
//! (`stages[2]`, `pipelines[1].transitions.qa[0]`).

use super::*;

/// A stage graph from its keys; `prefix` (`""` or `pipelines[1].`) goes in front of every key an
/// error names.
pub(super) fn build(
    prefix: &str,
    stages: Vec<Name>,
    entry: Option<Vec<Name>>,
    transitions: Option<RawTransitions>,
) -> Result<StageGraph, Problem> {
    if stages.is_empty() {
        return Err(Problem::new(
            format!("{prefix}stages"),
            "must list at least one stage",
        ));
    }
    let mut seen = HashSet::new();
    for (i, s) in stages.iter().enumerate() {
        let key = format!("{prefix}stages[{i}]");
        if s.value.is_empty() {
            return Err(Problem::at(key, s.referenced, "stage name is empty"));
        }
        if !is_valid_label_value(&s.value) {
            return Err(Problem::at(
                key,
                s.referenced,
                format!(
                    "{:?} is not a valid label value (at most 63 characters, [A-Za-z0-9] at both ends, [-A-Za-z0-9_.] inside)",
                    s.value
                ),
            ));
        }
        if !seen.insert(s.value.as_str()) {
            return Err(Problem::at(
                key,
                s.referenced,
                format!("duplicate stage {:?}", s.value),
            ));
        }
    }
    let names: Vec<&str> = stages.iter().map(|s| s.value.as_str()).collect();
    let known = |key: &str, s: &str, location: Location| -> Result<(), Problem> {
        if seen.contains(s) {
            return Ok(());
        }
        let hint = match suggest::closest(s, names.iter().copied()) {
            Some(near) => format!("; did you mean {near:?}?"),
            None => format!(" (known: {})", names.join(", ")),
        };
        Err(Problem::at(
            key,
            location,
            format!("unknown stage {s:?}{hint}"),
        ))
    };

    let entry: Vec<String> = match entry {
        Some(entry) => {
            if entry.is_empty() {
                return Err(Problem::new(
                    format!("{prefix}entry"),
                    "must name at least one stage",
                ));
            }
            let mut dup = HashSet::new();
            for (i, s) in entry.iter().enumerate() {
                let key = format!("{prefix}entry[{i}]");
                known(&key, &s.value, s.referenced)?;
                if !dup.insert(s.value.as_str()) {
                    return Err(Problem::at(
                        key,
                        s.referenced,
                        format!("duplicate entry stage {:?}", s.value),
                    ));
                }
            }
            entry.into_iter().map(|s| s.value).collect()
        }
        None => vec![names[0].to_owned()],
    };

    let transitions: Vec<(String, Vec<String>)> = match transitions {
        Some(map) => {
            for (from, targets) in &map {
                known(
                    &format!("{prefix}transitions.{from}"),
                    from,
                    targets.referenced,
                )?;
                let mut dup = HashSet::new();
                for (i, to) in targets.value.iter().enumerate() {
                    let key = format!("{prefix}transitions.{from}[{i}]");
                    known(&key, &to.value, to.referenced)?;
                    if to.value == *from {
                        return Err(Problem::at(
                            key,
                            to.referenced,
                            format!(
                                "{from:?} -> {:?} is not a change; a stage cannot lead to itself",
                                to.value
                            ),
                        ));
                    }
                    if !dup.insert(to.value.as_str()) {
                        return Err(Problem::at(
                            key,
                            to.referenced,
                            format!("duplicate edge {from:?} -> {:?}", to.value),
                        ));
                    }
                }
            }
            map.into_iter()
                .map(|(from, targets)| (from, targets.value.into_iter().map(|t| t.value).collect()))
                .collect()
        }
        None => names
            .windows(2)
            .map(|w| (w[0].to_owned(), vec![w[1].to_owned()]))
            .collect(),
    };
    let stages = stages.into_iter().map(|s| s.value).collect();
    Ok(StageGraph::new(stages, &entry, &transitions))
}

/// `stuck_after` of one pipeline: durations like `24h`, `90m`, `2d 4h`; stages it names must be its own.
pub(super) fn stuck_after(
    key: &str,
    raw: Option<RawStuck>,
    graph: &StageGraph,
) -> Result<StuckAfter, Problem> {
    let duration = |key: &str, text: &str| -> Result<std::time::Duration, Problem> {
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(Problem::new(key, "must be longer than zero")),
            Err(e) => Err(Problem::new(
                key,
                format!("{text:?} is not a duration ({e}); write e.g. 24h, 90m, 2d"),
            )),
        }
    };
    let mut out = StuckAfter::default();
    match raw {
        None => {}
        Some(RawStuck::All(text)) => out.all = Some(duration(key, &text)?),
        Some(RawStuck::PerStage(map)) => {
            for (stage, text) in map {
                let entry_key = format!("{key}.{stage}");
                let d = duration(&entry_key, &text)?;
                if stage == "*" {
                    out.all = Some(d);
                } else if graph.is_known(&stage) {
                    out.stages.push((stage, d));
                } else {
                    let names = graph.stages().iter().map(String::as_str);
                    let hint = suggest::closest(&stage, names)
                        .map_or(String::new(), |near| format!("; did you mean {near:?}?"));
                    return Err(Problem::new(
                        entry_key,
                        format!("unknown stage {stage:?}{hint} ('*' stands for every other stage)"),
                    ));
                }
            }
        }
    }
    Ok(out)
}
