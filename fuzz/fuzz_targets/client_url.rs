//! Fuzz target: see `switchboard::fuzzing::client_url`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::client_url(data));
