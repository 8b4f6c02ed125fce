//! Fuzz target: see `switchboard::fuzzing::request_line_and_template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::request_line_and_template(data));
