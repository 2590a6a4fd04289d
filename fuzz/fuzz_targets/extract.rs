//! Streaming fragment extraction and the regex cleansing of model text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leafresh_fuzz_checks::extract(data));
