//! The model's final text becomes the `close` event's answer: `{recommend, challenges[3]}` with
//! the category code on every challenge.
//!
//! Under the grammar the text is always strict JSON of the right shape. Without it (a model or
//! setting that ignores the grammar, the OpenAI-compatible path) the text is repaired: a fenced
//! or surrounded JSON block, trailing commas, single quotes, and the `1. 제목: 설명` lines a
//! fine-tuned model writes.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use super::categories::Category;
use super::prompt::CHALLENGE_COUNT;

/// One recommended challenge, as the front end renders it (a button).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Challenge {
    pub title: String,
    pub description: String,
    /// English category code, e.g. `ZERO_WASTE`.
    pub category: String,
}

/// The `close` event's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// One sentence; empty if the model gave none (the challenges are what the app needs).
    pub recommend: String,
    /// Exactly `CHALLENGE_COUNT` challenges.
    pub challenges: Vec<Challenge>,
}

/// Why the model's text is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    /// Neither JSON (even after repairs) nor recognisable challenge lines.
    #[error("the model's answer is neither JSON nor a list of challenges (starts with {start:?})")]
    Unparseable { start: String },
    /// Parsed, but with fewer than 3 usable challenges.
    #[error("the model's answer has {usable} usable challenges, 3 are needed{}", problems_suffix(.problems))]
    TooFewChallenges {
        usable: usize,
        /// What was wrong with the unusable ones, e.g. `challenges[1].description is empty`.
        problems: Vec<String>,
    },
}

/// The problems shown in a message: the first few, then how many more (the message reaches the
/// client, and a long answer can have any number of empty challenges).
const PROBLEMS_SHOWN: usize = 3;

fn problems_suffix(problems: &[String]) -> String {
    match problems.len() {
        0 => String::new(),
        n if n <= PROBLEMS_SHOWN => format!(" ({})", problems.join("; ")),
        n => format!(
            " ({}; and {} more)",
            problems[..PROBLEMS_SHOWN].join("; "),
            n - PROBLEMS_SHOWN
        ),
    }
}

/// Parses the model's final text into an answer for `category`.
///
/// Strict JSON first; then the repairs, each applied on top of the previous: the content of a
/// ```` ``` ```` fenced block, the text between the outermost braces, trailing commas removed,
/// single-quoted strings turned into JSON strings; finally the line format
/// (`1. 텀블러 사용하기: 일회용 컵 대신 ...`, or `title:` / `description:` lines).
/// Values are trimmed. The first 3 challenges with a non-empty title and description are kept.
pub fn parse_answer(text: &str, category: &Category) -> Result<Answer, AnswerError> {
    let raw = json_candidates(text)
        .into_iter()
        .find_map(|candidate| {
            serde_json::from_str::<Value>(&candidate)
                .ok()
                .filter(Value::is_object)
        })
        .map(|v| from_json(&v))
        .or_else(|| from_lines(text))
        .ok_or_else(|| AnswerError::Unparseable {
            start: text.trim().chars().take(40).collect(),
        })?;
    raw.into_answer(category)
}

/// What was found, before the 3-challenge rule is applied.
#[derive(Debug, Default)]
struct RawAnswer {
    recommend: String,
    /// `(title, description)` as found, trimmed.
    challenges: Vec<(String, String)>,
}

impl RawAnswer {
    fn into_answer(self, category: &Category) -> Result<Answer, AnswerError> {
        let mut problems = Vec::new();
        let mut challenges = Vec::with_capacity(CHALLENGE_COUNT);
        for (i, (title, description)) in self.challenges.into_iter().enumerate() {
            if challenges.len() == CHALLENGE_COUNT {
                break;
            }
            match (title.is_empty(), description.is_empty()) {
                (false, false) => challenges.push(Challenge {
                    title,
                    description,
                    category: category.code.clone(),
                }),
                (true, true) => {
                    problems.push(format!("challenges[{i}] has no title or description"))
                }
                (true, false) => problems.push(format!("challenges[{i}].title is empty")),
                (false, true) => problems.push(format!("challenges[{i}].description is empty")),
            }
        }
        if challenges.len() < CHALLENGE_COUNT {
            return Err(AnswerError::TooFewChallenges {
                usable: challenges.len(),
                problems,
            });
        }
        Ok(Answer {
            recommend: self.recommend,
            challenges,
        })
    }
}

/// The texts to try as JSON, from the strictest to the most repaired (duplicates removed).
fn json_candidates(text: &str) -> Vec<String> {
    let mut candidates: Vec<String> = vec![text.trim().to_owned()];
    let mut add = |s: String| {
        if !candidates.contains(&s) {
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

/// Reads the answer out of a JSON object, tolerating Korean key names and a missing recommend.
fn from_json(v: &Value) -> RawAnswer {
    let text = |v: &Value, keys: &[&str]| -> String {
        keys.iter()
            .find_map(|k| v.get(*k))
            .map(|x| match x {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                // An object or array would show JSON syntax on a button: treat it as missing.
                _ => String::new(),
            })
            .unwrap_or_default()
    };
    let challenges = v
        .get("challenges")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    (
                        text(item, &["title", "제목"]),
                        text(item, &["description", "설명"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    RawAnswer {
        recommend: text(v, &["recommend", "추천"]),
        challenges,
    }
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
fn from_lines(text: &str) -> Option<RawAnswer> {
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
    use super::*;
    use crate::leafresh::categories;

    fn cat() -> &'static Category {
        categories::by_label("디지털 탄소").unwrap()
    }

    fn titles(a: &Answer) -> Vec<&str> {
        a.challenges.iter().map(|c| c.title.as_str()).collect()
    }

    const STRICT: &str = r#"{"recommend": "사무실에서 디지털 탄소를 줄여 봐요.", "challenges": [{"title": "메일함 비우기", "description": "오래된 메일을 지워요."}, {"title": "화면 밝기 낮추기", "description": "밝기를 70%로 맞춰요."}, {"title": "클라우드 정리", "description": "안 쓰는 파일을 지워요."}]}"#;

    #[test]
    fn strict_json_gives_three_challenges_with_the_category_code() {
        let a = parse_answer(STRICT, cat()).unwrap();
        assert_eq!(a.recommend, "사무실에서 디지털 탄소를 줄여 봐요.");
        assert_eq!(
            titles(&a),
            ["메일함 비우기", "화면 밝기 낮추기", "클라우드 정리"]
        );
        assert_eq!(a.challenges[1].description, "밝기를 70%로 맞춰요.");
        assert!(a.challenges.iter().all(|c| c.category == "DIGITAL_CARBON"));
        // The shape the front end reads.
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["challenges"][2]["category"], "DIGITAL_CARBON");
        assert_eq!(v["challenges"][0]["title"], "메일함 비우기");
    }

    #[test]
    fn values_are_trimmed() {
        let text = r#"{"recommend": "  한 문장 ", "challenges": [{"title": " a ", "description": " b "}, {"title": "c", "description": "d"}, {"title": "e", "description": "f\n"}]}"#;
        let a = parse_answer(text, cat()).unwrap();
        assert_eq!(a.recommend, "한 문장");
        assert_eq!(a.challenges[0].title, "a");
        assert_eq!(a.challenges[0].description, "b");
        assert_eq!(a.challenges[2].description, "f");
    }

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

    #[test]
    fn more_than_three_keeps_the_first_three() {
        let text = "1. a: b\n2. c: d\n3. e: f\n4. g: h";
        assert_eq!(titles(&parse_answer(text, cat()).unwrap()), ["a", "c", "e"]);
    }

    #[test]
    fn empty_items_are_skipped_and_reported_when_too_few_remain() {
        let text = r#"{"recommend": "r", "challenges": [{"title": "a", "description": ""}, {"title": "c", "description": "d"}, {"title": "e", "description": "f"}, {"title": "g", "description": "h"}]}"#;
        assert_eq!(titles(&parse_answer(text, cat()).unwrap()), ["c", "e", "g"]);

        let text = r#"{"recommend": "r", "challenges": [{"title": " ", "description": "b"}, {"title": "c", "description": "d"}]}"#;
        let err = parse_answer(text, cat()).unwrap_err();
        assert_eq!(
            err,
            AnswerError::TooFewChallenges {
                usable: 1,
                problems: vec!["challenges[0].title is empty".into()]
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("1 usable") && message.contains("challenges[0].title is empty"),
            "{message}"
        );
    }

    #[test]
    fn non_text_values_count_as_missing() {
        let text = r#"{"recommend": "r", "challenges": [{"title": "a", "description": {"x": 1}}, {"title": 2, "description": "d"}, {"title": "e", "description": "f"}, {"title": "g", "description": ["h"]}]}"#;
        let err = parse_answer(text, cat()).unwrap_err();
        assert_eq!(
            err,
            AnswerError::TooFewChallenges {
                usable: 2,
                problems: vec![
                    "challenges[0].description is empty".into(),
                    "challenges[3].description is empty".into()
                ]
            }
        );
    }

    #[test]
    fn missing_challenges_is_an_error_missing_recommend_is_not() {
        let err = parse_answer(r#"{"recommend": "r"}"#, cat()).unwrap_err();
        assert_eq!(
            err,
            AnswerError::TooFewChallenges {
                usable: 0,
                problems: vec![]
            }
        );
        let text = r#"{"challenges": [{"title": "a", "description": "b"}, {"title": "c", "description": "d"}, {"title": "e", "description": "f"}]}"#;
        assert_eq!(parse_answer(text, cat()).unwrap().recommend, "");
    }

    #[test]
    fn cut_off_json_is_an_error_that_says_so() {
        let cut: String = STRICT.chars().take(STRICT.chars().count() - 20).collect();
        let err = parse_answer(&cut, cat()).unwrap_err();
        assert!(matches!(err, AnswerError::Unparseable { .. }), "{err:?}");
        assert!(err.to_string().contains("neither JSON"));
        assert!(matches!(
            parse_answer("", cat()),
            Err(AnswerError::Unparseable { .. })
        ));
        assert!(matches!(
            parse_answer("그냥 문장입니다.", cat()),
            Err(AnswerError::Unparseable { .. })
        ));
    }
}
