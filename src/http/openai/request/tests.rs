//! Unit tests of `request` (a file of their own to keep `request.rs` short).

use super::*;
use serde_json::json;

fn validate(body: Value) -> Result<ValidChatRequest, OpenAiError> {
    serde_json::from_value::<ChatRequest>(body)
        .unwrap()
        .validate()
}

fn base() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "안녕"}]})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = base();
    body[field] = value;
    body
}

/// Found by the `openai` fuzz target (fuzz/regressions/openai/client-text-echoed-in-error and,
/// after a first fix that still echoed short lowercase names, .../client-name-echoed-in-error):
/// validation errors repeated the client's text (a content part type, a role, a string in a
/// number field), so anything, of any length, could be put into our error body.
#[test]
fn regression_client_text_echoed_in_error() {
    let input = crate::test_support::regression_input("openai", "client-text-echoed-in-error");
    let err = serde_json::from_slice::<ChatRequest>(&input)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(!err.message.contains("te0017"), "{}", err.message);
    let input = crate::test_support::regression_input("openai", "client-name-echoed-in-error");
    let err = serde_json::from_slice::<ChatRequest>(&input)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(!err.message.contains("panicked"), "{}", err.message);
    let secret = "/root/.ssh/id_rsa 0xdeadbeef";
    for (field, value) in [
        ("temperature", json!(secret)),
        ("max_tokens", json!(secret)),
        ("stream", json!(secret)),
        ("messages", json!([{"role": secret, "content": "x"}])),
        (
            "messages",
            json!([{"role": "user", "content": [{"type": secret}]}]),
        ),
    ] {
        let err = validate(with(field, value)).unwrap_err();
        assert!(!err.message.contains("ssh"), "{field}: {}", err.message);
    }
    let image = json!([{"role": "user", "content": [{"type": "image_url"}]}]);
    let err = validate(with("messages", image)).unwrap_err();
    assert!(err.message.contains("\"image_url\""), "{}", err.message);
}

#[test]
fn a_minimal_request_gets_the_defaults() {
    let valid = validate(base()).unwrap();
    assert_eq!(valid.messages, vec![ChatMessage::user("안녕")]);
    assert!(!valid.stream);
    assert_eq!(valid.max_tokens, None);
    assert_eq!(valid.format, OutputFormat::Text);
    // llama.cpp's sampler defaults: top-k narrows the vocabulary first.
    assert_eq!(
        (
            valid.sampling.temperature,
            valid.sampling.top_k,
            valid.sampling.top_p,
            valid.sampling.min_p
        ),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!(valid.sampling.repeat_penalty, 1.0);
}

#[test]
fn an_explicit_zero_top_k_is_kept() {
    let valid = validate(with("top_k", json!(0))).unwrap();
    assert_eq!(valid.sampling.top_k, 0);
}

#[test]
fn text_parts_are_joined_and_other_parts_refused() {
    let parts = json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]);
    assert_eq!(
        validate(with("messages", parts)).unwrap().messages[0].content,
        "ab"
    );
    let image =
        json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
    let err = validate(with("messages", image)).unwrap_err();
    assert!(err.message.contains("text only"), "{}", err.message);
    assert_eq!(err.param.as_deref(), Some("messages[0].content[0].type"));
}

#[test]
fn every_bad_shape_of_messages_is_refused_naming_the_field() {
    for (messages, param) in [
        (Value::Null, "messages"),
        (json!("hi"), "messages"),
        (json!([]), "messages"),
        (json!([1]), "messages[0]"),
        (
            json!([{"role": "robot", "content": "x"}]),
            "messages[0].role",
        ),
        (json!([{"content": "x"}]), "messages[0].role"),
        (json!([{"role": "user"}]), "messages[0].content"),
        (
            json!([{"role": "user", "content": 5}]),
            "messages[0].content",
        ),
    ] {
        let err = validate(with("messages", messages.clone())).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(param), "{messages}");
        assert_eq!(err.status.as_u16(), 400);
    }
}

#[test]
fn out_of_range_numbers_are_refused_with_the_bound_and_the_value() {
    for (field, value) in [
        ("max_tokens", json!(0)),
        ("max_tokens", json!(-5)),
        ("max_tokens", json!(1.5)),
        ("max_tokens", json!("10")),
        ("temperature", json!(-1)),
        ("temperature", json!(3)),
        ("top_p", json!(1.5)),
        ("presence_penalty", json!(9)),
        ("frequency_penalty", json!(-9)),
        ("n", json!(17)),
        ("n", json!(0)),
        ("top_logprobs", json!(21)),
        ("top_logprobs", json!(2)),
    ] {
        let err = validate(with(field, value.clone())).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(field), "{field}={value}");
    }
    let err = validate(with("max_tokens", json!(-5))).unwrap_err();
    assert!(
        err.message.contains("-5") && err.message.contains("between 1"),
        "{}",
        err.message
    );
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let mut body = with("max_tokens", json!(10));
    body["max_completion_tokens"] = json!(20);
    assert_eq!(validate(body).unwrap().max_tokens, Some(20));
}

#[test]
fn stop_takes_a_string_or_up_to_four_strings() {
    assert_eq!(
        validate(with("stop", json!("END"))).unwrap().stop,
        vec!["END"]
    );
    assert_eq!(
        validate(with("stop", json!(["a", "b"]))).unwrap().stop,
        vec!["a", "b"]
    );
    assert!(validate(with("stop", json!(["a", "b", "c", "d", "e"]))).is_err());
    assert!(validate(with("stop", json!([1]))).is_err());
    assert!(validate(with("stop", json!("x".repeat(1000)))).is_err());
}

#[test]
fn response_formats_are_understood() {
    let object = validate(with("response_format", json!({"type": "json_object"}))).unwrap();
    assert_eq!(object.format, OutputFormat::JsonObject);
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let body = with(
        "response_format",
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}),
    );
    assert_eq!(
        validate(body).unwrap().format,
        OutputFormat::JsonSchema(schema)
    );
    assert!(validate(with("response_format", json!({"type": "yaml"}))).is_err());
    assert!(validate(with("response_format", json!({"type": "json_schema"}))).is_err());
}

#[test]
fn nul_characters_in_a_history_are_dropped_not_refused() {
    let history =
        json!([{"role": "assistant", "content": "a\u{0}b"}, {"role": "user", "content": "c"}]);
    let valid = validate(with("messages", history)).unwrap();
    assert_eq!(valid.messages[0].content, "ab");
}

#[test]
fn unknown_fields_are_ignored() {
    let mut body = base();
    body["user"] = json!("someone");
    body["logit_bias"] = json!({});
    assert!(validate(body).is_ok());
}

#[test]
fn errors_carry_the_code_openai_gives_them() {
    let message = |m: Value| json!({"model": "m", "messages": [m]});
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "missing_required_parameter",
        ),
        (with("model", json!(3)), "invalid_type"),
        (with("messages", json!("x")), "invalid_type"),
        (with("messages", json!([])), "empty_array"),
        (
            message(json!({"content": "x"})),
            "missing_required_parameter",
        ),
        (
            message(json!({"role": "robot", "content": "x"})),
            "invalid_value",
        ),
        (
            message(json!({"role": "user", "content": 7})),
            "invalid_type",
        ),
        (with("temperature", json!(3.5)), "decimal_above_max_value"),
        (with("top_p", json!(-1)), "decimal_below_min_value"),
        (with("temperature", json!("hot")), "invalid_type"),
        (with("max_tokens", json!(0)), "integer_below_min_value"),
        (with("max_tokens", json!(1.5)), "invalid_type"),
        (with("n", json!(17)), "integer_above_max_value"),
        (with("top_logprobs", json!(3)), "invalid_value"),
        (with("stream", json!("yes")), "invalid_type"),
        (
            with("stop", json!(["a", "b", "c", "d", "e"])),
            "array_above_max_length",
        ),
        (
            with("stop", json!("x".repeat(300))),
            "string_above_max_length",
        ),
        (
            with("response_format", json!({"type": "xml"})),
            "invalid_value",
        ),
    ];
    for (body, code) in cases {
        let err = validate(body.clone()).unwrap_err();
        assert_eq!(err.code, Some(code), "{body} -> {}", err.message);
    }
}

#[test]
fn n_and_log_probabilities_are_read() {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3,
                          "logprobs": true, "top_logprobs": 5});
    let valid = validate(body.clone()).unwrap();
    assert_eq!((valid.n, valid.sampling.logprobs), (3, Some(5)));
    body["top_logprobs"] = Value::Null;
    assert_eq!(validate(body.clone()).unwrap().sampling.logprobs, Some(0));
    body["logprobs"] = json!(false);
    assert_eq!(validate(body).unwrap().sampling.logprobs, None);
}

#[test]
fn template_arguments_are_an_object_and_reasoning_effort_a_level() {
    let args = super::template_args(
        Some(json!({"enable_thinking": false, "messages": [], "bos_token": "x"})),
        Some(json!("low")),
    )
    .unwrap();
    assert_eq!(
        Value::Object(args),
        json!({"enable_thinking": false, "reasoning_effort": "low"})
    );
    let wrong = super::template_args(Some(json!([1])), None).unwrap_err();
    assert_eq!(wrong.param.as_deref(), Some("chat_template_kwargs"));
    let wrong = super::template_args(None, Some(json!("max"))).unwrap_err();
    assert_eq!(wrong.param.as_deref(), Some("reasoning_effort"));
}
