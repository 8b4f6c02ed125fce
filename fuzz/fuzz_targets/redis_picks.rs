//! Fuzz target: see `switchboard::fuzzing::redis_picks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::redis_picks(data));
