//! Segment headers and record frames from arbitrary bytes: never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wal_fuzz::decode(data));
