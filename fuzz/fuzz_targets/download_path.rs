//! Fuzz target: see `switchboard::fuzzing::download_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::download_path(data));
