//! Unit tests of `prompt` (a file of their own to keep `prompt.rs` short).

use super::*;
use crate::engine::chat::Role;
use crate::leafresh::categories;

fn base_req() -> ValidBaseInfo {
    ValidBaseInfo {
        session_id: Some("s".into()),
        location: "도시".into(),
        work_type: "사무직".into(),
        category: categories::by_label("디지털 탄소").unwrap(),
    }
}

/// The answer in the grammar's layout, built independently of the skeleton.
fn answer_text(recommend: &str, items: [(&str, &str); 3]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|(t, d)| format!("{{\"title\": \"{t}\", \"description\": \"{d}\"}}"))
        .collect();
    format!(
        "{{\"recommend\": \"{recommend}\", \"challenges\": [{}]}}",
        items.join(", ")
    )
}

/// The longest answer the grammar admits (every string full).
fn longest_answer(b: &AnswerBounds) -> String {
    let s = |n: usize| "가".repeat(n);
    let (t, d) = (s(b.title_chars), s(b.description_chars));
    answer_text(&s(b.recommend_chars), [(&t, &d), (&t, &d), (&t, &d)])
}

fn grammar_accepts(grammar: &str, text: &str) -> bool {
    crate::test_support::lark_accepts(grammar, text)
}

#[test]
fn worst_case_counts_every_fixed_byte_and_three_tokens_per_char() {
    let b = AnswerBounds::MAX;
    let text = longest_answer(&b);
    let content = b.recommend_chars + 3 * (b.title_chars + b.description_chars);
    // Each 가 is 3 bytes, so the byte length is fixed bytes + 3 * content chars.
    assert_eq!(b.worst_case_tokens(), text.len() + 1);
    assert_eq!(text.len() - 3 * content, fixed_tokens() - 1);
    // And the longest answer is valid JSON of the schema's shape.
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["challenges"].as_array().unwrap().len(), 3);
}

#[test]
fn fitting_bounds_fit_every_budget_from_128_to_4096() {
    let mut previous: Option<AnswerBounds> = None;
    for budget in 128..=4096 {
        let Some(b) = AnswerBounds::fitting(budget) else {
            assert!(AnswerBounds::MIN.worst_case_tokens() > budget, "{budget}");
            assert!(previous.is_none(), "bounds vanished at {budget}");
            continue;
        };
        assert!(b.worst_case_tokens() <= budget, "{budget}: {b:?}");
        for (v, min, max) in [
            (b.recommend_chars, 10, 100),
            (b.title_chars, 5, 30),
            (b.description_chars, 10, 120),
        ] {
            assert!((min..=max).contains(&v), "{budget}: {b:?}");
        }
        if let Some(p) = previous {
            // More budget never means a shorter answer.
            assert!(
                b.content_chars() >= p.content_chars(),
                "{budget}: {p:?} -> {b:?}"
            );
        }
        // Nearly all of the budget is used unless everything is at its maximum.
        if b != AnswerBounds::MAX {
            assert!(
                budget - b.worst_case_tokens() < 3 * TOKENS_PER_CHAR,
                "{budget}: {b:?}"
            );
        }
        previous = Some(b);
    }
    assert_eq!(AnswerBounds::fitting(4096), Some(AnswerBounds::MAX));
}

#[test]
fn fitting_gives_none_for_tiny_budgets_and_min_at_the_threshold() {
    assert_eq!(AnswerBounds::fitting(0), None);
    assert_eq!(AnswerBounds::fitting(128), None);
    let threshold = AnswerBounds::MIN.worst_case_tokens();
    assert_eq!(AnswerBounds::fitting(threshold - 1), None);
    assert_eq!(AnswerBounds::fitting(threshold), Some(AnswerBounds::MIN));
}

#[test]
fn fitting_shares_the_budget_mostly_to_descriptions() {
    // The original's defaults: 1024 tokens for base-info, 512 for free-text.
    let b = AnswerBounds::fitting(1024).unwrap();
    assert!(b.description_chars > b.title_chars);
    assert!(b.description_chars >= 50, "{b:?}");
    assert!(b.worst_case_tokens() <= 1024);
    let b = AnswerBounds::fitting(512).unwrap();
    assert!(b.worst_case_tokens() <= 512);
}

#[test]
fn schema_states_the_bounds_and_exactly_three_challenges() {
    let b = AnswerBounds::MAX;
    let s = answer_schema(&b);
    assert_eq!(s["properties"]["recommend"]["maxLength"], 100);
    let challenges = &s["properties"]["challenges"];
    assert_eq!(challenges["minItems"], 3);
    assert_eq!(challenges["maxItems"], 3);
    assert_eq!(challenges["items"]["properties"]["title"]["maxLength"], 30);
    assert_eq!(challenges["items"]["properties"]["title"]["minLength"], 1);
    assert_eq!(
        challenges["items"]["properties"]["description"]["maxLength"],
        120
    );
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(challenges["items"]["additionalProperties"], false);
    assert_eq!(s["required"], json!(["recommend", "challenges"]));
}

#[test]
fn grammar_has_the_layout_the_bounds_and_only_safe_characters() {
    let b = AnswerBounds {
        recommend_chars: 41,
        title_chars: 17,
        description_chars: 73,
    };
    let g = answer_grammar(&b);
    let full = |n: usize| "가".repeat(n);
    assert!(grammar_accepts(&g, &longest_answer(&b)));
    // Each bound is exact: the longest string of each field fits, one character more does not.
    let (t, d) = (full(17), full(73));
    let at_bounds = answer_text(&full(41), [(&t, &d), ("b", "c"), ("d", "e")]);
    assert!(grammar_accepts(&g, &at_bounds));
    for over in [
        answer_text(&full(42), [("b", "c"), ("d", "e"), ("f", "g")]),
        answer_text("a", [(&full(18), "c"), ("d", "e"), ("f", "g")]),
        answer_text("a", [("b", "c"), ("d", "e"), ("f", &full(74))]),
    ] {
        assert!(!grammar_accepts(&g, &over), "accepted: {over}");
    }
    let one = answer_text("a", [("b", "c"), ("d", "e"), ("f", "g")]);
    assert!(grammar_accepts(&g, &one));
    let korean = answer_text(
        "텀블러를 써요! 50% 줄이기",
        [
            ("텀블러", "매일 #1"),
            ("장바구니", "비닐 대신"),
            ("분리수거", "주 2회"),
        ],
    );
    assert!(grammar_accepts(&g, &korean), "{korean}");
    let refused = [
        // Empty, blank-first, or holding JSON syntax.
        answer_text("", [("b", "c"), ("d", "e"), ("f", "g")]),
        answer_text(" a", [("b", "c"), ("d", "e"), ("f", "g")]),
        answer_text("\u{3000}a", [("b", "c"), ("d", "e"), ("f", "g")]),
        answer_text("a", [("b{", "c"), ("d", "e"), ("f", "g")]),
        answer_text("a\\n", [("b", "c"), ("d", "e"), ("f", "g")]),
        // Another layout.
        one.replace(", ", ","),
        one.replace("{", "{ "),
        format!("{one}\n"),
        // Two challenges.
        "{\"recommend\": \"a\", \"challenges\": [{\"title\": \"b\", \"description\": \"c\"}]}"
            .into(),
    ];
    for text in refused {
        assert!(!grammar_accepts(&g, &text), "accepted: {text}");
    }
}

/// Whether the answer grammar takes `c` in a value: as its only character (`first`) or after one.
fn takes_char(grammar: &str, c: char, first: bool) -> bool {
    let value = if first {
        c.to_string()
    } else {
        format!("a{c}")
    };
    grammar_accepts(
        grammar,
        &answer_text("a", [(&value, "c"), ("d", "e"), ("f", "g")]),
    )
}

#[test]
fn values_hold_printable_text_of_three_bytes_at_most_and_no_json_syntax() {
    let g = answer_grammar(&AnswerBounds::MAX);
    // Every printable ASCII character but the JSON syntax ones; the space only after the first.
    for c in (0x20u8..0x7f).map(char::from) {
        let syntax = "\"\\{}[]".contains(c);
        assert_eq!(takes_char(&g, c, false), !syntax, "{c:?}");
        assert_eq!(takes_char(&g, c, true), !syntax && c != ' ', "{c:?} first");
    }
    // Control characters, never; a 4-byte character (it could spend more than 3 tokens), never.
    for c in ['\n', '\t', '\u{7f}', '\u{85}', '😀', '\u{1F331}'] {
        assert!(!takes_char(&g, c, false), "{c:?}");
    }
    // Hangul, CJK and other text of the Basic Multilingual Plane.
    for c in ['가', '힣', 'ㄱ', '漢', 'é', '—', '\u{FFFD}'] {
        assert!(takes_char(&g, c, true) && takes_char(&g, c, false), "{c:?}");
    }
}

#[test]
fn the_instruction_asks_for_every_field_in_words_without_an_example_to_copy() {
    let schema = answer_schema(&AnswerBounds::MAX);
    let item = &schema["properties"]["challenges"]["items"]["properties"];
    let fields = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .chain(item.as_object().unwrap().keys());
    for field in fields {
        assert!(instruction().contains(field.as_str()), "{field}");
    }
    // No JSON to copy: no braces, no quoted values.
    assert!(
        !instruction().contains(['{', '}', '"']),
        "{}",
        instruction()
    );
}

#[test]
fn every_prompt_starts_with_the_same_instruction() {
    let cat = categories::default_category();
    let base = base_info_messages(&base_req());
    let free = free_text_messages(&[], "텀블러 챌린지 추천해줘", cat);
    let history = [Turn {
        user: "[요청]\n이전".into(),
        assistant: "{\"recommend\": \"a\"}".into(),
    }];
    let with_history = free_text_messages(&history, "다른 것도 추천해줘", cat);
    let prefix = format!("{}\n\n", instruction());
    for messages in [&base, &free, &with_history] {
        assert_eq!(messages[0].role, Role::User);
        assert!(messages[0].content.starts_with(&prefix));
        assert!(messages.iter().all(|m| m.role != Role::System));
    }
}

#[test]
fn base_info_prompt_names_location_work_type_and_category() {
    let m = base_info_messages(&base_req());
    assert_eq!(m.len(), 1);
    let text = &m[0].content;
    for part in ["도시", "사무직", "디지털 탄소"] {
        assert!(text[instruction().len()..].contains(part), "{part} missing");
    }
    assert!(!text.contains("DIGITAL_CARBON"));
    assert!(text.ends_with(&base_info_request(&base_req())));
}

#[test]
fn free_text_prompt_replays_history_and_ends_with_the_new_request() {
    let cat = categories::by_label("비건").unwrap();
    let history = vec![
        Turn {
            user: "첫 요청".into(),
            assistant: "첫 답".into(),
        },
        Turn {
            user: "둘째 요청".into(),
            assistant: "둘째 답".into(),
        },
    ];
    let m = free_text_messages(&history, "채식 챌린지 더 알려줘", cat);
    let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
    use Role::{Assistant, User};
    assert_eq!(roles, [User, Assistant, User, Assistant, User]);
    assert_eq!(m[0].content, format!("{}\n\n첫 요청", instruction()));
    assert_eq!(m[1].content, "첫 답");
    assert_eq!(m[2].content, "둘째 요청");
    assert_eq!(
        m[4].content,
        free_text_request("채식 챌린지 더 알려줘", cat)
    );
    assert!(m[4].content.contains("비건") && m[4].content.contains("채식 챌린지 더 알려줘"));
}

#[test]
fn a_turn_replayed_from_history_reproduces_its_own_prompt() {
    // Turn 1's prompt must be a prefix of turn 2's prompt (prefix caching across turns).
    let cat = categories::default_category();
    let first = free_text_messages(&[], "텀블러 챌린지 추천해줘", cat);
    let turn = Turn {
        user: free_text_request("텀블러 챌린지 추천해줘", cat),
        assistant: "답".into(),
    };
    let second = free_text_messages(std::slice::from_ref(&turn), "더 알려줘", cat);
    assert_eq!(second[0], first[0]);
    // Same for a base-info turn followed by free text.
    let base = base_info_messages(&base_req());
    let turn = Turn {
        user: base_info_request(&base_req()),
        assistant: "답".into(),
    };
    let next = free_text_messages(&[turn], "더 알려줘", cat);
    assert_eq!(next[0], base[0]);
}

/// The characters a GBNF class like `[a-z\u00A0]` admits.
fn class_chars(class: &str) -> Vec<char> {
    let body = class.strip_prefix('[').unwrap().strip_suffix(']').unwrap();
    let mut chars = Vec::new();
    let mut rest = body;
    let next = |rest: &mut &str| -> char {
        if let Some(hex) = rest.strip_prefix("\\u") {
            let c = char::from_u32(u32::from_str_radix(&hex[..4], 16).unwrap()).unwrap();
            *rest = &hex[4..];
            c
        } else {
            let c = rest.chars().next().unwrap();
            *rest = &rest[c.len_utf8()..];
            c
        }
    };
    while !rest.is_empty() {
        let from = next(&mut rest);
        if let Some(after) = rest.strip_prefix('-') {
            rest = after;
            let to = next(&mut rest);
            // A char range skips the surrogates by itself.
            chars.extend(from..=to);
        } else {
            chars.push(from);
        }
    }
    chars
}

#[test]
fn a_value_never_starts_with_whitespace_so_none_is_blank_once_trimmed() {
    let first = class_chars(FIRST_CHAR);
    let content = class_chars(CONTENT_CHAR);
    assert!(first.iter().all(|c| !c.is_whitespace()));
    // Everything else a value may hold may also begin it.
    let expected: Vec<char> = content
        .iter()
        .copied()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert_eq!(first, expected);
    assert!(first.contains(&'가') && !first.contains(&'\u{3000}') && !first.contains(&'\u{A0}'));
}

#[test]
fn a_request_value_is_never_read_as_a_template_name() {
    let cat = categories::by_label("비건").unwrap();
    let request = free_text_request("{category} 말고 {message}", cat);
    assert!(
        request.contains("사용자 메시지: {category} 말고 {message}"),
        "{request}"
    );
    assert!(request.contains("카테고리: 비건"), "{request}");
}
