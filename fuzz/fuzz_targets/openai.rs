//! Parsing and validating /v1/chat/completions request bodies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leafresh_fuzz_checks::openai(data));
