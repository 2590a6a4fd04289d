//! Operations settings: CORS, log format, low-memory cache types, and the rules between settings.

use std::process::Command;

use leafresh_testmodel::TinyModelSpec;

use crate::support::{binary, client, tiny_model, tiny_model_with, Service};

#[test]
fn no_cors_headers_by_default_and_the_listed_origins_when_asked() {
    let service = Service::start(&tiny_model(), &[]);
    let response = client()
        .get(service.url("/health"))
        .header("Origin", "https://leafresh.example")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let service = Service::start(
        &tiny_model(),
        &["--cors-origins", "https://leafresh.example"],
    );
    let allowed = client()
        .get(service.url("/health"))
        .header("Origin", "https://leafresh.example")
        .send()
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://leafresh.example"
    );

    let service = Service::start(&tiny_model(), &["--cors-origins", "*"]);
    let any = client()
        .get(service.url("/health"))
        .header("Origin", "https://elsewhere.example")
        .send()
        .unwrap();
    assert!(any.headers().get("access-control-allow-origin").is_some());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let service = Service::start(&tiny_model(), &["--log-format", "json"]);
    let log = service.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
    assert!(log.contains("model loaded"));
}

#[test]
fn a_quantized_kv_cache_serves_and_a_quantized_v_cache_needs_flash_attention() {
    // Quantized cache blocks are 32 wide: the head size must be a multiple of 32.
    let spec = TinyModelSpec {
        n_embd: 128,
        n_head: 2,
        n_head_kv: 1,
        ..TinyModelSpec::default()
    };
    let model = tiny_model_with("tiny-head64.gguf", &spec);
    let service = Service::start(
        &model,
        &[
            "--cache-type-k",
            "q8_0",
            "--cache-type-v",
            "q8_0",
            "--flash-attn",
            "on",
        ],
    );
    service.assert_logged("cache_types=q8_0/q8_0");
    let url = service.url(
        "/ai/chatbot/recommendation/base-info?location=a&workType=b&category=%EB%B9%84%EA%B1%B4",
    );
    let (status, _, events) = crate::support::get_events(&url);
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap().event, "close");

    let output = Command::new(binary())
        .arg("--model")
        .arg(tiny_model())
        .args(["--cache-type-v", "q4_0", "--flash-attn", "off"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--cache-type-v q4_0 needs flash attention"),
        "{stderr}"
    );
}
