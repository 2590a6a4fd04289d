//! The properties the fuzz targets in `fuzz/` check, one function per target. They live here,
//! not in the targets, so that `cargo test` runs them over the committed seed corpus on stable
//! Rust (`tests/integration/fuzz_corpus.rs`) and a target is a one-line wrapper.
//!
//! Each function takes arbitrary bytes and panics only when a property is broken.

use crate::http::error::OpenAiError;
use crate::http::openai::request::ChatRequest;
use crate::leafresh::extract::cleanse;
use crate::leafresh::{
    default_category, parse_answer, parse_query, validate_base_info, validate_free_text,
    validate_session_id, FragmentExtractor,
};

/// What must never appear in a message a client sees: our Rust types and internals.
fn assert_no_internals(message: &str) {
    for needle in ["::", "ChatRequest", "struct ", "panicked", "0x"] {
        assert!(
            !message.contains(needle),
            "message shows an internal ({needle}): {message}"
        );
    }
}

/// Query decoding and validation: never panics; decoded text has no control characters; a
/// valid request has bounded, non-blank fields.
pub fn query(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let params = match parse_query(raw) {
        Ok(params) => params,
        Err(e) => return assert_no_internals(&e.to_string()),
    };
    for (key, value) in params.pairs() {
        assert!(!key.chars().any(char::is_control), "{key:?}");
        assert!(!value.chars().any(char::is_control), "{value:?}");
    }
    match validate_base_info(&params) {
        Ok(valid) => {
            for field in [&valid.location, &valid.work_type] {
                assert!(
                    !field.trim().is_empty() && field.chars().count() <= 100,
                    "{field:?}"
                );
            }
        }
        Err(rejection) => assert_no_internals(&rejection.message),
    }
    match validate_free_text(&params) {
        Ok(valid) => assert!(valid.message.chars().count() <= 500),
        Err(rejection) => assert_no_internals(&rejection.message),
    }
    if let Ok(Some(id)) = validate_session_id(params.get("sessionId")) {
        assert!(!id.chars().any(char::is_control) && id.chars().count() <= 128);
    }
}

/// Fragment extraction and cleansing: the input is cut into pieces where the first bytes say
/// (as tokens cut text); no fragment holds JSON syntax, and cleansing is idempotent.
pub fn extract(data: &[u8]) {
    let (cuts, text) = data.split_at(data.len().min(4));
    let text = String::from_utf8_lossy(text);
    let mut pieces = Vec::new();
    let mut rest: &str = &text;
    for &cut in cuts {
        let mut at = (cut as usize % 16).min(rest.len());
        while !rest.is_char_boundary(at) {
            at += 1;
        }
        let (piece, tail) = rest.split_at(at);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    let mut extractor = FragmentExtractor::new();
    let mut fragments: Vec<String> = pieces.iter().filter_map(|p| extractor.push(p)).collect();
    fragments.extend(extractor.finish());
    for fragment in fragments {
        assert!(!fragment.is_empty());
        assert!(
            !fragment.contains(['"', '{', '}', '[', ']', '`']),
            "syntax in a fragment: {fragment:?} from {text:?}"
        );
        assert_eq!(cleanse(&fragment), fragment);
    }
    let once = cleanse(&text);
    assert!(!once.contains(['"', '{', '}', '[', ']', '`']), "{once:?}");
    assert_eq!(cleanse(&once), once);
}

/// Answer parsing: never panics; an answer has exactly three challenges with text.
pub fn answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let category = default_category();
    match parse_answer(&text, category) {
        Ok(answer) => {
            assert_eq!(answer.challenges.len(), 3);
            for challenge in &answer.challenges {
                assert!(!challenge.title.trim().is_empty());
                assert!(!challenge.description.trim().is_empty());
                assert_eq!(challenge.category, category.code);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// OpenAI request validation: never panics; every accepted value is in range; every refusal is
/// a 400 that names a field and shows no internals.
pub fn openai(data: &[u8]) {
    let request: ChatRequest = match serde_json::from_slice(data) {
        Ok(request) => request,
        Err(e) => {
            let error = OpenAiError::from_json(&e);
            assert_eq!(error.status.as_u16(), 400);
            return assert_no_internals(&error.message);
        }
    };
    match request.validate() {
        Ok(valid) => {
            assert!(!valid.messages.is_empty());
            assert!(valid.messages.iter().all(|m| !m.content.contains('\0')));
            assert!(valid.max_tokens.is_none_or(|n| (1..=1 << 20).contains(&n)));
            assert!((0.0..=2.0).contains(&valid.temperature));
            assert!((0.0..=1.0).contains(&valid.top_p) && (0.0..=1.0).contains(&valid.min_p));
            assert!(valid.top_k >= 0);
            assert!(valid.repeat_penalty.is_finite() && valid.repeat_penalty > 0.0);
            assert!((-2.0..=2.0).contains(&valid.presence_penalty));
            assert!((-2.0..=2.0).contains(&valid.frequency_penalty));
            assert!(valid.stop.len() <= 4 && valid.stop.iter().all(|s| s.len() <= 256));
        }
        Err(error) => {
            assert_eq!(error.status.as_u16(), 400);
            assert!(error.param.is_some());
            assert_no_internals(&error.message);
        }
    }
}

/// A saved fuzz finding, `fuzz/regressions/TARGET/NAME`, for the regression test named after it.
#[cfg(test)]
pub(crate) fn regression_input(target: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
