//! cargo-fuzz target: `strata::fuzzing::segment_object` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::segment_object(data));
