//! Request validation for the recommendation endpoints: query parameters become typed, valid
//! requests (`ValidBaseInfo`, `ValidFreeText`) or a `Rejection` carrying the contract's status and
//! message. Also the off-topic / bad-word filter of free-text messages.
//!
//! Bounds on every field keep a huge query value from reaching the prompt (where it would cost
//! prompt-processing time and push the instruction out of the context window).

use serde_json::json;
use thiserror::Error;

use super::categories::{self, Category};
use super::constants::constants;
use super::query::QueryParams;

/// Longest accepted `location` and `workType`, in characters.
pub const MAX_FIELD_CHARS: usize = 100;
/// Shortest accepted free-text `message`, in characters after trimming (the contract's rule).
pub const MIN_MESSAGE_CHARS: usize = 5;
/// Longest accepted free-text `message`, in characters after trimming.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Longest accepted `sessionId`, in characters.
pub const MAX_SESSION_ID_CHARS: usize = 128;

/// A request that must not be served, with the envelope the client gets instead.
///
/// For base-info this is the HTTP status and JSON body; for free-text the contract sends it as a
/// single `error` event inside an HTTP 200 stream, with `status` in the envelope.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{status} {message}")]
pub struct Rejection {
    pub status: u16,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl Rejection {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            data: None,
        }
    }
}

/// A valid base-info request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidBaseInfo {
    /// `None` when absent or blank: no session is read or written.
    pub session_id: Option<String>,
    /// Trimmed, 1..=`MAX_FIELD_CHARS` characters.
    pub location: String,
    /// Trimmed, 1..=`MAX_FIELD_CHARS` characters.
    pub work_type: String,
    pub category: &'static Category,
}

/// A valid free-text request: on-topic, `MIN_MESSAGE_CHARS..=MAX_MESSAGE_CHARS` characters.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidFreeText {
    /// `None` when absent or blank: no history is used or kept.
    pub session_id: Option<String>,
    /// Trimmed.
    pub message: String,
}

/// Validates a base-info query. The contract's checks come first, in its order (location,
/// workType, category), so a request missing several fields gets the contract's message for the
/// first one; our own bounds and the session id are checked after them.
pub fn validate_base_info(q: &QueryParams) -> Result<ValidBaseInfo, Rejection> {
    let m = &constants().messages;
    let location = required(q, "location", &m.location_required)?;
    let work_type = required(q, "workType", &m.work_type_required)?;
    let category_label = required(q, "category", &m.category_required)?;
    let category = categories::by_label(category_label).ok_or_else(|| Rejection {
        status: 400,
        message: m.invalid_choice.clone(),
        data: Some(json!({ "invalidFields": ["category"] })),
    })?;
    let location = bounded("location", location, MAX_FIELD_CHARS, 400)?;
    let work_type = bounded("workType", work_type, MAX_FIELD_CHARS, 400)?;
    let session_id = validate_session_id(q.get("sessionId"))?;
    Ok(ValidBaseInfo {
        session_id,
        location,
        work_type,
        category,
    })
}

/// Validates a free-text query: presence (400), length (422), session id (400), then the topic
/// filter, whose rejection has status 200 and the fallback text (the contract answers an
/// off-topic message with a friendly reply, not an error).
pub fn validate_free_text(q: &QueryParams) -> Result<ValidFreeText, Rejection> {
    let m = &constants().messages;
    let message = required(q, "message", &m.message_required)?;
    if message.chars().count() < MIN_MESSAGE_CHARS {
        return Err(Rejection::new(422, m.message_too_short.clone()));
    }
    let message = bounded("message", message, MAX_MESSAGE_CHARS, 422)?;
    let session_id = validate_session_id(q.get("sessionId"))?;
    if is_off_topic(&message) {
        return Err(Rejection::new(200, m.fallback.clone()));
    }
    Ok(ValidFreeText {
        session_id,
        message,
    })
}

/// Validates an optional `sessionId` (also for clear-conversation): absent or blank is `None`;
/// otherwise trimmed, at most `MAX_SESSION_ID_CHARS` characters and free of control characters
/// (it is a map key and appears in logs), else 400.
pub fn validate_session_id(raw: Option<&str>) -> Result<Option<String>, Rejection> {
    let Some(id) = raw.map(str::trim).filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    let chars = id.chars().count();
    if chars > MAX_SESSION_ID_CHARS {
        return Err(Rejection::new(
            400,
            format!("sessionId는 {MAX_SESSION_ID_CHARS}자 이하여야 합니다. (입력: {chars}자)"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Rejection::new(
            400,
            "sessionId에 제어 문자를 사용할 수 없습니다.",
        ));
    }
    Ok(Some(id.to_owned()))
}

/// The contract's topic rule: unless the message asks for a category (`category_request_keywords`),
/// it is off-topic when it contains no `env_keywords` entry or contains a `bad_words` entry.
/// All comparisons ignore case (the lists are mostly Korean, where case does not exist).
pub fn is_off_topic(message: &str) -> bool {
    let c = constants();
    let lower = message.to_lowercase();
    let contains_any = |words: &[String]| words.iter().any(|w| lower.contains(&w.to_lowercase()));
    if contains_any(&c.category_request_keywords) {
        return false;
    }
    !contains_any(&c.env_keywords) || contains_any(&c.bad_words)
}

/// The trimmed value of a required parameter, or the contract's "필수" rejection.
fn required<'q>(q: &'q QueryParams, name: &str, message: &str) -> Result<&'q str, Rejection> {
    match q.get(name).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Rejection::new(400, message)),
    }
}

/// `value` if it has at most `max` characters, else a rejection naming the field, the bound and
/// the length given (not the value itself: it may be 100 KB).
fn bounded(field: &str, value: &str, max: usize, status: u16) -> Result<String, Rejection> {
    let chars = value.chars().count();
    if chars > max {
        return Err(Rejection::new(
            status,
            format!("{field}은(는) {max}자 이하여야 합니다. (입력: {chars}자)"),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams::from_pairs(pairs.iter().copied())
    }

    fn base(location: &str, work_type: &str, category: &str) -> QueryParams {
        q(&[
            ("location", location),
            ("workType", work_type),
            ("category", category),
        ])
    }

    fn rejection(status: u16, message: &str) -> Rejection {
        Rejection::new(status, message)
    }

    #[test]
    fn base_info_valid_request_is_trimmed_and_typed() {
        let v = validate_base_info(&q(&[
            ("sessionId", " abc "),
            ("location", " 도시 "),
            ("workType", "사무직"),
            ("category", " 디지털 탄소 "),
        ]))
        .unwrap();
        assert_eq!(v.session_id.as_deref(), Some("abc"));
        assert_eq!(v.location, "도시");
        assert_eq!(v.work_type, "사무직");
        assert_eq!(v.category.code, "DIGITAL_CARBON");
    }

    #[test]
    fn base_info_missing_or_blank_fields_get_the_contract_messages_in_order() {
        let m = &constants().messages;
        assert_eq!(
            validate_base_info(&q(&[])),
            Err(rejection(400, &m.location_required))
        );
        assert_eq!(
            validate_base_info(&base("  ", "사무직", "비건")),
            Err(rejection(400, "location은 필수입니다."))
        );
        assert_eq!(
            validate_base_info(&base("도시", "", "")),
            Err(rejection(400, "workType은 필수입니다."))
        );
        assert_eq!(
            validate_base_info(&q(&[("location", "도시"), ("workType", "사무직")])),
            Err(rejection(400, "category는 필수입니다."))
        );
    }

    #[test]
    fn base_info_unknown_category_names_the_invalid_field() {
        let err = validate_base_info(&base("도시", "사무직", "우주여행")).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.message, "유효하지 않은 선택 항목이 포함되어 있습니다.");
        assert_eq!(err.data, Some(json!({"invalidFields": ["category"]})));
        // The English code is not a label.
        assert!(validate_base_info(&base("도시", "사무직", "VEGAN")).is_err());
    }

    #[test]
    fn base_info_overlong_fields_are_rejected_with_the_field_and_bound() {
        let long = "가".repeat(MAX_FIELD_CHARS + 1);
        let err = validate_base_info(&base(&long, "사무직", "비건")).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("location"), "{}", err.message);
        assert!(err.message.contains("100자"), "{}", err.message);
        let err = validate_base_info(&base("도시", &long, "비건")).unwrap_err();
        assert!(err.message.contains("workType"), "{}", err.message);
        // Exactly at the bound (in characters, not bytes) is fine.
        let max = "가".repeat(MAX_FIELD_CHARS);
        assert!(validate_base_info(&base(&max, &max, "비건")).is_ok());
        // 100 KB does not get copied into the message.
        let huge = "a".repeat(100_000);
        let err = validate_base_info(&base(&huge, "사무직", "비건")).unwrap_err();
        assert!(err.message.len() < 200);
    }

    #[test]
    fn session_id_blank_is_none_and_bad_ones_are_rejected() {
        let ok = |id: &str| validate_session_id(Some(id));
        assert_eq!(ok("   "), Ok(None));
        assert_eq!(validate_session_id(None), Ok(None));
        assert_eq!(ok("s-1"), Ok(Some("s-1".into())));
        let err = ok(&"x".repeat(MAX_SESSION_ID_CHARS + 1)).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("sessionId"));
        assert_eq!(ok("a\u{0}b").unwrap_err().status, 400);
        // Validation of the whole request applies it as well.
        let mut pairs = vec![("sessionId", "a\u{1b}b")];
        pairs.extend([
            ("location", "도시"),
            ("workType", "사무직"),
            ("category", "비건"),
        ]);
        assert_eq!(validate_base_info(&q(&pairs)).unwrap_err().status, 400);
    }

    #[test]
    fn free_text_statuses_follow_the_contract() {
        let m = &constants().messages;
        let ft = |msg: &str| validate_free_text(&q(&[("message", msg)]));
        assert_eq!(
            validate_free_text(&q(&[])),
            Err(rejection(400, "message는 필수입니다."))
        );
        assert_eq!(ft("   "), Err(rejection(400, "message는 필수입니다.")));
        // 4 characters (12 bytes) is too short; trimming happens first.
        assert_eq!(
            ft("  텀블러요  "),
            Err(rejection(422, &m.message_too_short))
        );
        assert_eq!(
            ft("텀블러 추천"),
            Ok(ValidFreeText {
                session_id: None,
                message: "텀블러 추천".into()
            })
        );
        let long = format!("환경 {}", "가".repeat(MAX_MESSAGE_CHARS));
        let err = ft(&long).unwrap_err();
        assert_eq!(err.status, 422);
        assert!(err.message.contains("message") && err.message.contains("500자"));
    }

    #[test]
    fn off_topic_and_abusive_messages_get_the_fallback_with_status_200() {
        let fallback = rejection(200, &constants().messages.fallback);
        let ft = |msg: &str| validate_free_text(&q(&[("message", msg)]));
        assert_eq!(ft("오늘 점심 메뉴 골라줘"), Err(fallback.clone()));
        assert_eq!(ft("환경 챌린지 추천해줘 시발"), Err(fallback.clone()));
        assert_eq!(ft("환경 챌린지 FUCK this"), Err(fallback.clone()));
        assert_eq!(ft("Tlqkf 환경 챌린지"), Err(fallback));
        assert!(ft("플라스틱 줄이는 방법 알려줘").is_ok());
    }

    #[test]
    fn topic_rule_matches_the_contract() {
        assert!(!is_off_topic("텀블러 챌린지 알려줘"));
        assert!(!is_off_topic("에너지 아끼는 법"));
        assert!(is_off_topic("주식 투자 알려줘"));
        // Bad words are case-insensitive and win over env keywords.
        assert!(is_off_topic("환경 ShIt"));
        assert!(is_off_topic("지구 ASSHOLE"));
        // A category request is on-topic even without env keywords, even with a bad word.
        assert!(!is_off_topic("원래 카테고리로 돌려줘"));
        assert!(!is_off_topic("이전 걸로 해줘 ㅅㅂ"));
    }
}
