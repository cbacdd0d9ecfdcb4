//! `stage-guard audit` over a planted set: Workflows made inconsistent while no webhook judged them
//! (an unknown stage, an unreadable history, a history that is no path of the graph, a label that
//! disagrees with the history, one stuck past `stuck_after`) beside clean ones, in two pipelines and
//! two namespaces. The audit must report exactly the planted findings, page by page.

use super::*;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use stage_guard_testenv::{ADMIN, ALICE};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Two pipelines: the default one, stuck after an hour in QA; and a loop chosen by template label.
const CONFIG: &str = "label: current-stage
stages: [waiting-pr-created, waiting-ready-for-qa, waiting-pr-approved]
stuck_after:
  waiting-ready-for-qa: 1h
pipelines:
  - name: qa-loop
    match:
      labels:
        workflows.argoproj.io/workflow-template: qa-loop
    stages: [implementing, testing, done]
    transitions:
      implementing: [testing]
      testing: [done, implementing]
";

const TEMPLATE: &str = "workflows.argoproj.io/workflow-template";

/// `at` of an entry `secs` ago.
fn ago(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(secs)).to_string()
}

/// One history entry: `(from, to, seconds ago, override reason)`.
fn entry(from: Option<&str>, to: &str, secs_ago: u64, reason: Option<&str>) -> Value {
    let mut e = json!({"from": from, "to": to, "at": ago(secs_ago), "by": "planter"});
    if let Some(r) = reason {
        e["override"] = json!(r);
    }
    e
}

struct Planted {
    name: &'static str,
    stage: Option<&'static str>,
    template: Option<&'static str>,
    history: Option<String>,
    /// The finding kinds the audit must report, in its order.
    expect: &'static [&'static str],
}

fn path(entries: &[Value]) -> Option<String> {
    Some(Value::Array(entries.to_vec()).to_string())
}

fn planted_here() -> Vec<Planted> {
    vec![
        Planted {
            name: "unknown-stage",
            stage: Some("deploying"),
            template: None,
            // A forced change is a legal step, so only the stage is wrong.
            history: path(&[
                entry(None, PR_CREATED, 600, None),
                entry(Some(PR_CREATED), "deploying", 300, Some("moved by hand")),
            ]),
            expect: &["unknown-stage"],
        },
        Planted {
            name: "unreadable-history",
            stage: Some(PR_CREATED),
            template: None,
            history: Some("{not json".into()),
            expect: &["history-unreadable"],
        },
        Planted {
            name: "not-a-path",
            stage: Some(PR_APPROVED),
            template: None,
            history: path(&[
                entry(None, PR_CREATED, 1_200, None),
                entry(Some(PR_CREATED), PR_APPROVED, 600, None),
            ]),
            expect: &["history-not-a-path"],
        },
        Planted {
            name: "label-disagrees",
            stage: Some(READY_FOR_QA),
            template: None,
            history: path(&[entry(None, PR_CREATED, 600, None)]),
            expect: &["label-disagrees"],
        },
        Planted {
            name: "stuck",
            stage: Some(READY_FOR_QA),
            template: None,
            history: path(&[
                entry(None, PR_CREATED, 3 * 3_600, None),
                entry(Some(PR_CREATED), READY_FOR_QA, 2 * 3_600, None),
            ]),
            expect: &["stuck"],
        },
        Planted {
            name: "qa-unknown",
            stage: Some(PR_CREATED),
            template: Some("qa-loop"),
            // A default-pipeline stage is unknown to the qa-loop pipeline.
            history: path(&[
                entry(None, "implementing", 600, None),
                entry(
                    Some("implementing"),
                    PR_CREATED,
                    300,
                    Some("wrong pipeline"),
                ),
            ]),
            expect: &["unknown-stage"],
        },
        // Clean ones.
        Planted {
            name: "fresh",
            stage: Some(PR_CREATED),
            template: None,
            history: path(&[entry(None, PR_CREATED, 60, None)]),
            expect: &[],
        },
        Planted {
            name: "in-qa",
            stage: Some(READY_FOR_QA),
            template: None,
            history: path(&[
                entry(None, PR_CREATED, 1_800, None),
                entry(Some(PR_CREATED), READY_FOR_QA, 600, None),
            ]),
            expect: &[],
        },
        Planted {
            name: "done-long-ago",
            stage: Some(PR_APPROVED),
            template: None,
            history: path(&[
                entry(None, PR_CREATED, 3 * 86_400, None),
                entry(Some(PR_CREATED), READY_FOR_QA, 3 * 86_400 - 60, None),
                entry(Some(READY_FOR_QA), PR_APPROVED, 3 * 86_400 - 120, None),
            ]),
            expect: &[],
        },
        Planted {
            name: "forced",
            stage: Some(PR_APPROVED),
            template: None,
            history: path(&[
                entry(None, PR_CREATED, 600, None),
                entry(Some(PR_CREATED), PR_APPROVED, 300, Some("hotfix")),
            ]),
            expect: &[],
        },
        Planted {
            name: "unlabelled",
            stage: None,
            template: None,
            history: None,
            expect: &[],
        },
        Planted {
            name: "qa-loop-clean",
            stage: Some("implementing"),
            template: Some("qa-loop"),
            // Back from testing is an edge of this pipeline (and "implementing" unknown to the default).
            history: path(&[
                entry(None, "implementing", 900, None),
                entry(Some("implementing"), "testing", 600, None),
                entry(Some("testing"), "implementing", 300, None),
            ]),
            expect: &[],
        },
    ]
}

fn planted_elsewhere() -> Vec<Planted> {
    vec![
        Planted {
            name: "elsewhere-stuck",
            stage: Some(READY_FOR_QA),
            template: None,
            history: path(&[
                entry(None, PR_CREATED, 6 * 3_600, None),
                entry(Some(PR_CREATED), READY_FOR_QA, 5 * 3_600, None),
            ]),
            expect: &["stuck"],
        },
        Planted {
            name: "elsewhere-clean",
            stage: Some(PR_CREATED),
            template: None,
            history: path(&[entry(None, PR_CREATED, 60, None)]),
            expect: &[],
        },
    ]
}

/// Creates `planted` in `namespace` as the admin (no webhook is registered: nothing judges them),
/// each labelled with the run's id and whether it is clean.
fn plant(t: &Install, namespace: &str, run: &str, planted: &[Planted]) -> Result<()> {
    let mut items = Vec::new();
    for p in planted {
        let mut labels = vec![
            ("steer-audit-run", run),
            (
                "steer-audit",
                if p.expect.is_empty() {
                    "clean"
                } else {
                    "planted"
                },
            ),
        ];
        if let Some(stage) = p.stage {
            labels.push((STAGE_LABEL, stage));
        }
        if let Some(template) = p.template {
            labels.push((TEMPLATE, template));
        }
        let annotations: Vec<(&str, &str)> = p
            .history
            .as_deref()
            .map(|h| vec![(HISTORY, h)])
            .unwrap_or_default();
        items.push(workflow(p.name, &labels, &annotations));
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    t.cp.kubectl(ADMIN)?
        .args(["-n", namespace, "create", "-f", "-"])
        .stdin(list.to_string())
        .ok()?;
    Ok(())
}

/// `(namespace, name) -> finding kinds` of an audit's JSON.
fn found(report: &Value) -> Result<BTreeMap<(String, String), Vec<String>>> {
    let mut out = BTreeMap::new();
    for w in report["workflows"].as_array().context("workflows")? {
        let kinds = w["findings"]
            .as_array()
            .context("findings")?
            .iter()
            .map(|f| f["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        out.insert(
            (
                w["namespace"].as_str().unwrap_or_default().to_owned(),
                w["name"].as_str().unwrap_or_default().to_owned(),
            ),
            kinds,
        );
    }
    Ok(out)
}

fn expected(namespace: &str, planted: &[Planted]) -> BTreeMap<(String, String), Vec<String>> {
    planted
        .iter()
        .filter(|p| !p.expect.is_empty())
        .map(|p| {
            (
                (namespace.to_owned(), p.name.to_owned()),
                p.expect.iter().map(|k| k.to_string()).collect(),
            )
        })
        .collect()
}

fn audit_json(out: &CliOutput) -> Result<Value> {
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("audit -o json printed {}", out.stdout))
}

pub fn audit_finds_exactly_the_planted_inconsistencies(suite: &Suite) -> Result<()> {
    // stage-guard runs but is not registered: the planted Workflows are created unjudged.
    let t = suite.install(
        "steer-audit",
        Setup {
            config: Some(CONFIG.into()),
            register: false,
            ..Setup::default()
        },
    )?;
    let config = ConfigFile::new(CONFIG)?;
    let elsewhere = suite.fresh_namespace("steer-audit-elsewhere")?;
    let run = t.ns.clone();
    let (here, there) = (planted_here(), planted_elsewhere());
    plant(&t, &t.ns, &run, &here)?;
    plant(&t, &elsewhere, &run, &there)?;

    // One namespace: exactly its planted findings, every Workflow counted; exit 1.
    let out = sg(&t, ALICE, &config, &["audit", "-o", "json"])?.run()?;
    expect_exit(&out, 1)?;
    let report = audit_json(&out)?;
    ensure!(
        found(&report)? == expected(&t.ns, &here),
        "audit -n {} found {:?}",
        t.ns,
        found(&report)?
    );
    ensure!(
        report["checked"] == here.len(),
        "checked {}",
        report["checked"]
    );
    ensure!(
        report["counts"]
            == json!({"unknown-stage": 2, "history-unreadable": 1, "history-not-a-path": 1,
                      "label-disagrees": 1, "stuck": 1}),
        "counts {}",
        report["counts"]
    );

    // Every namespace, narrowed to this run by a label selector: both namespaces' findings.
    let selector = format!("steer-audit-run={run}");
    let out = sg(
        &t,
        ALICE,
        &config,
        &["audit", "-A", "-l", &selector, "-o", "json"],
    )?
    .run()?;
    expect_exit(&out, 1)?;
    let report = audit_json(&out)?;
    let mut want = expected(&t.ns, &here);
    want.extend(expected(&elsewhere, &there));
    ensure!(
        found(&report)? == want,
        "audit -A found {:?}",
        found(&report)?
    );
    ensure!(report["checked"] == here.len() + there.len());

    // Page by page: two Workflows a request gives the same findings, in as many list requests.
    let out = sg(
        &t,
        ALICE,
        &config,
        &["audit", "-o", "json", "--chunk-size", "2"],
    )?
    .run()?;
    expect_exit(&out, 1)?;
    let paged = audit_json(&out)?;
    ensure!(found(&paged)? == expected(&t.ns, &here) && paged["checked"] == here.len());
    let pages: Vec<String> = t
        .audit_events()?
        .into_iter()
        .filter(|e| e["verb"] == "list" && e["stage"] == "ResponseComplete")
        .filter_map(|e| e["requestURI"].as_str().map(str::to_owned))
        .filter(|uri| uri.contains("limit=2"))
        .collect();
    ensure!(
        pages.len() == here.len() / 2 && pages.iter().skip(1).all(|u| u.contains("continue=")),
        "list requests with limit=2: {pages:?}"
    );

    // Only clean ones: exit 0 and the summary alone.
    let clean = format!("{selector},steer-audit=clean");
    let out = sg(&t, ALICE, &config, &["audit", "-A", "-l", &clean])?.run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout == "7 Workflows checked: no findings\n",
        "audit of the clean ones printed:\n{}",
        out.stdout
    );

    // The table: a row per finding, then the summary.
    let out = sg(&t, ALICE, &config, &["audit"])?.run()?;
    expect_exit(&out, 1)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines
            .first()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == [
                    "NAMESPACE",
                    "NAME",
                    "PIPELINE",
                    "STAGE",
                    "FINDING",
                    "DETAIL"
                ]),
        "table:\n{}",
        out.stdout
    );
    for (_, name) in expected(&t.ns, &here).keys() {
        ensure!(
            lines
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(name.as_str())),
            "no row for {name}:\n{}",
            out.stdout
        );
    }
    ensure!(
        lines.last()
            == Some(
                &"12 Workflows checked: 6 with findings (unknown-stage: 2, history-unreadable: 1, history-not-a-path: 1, label-disagrees: 1, stuck: 1)"
            ),
        "summary: {:?}",
        lines.last()
    );
    let stuck_row = lines
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some("stuck"))
        .context("stuck row")?;
    ensure!(
        stuck_row.ends_with("at \"waiting-ready-for-qa\" for 2h (stuck after 1h)"),
        "{stuck_row}"
    );

    // history reads the same planted Workflows: the notes say what audit found.
    let out = sg(&t, ALICE, &config, &["history", "label-disagrees"])?.run()?;
    expect_exit(&out, 0)?;
    ensure!(
        out.stdout.ends_with(&format!(
            "\nNote: the label says \"{READY_FOR_QA}\" but the history's last entry went to \"{PR_CREATED}\"\n"
        )),
        "history of label-disagrees:\n{}",
        out.stdout
    );
    let out = sg(
        &t,
        ALICE,
        &config,
        &["history", "unreadable-history", "-o", "json"],
    )?
    .run()?;
    expect_exit(&out, 0)?;
    let view: Value = serde_json::from_str(&out.stdout)?;
    ensure!(
        view["historyError"]
            .as_str()
            .is_some_and(|e| e.starts_with("not a JSON array of stage-history entries"))
            && view["changes"] == json!([])
            && view["labelDisagrees"] == false,
        "history of unreadable-history: {view}"
    );
    let out = sg(
        &t,
        ALICE,
        &config,
        &["history", "qa-loop-clean", "-o", "json"],
    )?
    .run()?;
    let view: Value = serde_json::from_str(&out.stdout)?;
    ensure!(
        view["pipeline"] == "qa-loop" && view["changes"].as_array().map(Vec::len) == Some(3),
        "history of qa-loop-clean: {view}"
    );
    Ok(())
}
