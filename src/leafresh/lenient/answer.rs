//! The repairs `parse_answer` falls back on when the final text is not a JSON object, which
//! only unconstrained (`--no-grammar`) output can make it: JSON in a code fence or among prose,
//! trailing commas, single-quoted strings; and, when no repair gives a JSON object, the line
//! format a fine-tuned model writes (`1. 제목: 설명`, `title:` / `description:` lines).
//!
//! Repairs are tried after the strict parse, never instead of it, so a text that already is a
//! JSON object is read exactly as written.

use std::sync::LazyLock;

use regex::Regex;

use crate::leafresh::answer::RawAnswer;

/// The texts to try as JSON once the text itself is not, from the least to the most repaired:
/// the content of a fenced block (or the text), from its outermost braces, without trailing
/// commas, with single-quoted strings turned into JSON strings; each on top of the previous. A
/// repair that changed nothing is left out, since it would fail the same way again.
pub(in crate::leafresh) fn json_repairs(text: &str) -> Vec<String> {
    let tried = text.trim();
    let mut candidates: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if s != tried && !candidates.contains(&s) {
            candidates.push(s);
        }
    };
    let unfenced = fenced_block(text).unwrap_or(text);
    let braced = outermost_braces(unfenced).unwrap_or(unfenced).trim();
    add(braced.to_owned());
    let no_trailing_commas = TRAILING_COMMA.replace_all(braced, "$1").into_owned();
    add(no_trailing_commas.clone());
    add(single_to_double_quotes(&no_trailing_commas));
    candidates
}

static FENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)```[A-Za-z0-9_+-]*[ \t]*\r?\n?(.*?)```").expect("valid regex")
});
static TRAILING_COMMA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r",(\s*[}\]])").expect("valid regex"));

/// The content of the first ```` ``` ```` block, if any.
fn fenced_block(text: &str) -> Option<&str> {
    FENCE
        .captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

/// From the first `{` to the last `}`.
fn outermost_braces(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (start < end).then(|| &text[start..=end])
}

/// Turns `'...'` strings outside double-quoted strings into JSON strings (Python-style dicts).
fn single_to_double_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Copy a double-quoted string unchanged, escapes included.
                out.push(c);
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('\'') => out.push('\''),
                            Some(next) => {
                                out.push('\\');
                                out.push(next);
                            }
                            None => {}
                        },
                        '\'' => break,
                        '"' => out.push_str("\\\""),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

static LIST_ITEM: LazyLock<Regex> = LazyLock::new(|| {
    // `1. 제목: 설명`, `2) 제목 - 설명`, `- 제목: 설명`, with optional markdown bold.
    Regex::new(r"^\s*(?:\d+\s*[.)]|[-*•])\s*(.+?)\s*(?::|：| - | – )\s*(.+?)\s*$")
        .expect("valid regex")
});
static KEY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)^\s*(?:[-*•]\s*)?["']?(recommend|title|description|추천|제목|설명)["']?\s*[:：]\s*(.*?)\s*$"#)
        .expect("valid regex")
});

/// The line format: `key: value` lines or numbered `title: description` lines; the first other
/// line before any challenge is the recommendation. `None` when no challenge line is found.
pub(in crate::leafresh) fn from_lines(text: &str) -> Option<RawAnswer> {
    let mut raw = RawAnswer::default();
    for line in text.lines() {
        let line = line.replace("**", "");
        let line = line
            .trim()
            .trim_matches(|c| matches!(c, '`' | '"' | ',' | '{' | '}' | '[' | ']'));
        if line.is_empty() {
            continue;
        }
        if let Some(c) = KEY_LINE.captures(line) {
            let value = c[2]
                .trim_matches(|c| matches!(c, '"' | '\'' | ','))
                .trim()
                .to_owned();
            match c[1].to_lowercase().as_str() {
                "recommend" | "추천" => raw.recommend = value,
                "title" | "제목" => raw.challenges.push((value, String::new())),
                _ => match raw.challenges.last_mut() {
                    Some((_, d)) if d.is_empty() => *d = value,
                    _ => raw.challenges.push((String::new(), value)),
                },
            }
        } else if let Some(c) = LIST_ITEM.captures(line) {
            raw.challenges
                .push((c[1].trim().to_owned(), c[2].trim().to_owned()));
        } else if raw.recommend.is_empty() && raw.challenges.is_empty() {
            raw.recommend = line.to_owned();
        }
    }
    (!raw.challenges.is_empty()).then_some(raw)
}

#[cfg(test)]
mod tests {
    use crate::leafresh::answer::tests::{cat, titles, STRICT};
    use crate::leafresh::parse_answer;

    #[test]
    fn fenced_block_with_prose_around_is_repaired() {
        let text = format!("다음은 추천입니다:\n```json\n{STRICT}\n```\n즐거운 실천 되세요!");
        assert_eq!(
            parse_answer(&text, cat()).unwrap(),
            parse_answer(STRICT, cat()).unwrap()
        );
        let text = format!("물론이죠! {STRICT} 이상입니다.");
        assert_eq!(parse_answer(&text, cat()).unwrap().challenges.len(), 3);
    }

    #[test]
    fn trailing_commas_are_repaired() {
        let text = r#"{"recommend": "r", "challenges": [{"title": "a", "description": "b",}, {"title": "c", "description": "d"}, {"title": "e", "description": "f"},],}"#;
        assert_eq!(titles(&parse_answer(text, cat()).unwrap()), ["a", "c", "e"]);
    }

    #[test]
    fn single_quotes_are_repaired() {
        let text = r#"{'recommend': '텀블러를 "꼭" 써요', 'challenges': [{'title': 'a', 'description': 'it\'s b'}, {'title': 'c', 'description': 'd'}, {'title': 'e', 'description': 'f'}]}"#;
        let a = parse_answer(text, cat()).unwrap();
        assert_eq!(a.recommend, "텀블러를 \"꼭\" 써요");
        assert_eq!(a.challenges[0].description, "it's b");
    }

    #[test]
    fn numbered_title_description_lines_are_parsed() {
        let text = "환경을 위한 세 가지 챌린지를 추천해요.\n1. 텀블러 사용하기: 일회용 컵 대신 텀블러를 사용해요.\n2) **장바구니 챙기기**: 비닐봉투를 거절해요.\n- 분리수거 - 페트병 라벨을 떼서 버려요.\n";
        let a = parse_answer(text, cat()).unwrap();
        assert_eq!(a.recommend, "환경을 위한 세 가지 챌린지를 추천해요.");
        assert_eq!(
            titles(&a),
            ["텀블러 사용하기", "장바구니 챙기기", "분리수거"]
        );
        assert_eq!(
            a.challenges[0].description,
            "일회용 컵 대신 텀블러를 사용해요."
        );
        assert_eq!(a.challenges[2].description, "페트병 라벨을 떼서 버려요.");
        assert_eq!(a.challenges[2].category, "DIGITAL_CARBON");
    }

    #[test]
    fn key_value_lines_are_parsed() {
        let text = "recommend: 걸어서 출근해요.\nchallenges:\n- title: 도보 출근\n  description: 한 정거장 먼저 내려요.\n- title: 계단\n  description: 엘리베이터 대신 계단\n- 제목: 자전거\n  설명: 따릉이를 타요.";
        let a = parse_answer(text, cat()).unwrap();
        assert_eq!(a.recommend, "걸어서 출근해요.");
        assert_eq!(titles(&a), ["도보 출근", "계단", "자전거"]);
        assert_eq!(a.challenges[2].description, "따릉이를 타요.");
    }
}
