//! Recovery of a directory of arbitrary files: never a panic, a hang or an unbounded allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wal_fuzz::recover(data));
