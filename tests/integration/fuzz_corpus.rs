//! The fuzz targets' properties (`crates/fuzz-checks`) over the committed seed corpus and over
//! every input a fuzzer once found failing (`fuzz/regressions/TARGET/NAME`, one file per fix,
//! named after what it broke), on stable Rust in every test run.

use std::path::Path;

use leafresh_fuzz_checks as fuzz_checks;

fn run_over(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = 0;
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
    }
    assert!(inputs >= 3, "{target}: only {inputs} seed inputs");
}

#[test]
fn query_seeds_and_regressions_hold() {
    run_over("query", fuzz_checks::query);
}

#[test]
fn extract_seeds_and_regressions_hold() {
    run_over("extract", fuzz_checks::extract);
}

#[test]
fn answer_seeds_and_regressions_hold() {
    run_over("answer", fuzz_checks::answer);
}

#[test]
fn openai_seeds_and_regressions_hold() {
    run_over("openai", fuzz_checks::openai);
}

#[test]
fn prompt_seeds_and_regressions_hold() {
    run_over("prompt", fuzz_checks::prompt);
}
