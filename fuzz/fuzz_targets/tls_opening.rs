//! Fuzz target: see `switchboard::fuzzing::tls_opening`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::tls_opening(data));
