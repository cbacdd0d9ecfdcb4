//! The CI smoke run of the fuzz targets: every file of each target's corpus (seeds and what fuzzing
//! kept) through the target's property, on the stable toolchain, without libFuzzer.

use std::path::PathBuf;

fn replay(target: &str, property: fn(&[u8]) -> Result<(), String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    match stage_guard_fuzz::replay::directory(&dir, property) {
        // An empty or missing corpus would make this test pass without checking anything.
        Ok(0) => panic!("{}: no corpus files to replay", dir.display()),
        Ok(n) => eprintln!("{target}: {n} corpus files replayed"),
        Err(findings) => panic!("{target}:\n{findings}"),
    }
}

#[test]
fn decode_corpus_replays_clean() {
    replay("decode", stage_guard_fuzz::decode);
}

#[test]
fn answer_corpus_replays_clean() {
    replay("answer", stage_guard_fuzz::answer);
}

#[test]
fn history_corpus_replays_clean() {
    replay("history", stage_guard_fuzz::history);
}
