//! `cargo +nightly fuzz run decode`: the property is in src/, the commands in RELIABILITY.md ("Fuzzing").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(finding) = stage_guard_fuzz::decode(data) {
        panic!("{finding}");
    }
});
