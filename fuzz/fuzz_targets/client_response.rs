//! Fuzz target: see `switchboard::fuzzing::client_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::client_response(data));
