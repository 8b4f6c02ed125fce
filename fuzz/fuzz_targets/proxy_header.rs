//! Fuzz target: see `switchboard::fuzzing::proxy_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::proxy_header(data));
