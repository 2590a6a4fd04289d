//! The OpenAI-compatible API as the official `openai` Python package sees it: four real services
//! (plain, with an API key, with a small context, and a small context that refuses long chats)
//! and `python3 -m pytest tests/openai` against them.
//!
//! Needs python3 with the packages of `tests/openai/requirements.txt`. Without them the test fails
//! with the install command; it never skips, because a skipped test looks like a passing one.

use std::process::Command;

use crate::support::{describe, manifest_dir, tiny_model, Service};

const ALIAS: &str = "leafresh";
const API_KEY: &str = "test-key-123";

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails with the install command when python3 or a package of the suite is missing.
fn require_python_packages() {
    let output = Command::new("python3")
        .args(["-c", "import openai, pytest, jsonschema"])
        .output()
        .unwrap_or_else(|err| panic!("cannot run python3: {err} (install Python 3)"));
    assert!(
        output.status.success(),
        "the OpenAI SDK test needs Python packages that are not installed; run\n    \
         python3 -m pip install -r tests/openai/requirements.txt\n{}",
        describe(&output)
    );
}

#[test]
fn openai_python_sdk_suite_passes() {
    require_python_packages();

    let model = tiny_model();
    let model_id = model
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("model file name")
        .to_owned();
    let plain = Service::start(&model, &["--model-alias", ALIAS]);
    let auth = Service::start(&model, &["--model-alias", ALIAS, "--api-key", API_KEY]);
    let small = Service::start(
        &model,
        &[
            "--model-alias",
            ALIAS,
            "--ctx-size",
            "512",
            "--parallel",
            "1",
        ],
    );

    let strict = Service::start(
        &model,
        &[
            "--model-alias",
            ALIAS,
            "--ctx-size",
            "512",
            "--parallel",
            "1",
            "--context-overflow",
            "error",
            "--default-max-tokens",
            "24",
        ],
    );

    let output = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/openai",
        ])
        .current_dir(manifest_dir())
        .env("LEAFRESH_BASE_URL", plain.base_url())
        .env("LEAFRESH_AUTH_BASE_URL", auth.base_url())
        .env("LEAFRESH_API_KEY", API_KEY)
        .env("LEAFRESH_SMALL_CTX_BASE_URL", small.base_url())
        .env("LEAFRESH_STRICT_BASE_URL", strict.base_url())
        .env("LEAFRESH_MODEL_ALIAS", ALIAS)
        .env("LEAFRESH_MODEL_ID", &model_id)
        .env("LEAFRESH_TOOL_CALLS_TOKEN", tool_calls_token().to_string())
        // Nothing written into the source tree; no key from the developer's shell.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("run python3 -m pytest tests/openai");
    // Shown by the test harness on failure, or with --nocapture.
    println!("{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the OpenAI SDK suite failed\n{}\n--- end of the plain service's log ---\n{}",
        describe(&output),
        tail(&plain.log(), 60)
    );
    // Every server was given, so nothing may be skipped.
    assert!(
        !stdout.contains("skipped"),
        "the OpenAI SDK suite skipped tests\n{}",
        describe(&output)
    );
}

/// The id of `[TOOL_CALLS]` in the tiny model's vocabulary (for `logit_bias`).
fn tool_calls_token() -> usize {
    let vocab = leafresh_testmodel::vocab::tiny_vocab();
    vocab
        .tokens()
        .iter()
        .position(|t| t == "[TOOL_CALLS]")
        .expect("the tiny vocabulary has the tool tokens")
}
