//! The claims about model text, the cache and the API, on a model with real weights: Gemma 3 270M
//! Q4_K_M (`scripts/real-model`), a base model with a 262,144-token vocabulary, sliding-window
//! attention (512 tokens) and no chat template of its own (`--chat-template gemma`). The same
//! assertions as on the synthetic models, over several inputs each; the synthetic models stay
//! for what they are good at (exact vocabularies, faults).

mod openai;
mod reuse;
mod streams;
mod tools;

use leafresh_llm::engine::tokenizer::Tokenizer;
use leafresh_llm::leafresh::{base_info_messages, validate_base_info, QueryParams};

use crate::support::{real_model, Service, REAL_MODEL_TEMPLATE};

/// The service on the real model with `extra` arguments.
pub fn start(extra: &[&str]) -> Service {
    let mut args = REAL_MODEL_TEMPLATE.to_vec();
    args.extend_from_slice(extra);
    Service::start(&real_model(), &args)
}

pub use crate::support::model_id;

/// The tokens every base-info prompt of `model` (with `template`) begins with: the chat
/// template's opening and the instruction, up to where two requests differ.
pub fn shared_prompt_prefix(model: &std::path::Path, template: Option<&str>) -> usize {
    let tokenizer = Tokenizer::load(model, template).expect("load the vocabulary");
    let prompt = |location: &str| {
        let query = QueryParams::from_pairs([
            ("location", location),
            ("workType", "사무직"),
            ("category", "비건"),
        ]);
        let messages = base_info_messages(&validate_base_info(&query).unwrap());
        tokenizer.prompt(&messages).unwrap().tokens().to_vec()
    };
    let (a, b) = (prompt("도시"), prompt("농촌"));
    a.iter().zip(&b).take_while(|(x, y)| x == y).count()
}

/// Text a reader can read: no U+FFFD (a broken character), no control characters but newlines
/// and tabs.
pub fn assert_readable(text: &str) {
    assert!(!text.contains('\u{FFFD}'), "a broken character: {text:?}");
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')),
        "a control character: {text:?}"
    );
}

/// Whether `text` has Hangul syllables.
pub fn has_hangul(text: &str) -> bool {
    text.chars().any(|c| ('가'..='힣').contains(&c))
}
