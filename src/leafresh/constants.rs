//! The data of the original chatbot (category labels and codes, keyword lists, user-facing
//! messages, generation settings), parsed once from the embedded `constants.json`.
//!
//! The JSON file is the single source of truth shared with the contract, and with the benchmark
//! tools (`tools/leafresh_tools/leafresh.py` reads it); this module only gives it types. Strings
//! we add on top of the original (e.g. the clear-conversation reply) have serde defaults so the
//! file stays a faithful copy of the original's constants; the sampling settings spell out
//! `min_p` 0, which the original's sampler chain did not have.

use std::sync::LazyLock;

use serde::Deserialize;

use super::categories::Category;

/// Everything `constants.json` holds, typed.
#[derive(Debug, Clone, Deserialize)]
pub struct Constants {
    /// The 8 categories in the order the app lists them.
    pub categories: Vec<Category>,
    /// The category a session has until a base-info call sets another one.
    pub default_category_label: String,
    /// A free-text message must contain one of these to count as on-topic.
    pub env_keywords: Vec<String>,
    /// A message asking to go back to a category is always on-topic.
    pub category_request_keywords: Vec<String>,
    /// Abusive words; compared case-insensitively.
    pub bad_words: Vec<String>,
    /// User-facing messages, byte-for-byte those of the original.
    pub messages: Messages,
    /// Sampling settings of the original, per endpoint.
    pub generation_defaults: GenerationDefaultsByEndpoint,
}

/// The user-facing messages of the contract.
#[derive(Debug, Clone, Deserialize)]
pub struct Messages {
    /// `message` of every `challenge` event.
    pub token: String,
    /// `message` of the `close` event.
    pub close: String,
    pub location_required: String,
    pub work_type_required: String,
    pub category_required: String,
    /// An unknown category label.
    pub invalid_choice: String,
    pub message_required: String,
    pub message_too_short: String,
    /// Reply to an off-topic or abusive free-text message.
    pub fallback: String,
    /// Reply of `POST /ai/chatbot/clear-conversation` (not in the original's constants).
    #[serde(default = "default_conversation_cleared")]
    pub conversation_cleared: String,
}

fn default_conversation_cleared() -> String {
    "대화 기록이 삭제되었습니다.".to_owned()
}

/// Sampling settings for the two recommendation endpoints.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct GenerationDefaultsByEndpoint {
    pub base_info: GenerationDefaults,
    pub free_text: GenerationDefaults,
}

/// Sampling settings of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub repeat_penalty: f32,
    /// 0: off, as in the original's chain (the `/v1` default is llama.cpp's 0.05).
    pub min_p: f32,
}

static CONSTANTS: LazyLock<Constants> = LazyLock::new(|| {
    let constants: Constants = serde_json::from_str(include_str!("constants.json"))
        .expect("src/leafresh/constants.json is embedded at build time and must parse");
    // Checked here once so that `categories::default_category` can never fail later.
    assert!(
        constants
            .categories
            .iter()
            .any(|c| c.label == constants.default_category_label),
        "default_category_label must name one of the categories"
    );
    constants
});

/// The parsed constants (parsed on first use; the file is compiled in, so this cannot fail at
/// run time unless the build embedded a broken file, which the unit tests catch).
pub fn constants() -> &'static Constants {
    &CONSTANTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_constants_parse_with_the_contract_messages() {
        let c = constants();
        assert_eq!(c.categories.len(), 8);
        assert_eq!(c.default_category_label, "제로웨이스트");
        assert_eq!(c.messages.location_required, "location은 필수입니다.");
        assert_eq!(c.messages.work_type_required, "workType은 필수입니다.");
        assert_eq!(c.messages.category_required, "category는 필수입니다.");
        assert_eq!(
            c.messages.invalid_choice,
            "유효하지 않은 선택 항목이 포함되어 있습니다."
        );
        assert_eq!(c.messages.message_required, "message는 필수입니다.");
        assert_eq!(c.messages.token, "토큰 생성");
        assert_eq!(c.messages.close, "모든 챌린지 추천 완료");
        assert!(c.messages.fallback.starts_with("저는 친환경 챌린지를"));
        assert!(!c.messages.conversation_cleared.is_empty());
        assert!(c.env_keywords.iter().any(|k| k == "텀블러"));
        assert!(c.bad_words.iter().any(|k| k == "fuck"));
        assert!(c.category_request_keywords.iter().any(|k| k == "카테고리"));
    }

    #[test]
    fn generation_defaults_are_those_of_the_original() {
        let g = constants().generation_defaults;
        assert_eq!(
            g.base_info,
            GenerationDefaults {
                max_tokens: 1024,
                temperature: 0.7,
                top_p: 0.9,
                top_k: 50,
                repeat_penalty: 1.1,
                min_p: 0.0,
            }
        );
        assert_eq!(g.free_text.max_tokens, 512);
        assert_eq!(g.free_text.temperature, 0.3);
    }
}
