//! Parsing the model's final text into three challenges.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leafresh_fuzz_checks::answer(data));
