//! cargo-fuzz target: `strata::fuzzing::wal_segment` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::wal_segment(data));
