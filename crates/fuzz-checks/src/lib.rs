//! The properties the fuzz targets in `fuzz/` check, one function per target. They live here,
//! not in the targets, so that `cargo test` runs them over the committed seed corpus on stable
//! Rust (`tests/integration/fuzz_corpus.rs`) and a target is a one-line wrapper; and in a crate
//! of their own, not in leafresh-llm, so that none of it ships in the service.
//!
//! Each function takes arbitrary bytes and panics only when a property is broken.

use llama_cpp_2::token::LlamaToken;

use leafresh_llm::engine::tokenizer::Tokenizer;
use leafresh_llm::engine::ChatMessage;
use leafresh_llm::http::error::OpenAiError;
use leafresh_llm::http::openai::request::ChatRequest;
use leafresh_llm::leafresh::extract::cleanse;
use leafresh_llm::leafresh::{
    default_category, parse_answer, parse_query, validate_base_info, validate_free_text,
    validate_session_id, AnswerError, FragmentExtractor,
};
use leafresh_testmodel::{write_tiny_llama, TinyModelSpec, MARKUP_TEMPLATE};

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

/// Answer parsing: never panics; an answer has exactly three challenges with text and parses
/// again, unchanged, from its own JSON; a refusal says what it saw in a bounded message (the
/// Leafresh client is shown it) and never claims three usable challenges.
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
            let json = serde_json::to_string(&answer).expect("an answer serializes");
            let again = parse_answer(&json, category).expect("an answer's own JSON parses");
            assert_eq!(again, answer, "{json}");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.chars().count() <= 600,
                "unbounded message: {message}"
            );
            match error {
                AnswerError::Unparseable { start } => {
                    assert!(start.chars().count() <= 40, "{start:?}");
                    assert!(text.trim().starts_with(&start), "{start:?}");
                }
                AnswerError::TooFewChallenges { usable, .. } => assert!(usable < 3),
            }
        }
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
            assert!((0.0..=2.0).contains(&valid.sampling.temperature));
            assert!(
                (0.0..=1.0).contains(&valid.sampling.top_p)
                    && (0.0..=1.0).contains(&valid.sampling.min_p)
            );
            assert!(valid.sampling.top_k >= 0);
            assert!(
                valid.sampling.repeat_penalty.is_finite() && valid.sampling.repeat_penalty > 0.0
            );
            assert!((-2.0..=2.0).contains(&valid.sampling.presence_penalty));
            assert!((-2.0..=2.0).contains(&valid.sampling.frequency_penalty));
            assert!(valid.stop.len() <= 4 && valid.stop.iter().all(|s| s.len() <= 256));
        }
        Err(error) => {
            assert_eq!(error.status.as_u16(), 400);
            assert!(error.param.is_some());
            assert_no_internals(&error.message);
        }
    }
}

/// Prompt building: whatever the contents spell, and however it is nested, the markup tokens of
/// a prompt (control tokens, user-defined ones the template writes) are exactly the template's, the same as for that conversation with harmless
/// contents. The bytes are the contents, split at NUL; an even count starts with a system
/// message; user and assistant turns alternate and the last is the user's.
pub fn prompt(data: &[u8]) {
    for tokenizer in fuzz_models() {
        prompt_on(tokenizer, data);
    }
}

fn prompt_on(tokenizer: &Tokenizer, data: &[u8]) {
    let contents: Vec<String> = data
        .split(|&b| b == 0)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    let messages = conversation(&contents);
    let harmless: Vec<String> = contents
        .iter()
        .map(|c| {
            if c.trim().is_empty() {
                c.clone()
            } else {
                "x".into()
            }
        })
        .collect();
    let controls = |messages: &[ChatMessage]| -> Vec<LlamaToken> {
        let prompt = tokenizer.prompt(messages).expect("a prompt");
        prompt
            .tokens()
            .iter()
            .copied()
            .filter(|&t| tokenizer.is_markup(t))
            .collect()
    };
    assert_eq!(
        controls(&messages),
        controls(&conversation(&harmless)),
        "client text became a markup token: {contents:?}"
    );
}

/// Contents as a conversation: a system message first when there is an even count, then user
/// and assistant turns, ending with the user's.
fn conversation(contents: &[String]) -> Vec<ChatMessage> {
    let (system, turns) = match contents.len() % 2 {
        0 => contents.split_at(1),
        _ => contents.split_at(0),
    };
    let system = system.iter().map(|c| ChatMessage::system(c.as_str()));
    let turns = turns.iter().enumerate().map(|(i, c)| {
        if i % 2 == 0 {
            ChatMessage::user(c.as_str())
        } else {
            ChatMessage::assistant(c.as_str())
        }
    });
    system.chain(turns).collect()
}

/// The tiny test models, written once per process into the temporary directory: the default
/// one (Mistral's template, control-token markup) and one whose template's markup is
/// user-defined tokens (gpt-oss's shape), which llama.cpp matches in text without special parsing.
fn fuzz_models() -> &'static [Tokenizer; 2] {
    static MODELS: std::sync::OnceLock<[Tokenizer; 2]> = std::sync::OnceLock::new();
    MODELS.get_or_init(|| {
        let markup = TinyModelSpec {
            chat_template: Some(MARKUP_TEMPLATE.to_owned()),
            ..TinyModelSpec::default()
        };
        [("tiny", TinyModelSpec::default()), ("markup", markup)].map(|(name, spec)| {
            let path = std::env::temp_dir()
                .join(format!("leafresh-fuzz-{name}-{}.gguf", std::process::id()));
            write_tiny_llama(&path, &spec).expect("write the tiny model");
            let tokenizer = Tokenizer::load(&path, None).expect("load the tiny model");
            let _ = std::fs::remove_file(&path);
            tokenizer
        })
    })
}
