//! Running the real promtool: `check rules` on rule groups, and `test rules` with the alerts' unit
//! tests of `tests/fixtures/monitoring/`.

use super::*;

/// The real promtool (a missing one fails the test with the command that installs it).
pub(super) fn promtool() -> PathBuf {
    stage_guard_testenv::tools::promtool().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs promtool in `dir`; Ok(output) when it exits 0, Err(output) otherwise.
pub(super) fn run_promtool(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `promtool check rules` on a Prometheus rule file holding `groups` (JSON is YAML); duplicate rules
/// are errors. Returns how many rules promtool found.
pub(super) fn check_rules(label: &str, groups: &Value) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("{label}.rules.yaml");
    fs::write(
        dir.path().join(&file),
        serde_json::to_string_pretty(groups).unwrap(),
    )
    .unwrap();
    let report = run_promtool(dir.path(), &["check", "rules", "--lint-fatal", &file])
        .unwrap_or_else(|e| panic!("{label}: promtool check rules failed:\n{e}"));
    let found = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("SUCCESS: "))
        .and_then(|l| l.strip_suffix(" rules found"))
        .unwrap_or_else(|| panic!("{label}: no rule count in:\n{report}"));
    found.parse().unwrap()
}

/// The jobs the fixtures' `${WEBHOOK_JOB}` and `${MONITOR_JOB}` stand for.
pub(super) struct Jobs<'a> {
    pub(super) webhook: &'a str,
    pub(super) monitor: &'a str,
}

/// Runs the fixtures of `tests/fixtures/monitoring/` for `rules` (`webhook` or `monitor`: the files
/// `<rules>-*.test.yaml`) against `groups`, written where their `rule_files` expects them. Ok, or
/// promtool's report.
pub(super) fn unit_test(rules: &str, groups: &Value, jobs: &Jobs) -> Result<(), String> {
    let fixtures_dir = repo().join("tests/fixtures/monitoring");
    let mut fixtures: Vec<String> = fs::read_dir(&fixtures_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{rules}-")) && name.ends_with(".test.yaml"))
        .collect();
    fixtures.sort();
    assert!(
        !fixtures.is_empty(),
        "no {rules}-*.test.yaml in {}",
        fixtures_dir.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for fixture in &fixtures {
        let text = fs::read_to_string(fixtures_dir.join(fixture))
            .unwrap()
            .replace("${WEBHOOK_JOB}", jobs.webhook)
            .replace("${MONITOR_JOB}", jobs.monitor);
        fs::write(dir.path().join(fixture), text).unwrap();
    }
    fs::write(
        dir.path().join(format!("{rules}.rules.yaml")),
        serde_json::to_string_pretty(groups).unwrap(),
    )
    .unwrap();
    let mut args = vec!["test", "rules"];
    args.extend(fixtures.iter().map(String::as_str));
    run_promtool(dir.path(), &args).map(|_| ())
}
