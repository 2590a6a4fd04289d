//! Query-string decoding and the Leafresh request validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leafresh_fuzz_checks::query(data));
