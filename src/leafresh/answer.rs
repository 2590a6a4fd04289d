//! The model's final text becomes the `close` event's answer: `{recommend, challenges[3]}` with
//! the category code on every challenge.
//!
//! With the answer grammar on (the default) the text is JSON of the answer's shape: the grammar
//! admits nothing else, and the request leaves room for the longest answer it admits. So the
//! strict `serde_json` parse reads it, and no value is blank (the grammar starts each with a
//! character that is not whitespace); the checks on the values guard the other paths. Only
//! `--no-grammar` lets the model write anything else, and only then do the repairs of
//! `lenient::answer` come into play (a fenced or surrounded JSON block, trailing commas, single
//! quotes, the `1. 제목: 설명` lines a fine-tuned model writes). The OpenAI-compatible endpoints never come here: their clients get
//! the model's text as it is.

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use super::categories::Category;
use super::lenient::answer::{from_lines, json_repairs};
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
/// Strict JSON first (the trimmed text as a JSON object); then the repairs of `lenient::answer`,
/// each on top of the previous: the content of a ```` ``` ```` fenced block, the text between
/// the outermost braces, trailing commas removed, single-quoted strings turned into JSON
/// strings; finally the line format (`1. 텀블러 사용하기: 일회용 컵 대신 ...`, or `title:` /
/// `description:` lines).
/// Values are trimmed. The first 3 challenges with a non-empty title and description are kept.
pub fn parse_answer(text: &str, category: &Category) -> Result<Answer, AnswerError> {
    let raw = json_object(text.trim())
        .or_else(|| {
            json_repairs(text)
                .iter()
                .find_map(|candidate| json_object(candidate))
        })
        .map(|v| from_json(&v))
        .or_else(|| from_lines(text))
        .ok_or_else(|| AnswerError::Unparseable {
            start: text.trim().chars().take(40).collect(),
        })?;
    raw.into_answer(category)
}

/// `text` as JSON, if it is an object.
fn json_object(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
}

/// What was found, before the 3-challenge rule is applied.
#[derive(Debug, Default)]
pub(super) struct RawAnswer {
    pub(super) recommend: String,
    /// `(title, description)` as found, trimmed.
    pub(super) challenges: Vec<(String, String)>,
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

/// Shared with `lenient::answer`'s tests.
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::leafresh::categories;

    pub(in crate::leafresh) fn cat() -> &'static Category {
        categories::by_label("디지털 탄소").unwrap()
    }

    pub(in crate::leafresh) fn titles(a: &Answer) -> Vec<&str> {
        a.challenges.iter().map(|c| c.title.as_str()).collect()
    }

    pub(in crate::leafresh) const STRICT: &str = r#"{"recommend": "사무실에서 디지털 탄소를 줄여 봐요.", "challenges": [{"title": "메일함 비우기", "description": "오래된 메일을 지워요."}, {"title": "화면 밝기 낮추기", "description": "밝기를 70%로 맞춰요."}, {"title": "클라우드 정리", "description": "안 쓰는 파일을 지워요."}]}"#;

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
