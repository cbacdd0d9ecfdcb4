//! `cargo +nightly fuzz run answer`: the property is in src/, the commands in RELIABILITY.md ("Fuzzing").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(finding) = stage_guard_fuzz::answer(data) {
        panic!("{finding}");
    }
});
