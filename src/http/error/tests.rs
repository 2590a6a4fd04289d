//! Unit tests of `error` (a file of their own to keep `error.rs` short).

use super::*;
use crate::engine::{GgufError, LlamaError, UpstreamError};
use crate::leafresh::RecommendError;

fn json_error(body: &str) -> OpenAiError {
    let error = serde_json::from_str::<crate::http::openai::request::ChatRequest>(body)
        .expect_err("not a request");
    OpenAiError::from_json(&error)
}

#[test]
fn json_errors_say_where_but_never_name_our_types() {
    for body in [
        "",
        "{",
        "[1]",
        "null",
        "\"x\"",
        "{} x",
        "{\"model\": \"\\ud800\"}",
    ] {
        let error = json_error(body);
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error.param.as_deref(), Some("body"));
        assert!(!error.message.contains("ChatRequest"), "{}", error.message);
        assert!(!error.message.contains("struct"), "{}", error.message);
        assert!(error.message.contains("line 1"), "{}", error.message);
    }
}

#[test]
fn model_names_are_echoed_only_when_they_look_like_names() {
    let named = OpenAiError::model_not_found("mistral-7b:q4_k_m");
    assert!(named.message.contains("`mistral-7b:q4_k_m`"));
    for odd in ["../../etc/passwd", "C:\\x", "a b", &"x".repeat(65), "모델"] {
        let error = OpenAiError::model_not_found(odd);
        assert!(!error.message.contains(odd), "{}", error.message);
        assert_eq!(error.code, Some("model_not_found"));
    }
}

/// A Korean sentence comes first: Hangul before any parenthesized (English) detail.
fn korean_first(text: &str) -> bool {
    let sentence = text.split(" (").next().unwrap_or_default();
    sentence
        .chars()
        .any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c))
}

/// Each engine error a Leafresh client can see, and the Korean sentence it must be told (its own,
/// not a generic one): `engine_message` has no catch-all, and this list names every error a
/// client or a busy server causes.
fn engine_errors_and_their_sentences() -> Vec<(EngineError, &'static str)> {
    vec![
        (EngineError::Overloaded, "요청이 많아"),
        (EngineError::Stopped, "추론 엔진이 멈췄습니다"),
        (EngineError::NotReady, "아직 준비되지 않았습니다"),
        (
            EngineError::QueueTimeout { seconds: 120 },
            "대기 시간이 초과",
        ),
        (EngineError::ShuttingDown, "서버가 종료 중"),
        (
            EngineError::PromptTooLong {
                prompt: 900,
                context: 800,
            },
            "메시지가 너무 깁니다",
        ),
        (
            EngineError::PromptOverContext {
                at_least: 900,
                bytes: 3000,
                max_token_bytes: 3,
                context: 800,
            },
            "메시지가 너무 깁니다",
        ),
        (
            EngineError::InvalidPrompt("a message contains a NUL character".into()),
            "쓸 수 없는 문자",
        ),
        (
            EngineError::TemplateRefused("Conversation roles must alternate".into()),
            "채팅 템플릿에 맞지 않습니다",
        ),
        (EngineError::InvalidSchema("bad".into()), "답변 형식"),
        (
            UpstreamError::Unavailable("down".into()).into(),
            "연결할 수 없습니다",
        ),
        (
            UpstreamError::Rejected {
                status: 400,
                message: "too long".into(),
            }
            .into(),
            "요청을 거절했습니다",
        ),
    ]
}

#[test]
fn every_engine_error_a_client_sees_is_told_in_its_own_korean_sentence() {
    for (error, sentence) in engine_errors_and_their_sentences() {
        let message = LeafreshError::from(error.clone()).envelope().message;
        assert!(
            message.starts_with(engine_message(&error)) && message.contains(sentence),
            "{error:?}: {message}"
        );
        assert!(korean_first(&message), "{error:?}: {message}");
        // The English detail follows in parentheses, for the client's developers.
        assert!(message.ends_with(&format!("({error})")), "{message}");
    }
}

#[test]
fn faults_are_one_plain_korean_sentence_without_their_detail() {
    for fault in [
        EngineError::Llama(LlamaError::Sampling("the grammar rejected a token".into())),
        EngineError::Template("chat template failed".into()),
        EngineError::Llama(LlamaError::Decode("-1".into())),
        EngineError::Llama(LlamaError::NoTokenSampled),
        // Another server's fault (a 502): also no detail for the app's user.
        UpstreamError::Failed("garbage".into()).into(),
    ] {
        let message = LeafreshError::from(fault.clone()).envelope().message;
        assert_eq!(
            message,
            "추천을 생성하는 중 서버 오류가 발생했습니다. (internal error while generating)",
            "{fault:?}"
        );
    }
}

#[test]
fn the_leafreshs_own_errors_are_korean_sentences_first() {
    for error in [
        LeafreshError::Query(QueryError::InvalidUtf8 { field: "location" }),
        LeafreshError::Recommend(RecommendError::NoRoomForAnswer {
            room: 216,
            needed: 317,
        }),
        LeafreshError::Unauthorized,
    ] {
        let message = error.envelope().message;
        assert!(korean_first(&message), "{error:?}: {message}");
    }
}

#[test]
fn a_sampling_failure_is_a_server_fault_and_a_client_grammar_is_the_clients() {
    let fault = EngineError::Llama(LlamaError::Sampling("the grammar rejected a token".into()));
    let leafresh = LeafreshError::from(fault.clone());
    assert_eq!(leafresh.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(leafresh.outcome(), Outcome::Error);
    let openai = OpenAiError::from(fault);
    assert_eq!(openai.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(openai.kind, "server_error");
    let client = OpenAiError::from(EngineError::InvalidSchema("bad".into()));
    assert_eq!(client.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        client.param.as_deref(),
        Some("response_format.json_schema.schema")
    );
}

#[test]
fn each_engines_errors_take_the_status_of_their_kind_in_both_apis() {
    let cases = [
        (
            EngineError::from(UpstreamError::Unavailable("timed out".into())),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            UpstreamError::Failed("the answer is not an event stream".into()).into(),
            StatusCode::BAD_GATEWAY,
        ),
        (
            UpstreamError::Rejected {
                status: 400,
                message: "the prompt is over the context".into(),
            }
            .into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            LlamaError::Decode("-1".into()).into(),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            GgufError::Missing {
                path: "/models/none.gguf".into(),
            }
            .into(),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (error, status) in cases {
        let leafresh = LeafreshError::from(error.clone());
        assert_eq!(leafresh.status(), status, "{error:?}");
        let openai = OpenAiError::from(error.clone());
        assert_eq!(openai.status, status, "{error:?}");
        let retry = leafresh
            .error_response()
            .headers()
            .contains_key("retry-after");
        assert_eq!(
            retry,
            status == StatusCode::SERVICE_UNAVAILABLE,
            "{error:?}"
        );
    }
    let unavailable = OpenAiError::from(EngineError::from(UpstreamError::Unavailable("x".into())));
    assert_eq!(unavailable.code, Some("upstream_unavailable"));
    let overlong = OpenAiError::from(EngineError::from(UpstreamError::Rejected {
        status: 400,
        message: "the prompt is over the context".into(),
    }));
    assert_eq!(overlong.code, Some("context_length_exceeded"));
}

#[test]
fn an_oversized_body_is_a_413_about_the_body() {
    let error = OpenAiError::from(BodyError::TooLarge { limit: 1024 });
    assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error.message,
        "The request body is larger than the limit of 1024 bytes."
    );
    assert_eq!(error.param.as_deref(), Some("body"));
}
