//! Building prompt tokens: client text never becomes a control token.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leafresh_fuzz_checks::prompt(data));
