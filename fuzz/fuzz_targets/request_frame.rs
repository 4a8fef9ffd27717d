//! cargo-fuzz target: `strata::fuzzing::request_frames` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::request_frames(data));
