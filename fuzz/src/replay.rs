//! Replays every file of a corpus directory through one property, without libFuzzer: the CI smoke run
//! (`cargo test` in this crate, stable toolchain) and a quick check of a corpus by hand.

use std::path::Path;

/// Runs `property` on each file under `dir`; returns how many files ran, or every finding.
pub fn directory(dir: &Path, property: fn(&[u8]) -> Result<(), String>) -> Result<usize, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut findings = Vec::new();
    for path in &files {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let outcome = std::panic::catch_unwind(|| property(&data))
            .unwrap_or_else(|_| Err("panicked".to_owned()));
        if let Err(finding) = outcome {
            findings.push(format!("{}: {finding}", path.display()));
        }
    }
    if findings.is_empty() {
        Ok(files.len())
    } else {
        Err(findings.join("\n"))
    }
}
