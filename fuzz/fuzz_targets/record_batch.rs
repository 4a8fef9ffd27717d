//! cargo-fuzz target: `strata::fuzzing::record_batches` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::record_batches(data));
