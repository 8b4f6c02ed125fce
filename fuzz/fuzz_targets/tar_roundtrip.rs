//! Fuzz target: see `switchboard::fuzzing::tar_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::tar_roundtrip(data));
