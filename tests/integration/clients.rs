//! The protocols as the client libraries people use drive them (`tests/clients`: the OpenAI SDK
//! with completions, logprobs, `n` and the Responses API, the OpenAI Agents SDK, the Anthropic
//! SDK, LangChain, LiteLLM, instructor), each written as its docs show, against the service on
//! the synthetic model and on the real-weights model.
//!
//! The libraries live in `target/clients-venv` (their pins conflict with the SDK suite's), which
//! `scripts/test` installs. Without it the test fails with the install command; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    describe, manifest_dir, real_model, tiny_model, Service, REAL_MODEL_TEMPLATE,
};

const ALIAS: &str = "leafresh";
const API_KEY: &str = "client-key-7";

/// The venv's Python, or a failure that says how to make it.
fn venv_python() -> PathBuf {
    let python = manifest_dir().join("target/clients-venv/bin/python");
    assert!(
        python.is_file(),
        "the client-library suite needs its venv; make it with\n    python3 -m venv \
         target/clients-venv && target/clients-venv/bin/pip install -r \
         tests/clients/requirements.txt\n(scripts/test does)"
    );
    python
}

/// Runs the whole suite against a service on `model`; nothing may fail or be skipped.
fn suite_passes_on(model: &Path, extra: &[&str], real_weights: bool) {
    let python = venv_python();
    // One slot: the suite compares answers of separate requests (a seed repeated, a stream
    // against the whole answer, a prompt alone and in a list), which are computed alike only
    // when every request's cells lie where the last one's did (README: seeds).
    let mut args = vec![
        "--model-alias",
        ALIAS,
        "--api-key",
        API_KEY,
        "--parallel",
        "1",
    ];
    args.extend_from_slice(extra);
    let service = Service::start(model, &args);
    let output = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/clients",
        ])
        .current_dir(manifest_dir())
        .env("LEAFRESH_BASE_URL", service.base_url())
        .env("LEAFRESH_MODEL", ALIAS)
        .env("LEAFRESH_API_KEY", API_KEY)
        .env(
            "LEAFRESH_REAL_WEIGHTS",
            if real_weights { "1" } else { "0" },
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .output()
        .expect("run the client-library suite");
    println!("{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = service.log();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    assert!(
        output.status.success(),
        "the client-library suite failed\n{}\n--- the service's last log lines ---\n{}",
        describe(&output),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        !stdout.contains("skipped"),
        "the client-library suite skipped tests\n{}",
        describe(&output)
    );
}

#[test]
fn client_libraries_pass_on_the_synthetic_model() {
    suite_passes_on(&tiny_model(), &[], false);
}

#[test]
fn client_libraries_pass_on_real_weights() {
    suite_passes_on(&real_model(), &REAL_MODEL_TEMPLATE, true);
}
