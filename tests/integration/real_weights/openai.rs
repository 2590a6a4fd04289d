//! `/v1/chat/completions` on real weights: readable Korean streamed and not, answers valid under a
//! `json_schema`, stop strings (Korean ones included) that cut the answer where they begin.

use serde_json::{json, Value};

use super::{assert_readable, model_id, start};
use crate::support::{client, Service, SseReader};

const QUESTIONS: [&str; 3] = [
    "분리수거를 잘하는 방법을 알려줘.",
    "집에서 전기를 아끼는 습관 세 가지는?",
    "플로깅이 뭐야? 짧게 설명해 줘.",
];

fn post(service: &Service, body: &Value) -> reqwest::blocking::Response {
    client()
        .post(service.url("/v1/chat/completions"))
        .json(body)
        .send()
        .unwrap()
}

fn complete(service: &Service, body: &Value) -> Value {
    let response = post(service, body);
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

/// The content and the finish reason of a streamed completion; each delta is readable on its own.
fn stream(service: &Service, body: &Value) -> (String, String) {
    let response = post(service, body);
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    let (mut text, mut finish) = (String::new(), String::new());
    while let Some(event) = reader.next_event() {
        if event.raw == "[DONE]" {
            return (text, finish);
        }
        let chunk = event.json();
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            assert_readable(piece);
            text.push_str(piece);
        }
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
    }
    panic!("the stream ended without [DONE] after {text:?}");
}

/// The greedy answer to `body`, from a slot in the state every later identical request finds.
///
/// Greedy decoding is reproducible only for the same computation: a prompt computed in one batch
/// and the same prompt found cached (its last token computed alone) give logits that differ in
/// the last bits (llama.cpp's CPU kernels differ by batch size), enough to flip a near tie. So the
/// first request leaves the prompt in the slot, and the answer compared is the second one's.
fn reproducible_answer(service: &Service, body: &Value) -> Value {
    complete(service, body);
    complete(service, body)
}

#[test]
fn answers_streamed_and_not_are_readable_and_agree_under_greedy_decoding() {
    let service = start(&["--parallel", "1"]);
    let model = model_id(&service);
    for question in QUESTIONS {
        let body = json!({
            "model": model, "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": question}],
        });
        let whole = reproducible_answer(&service, &body);
        let content = whole["choices"][0]["message"]["content"].as_str().unwrap();
        assert_readable(content);
        assert!(!content.trim().is_empty(), "{whole}");
        assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() > 0);

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let (text, finish) = stream(&service, &streamed);
        assert_eq!(text, content, "the same greedy answer streamed and not");
        assert_eq!(
            finish,
            whole["choices"][0]["finish_reason"].as_str().unwrap()
        );
    }
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "difficulty": {"enum": ["쉬움", "보통", "어려움"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 30}
        },
        "required": ["title", "difficulty", "days"],
        "additionalProperties": false
    })
}

fn assert_matches_schema(content: &str) {
    let answer: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    let object = answer.as_object().expect(content);
    assert_eq!(object.len(), 3, "{content}");
    assert!(
        object["title"].as_str().unwrap().chars().count() <= 40,
        "{content}"
    );
    assert!(["쉬움", "보통", "어려움"].contains(&object["difficulty"].as_str().unwrap()));
    assert!(
        (1..=30).contains(&object["days"].as_i64().unwrap()),
        "{content}"
    );
    assert_readable(content);
}

#[test]
fn json_schema_answers_are_valid_streamed_or_not() {
    let service = start(&[]);
    let model = model_id(&service);
    for (seed, question) in QUESTIONS.iter().enumerate() {
        let body = json!({
            "model": model, "max_tokens": 120, "seed": seed,
            "messages": [{"role": "user", "content": format!("{question} 챌린지 하나를 JSON으로.")}],
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "challenge", "schema": schema()}},
        });
        let whole = complete(&service, &body);
        assert_eq!(whole["choices"][0]["finish_reason"], "stop", "{whole}");
        assert_matches_schema(whole["choices"][0]["message"]["content"].as_str().unwrap());

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let (text, finish) = stream(&service, &streamed);
        assert_eq!(finish, "stop", "{text}");
        assert_matches_schema(&text);
    }
}

/// A stop string taken from the middle of `text`, and the byte where it begins: its first
/// occurrence, a few characters long, not at the start.
fn pick_stop(text: &str) -> Option<(String, usize)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end = chars.len().saturating_sub(3);
    // From a third of the way in, then from the start: a base model's answer may repeat itself.
    (chars.len() / 3..end)
        .chain(1..chars.len() / 3)
        .find_map(|i| {
            let (start, end) = (chars[i].0, chars[i + 3].0);
            let stop = &text[start..end];
            (!stop.trim().is_empty() && text.find(stop) == Some(start))
                .then(|| (stop.to_owned(), start))
        })
}

#[test]
fn a_stop_string_cuts_the_answer_where_it_begins() {
    let service = start(&["--parallel", "1"]);
    let model = model_id(&service);
    for question in QUESTIONS {
        let body = json!({
            "model": model, "max_tokens": 40, "temperature": 0,
            "messages": [{"role": "user", "content": question}],
        });
        let whole = reproducible_answer(&service, &body);
        let full = whole["choices"][0]["message"]["content"].as_str().unwrap();
        let Some((stop, at)) = pick_stop(full) else {
            panic!("no usable stop string in {full:?}");
        };
        let mut cut = body.clone();
        cut["stop"] = json!(["@@never-seen@@", stop]);
        let answer = complete(&service, &cut);
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            full[..at],
            "stop {stop:?}"
        );
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");

        cut["stream"] = json!(true);
        let (text, finish) = stream(&service, &cut);
        assert_eq!(text, full[..at], "streamed, stop {stop:?}");
        assert_eq!(finish, "stop");
    }
}

/// The host work beside the decode (`--step-overlap on`: the text sent and the constraint's masks
/// computed on a second thread) changes nothing a client gets: the same seeded answers, free and
/// under a schema (where a refused token is sampled again with the mask computed ahead).
#[test]
fn the_step_overlap_gives_the_same_answers() {
    let answers = |overlap: &str| -> Vec<Value> {
        let service = start(&[
            "--parallel",
            "1",
            "--threads",
            "2",
            "--step-overlap",
            overlap,
        ]);
        let model = model_id(&service);
        let mut answers = Vec::new();
        for (seed, question) in QUESTIONS.iter().enumerate() {
            let free = json!({
                "model": model, "max_tokens": 48, "seed": seed, "repeat_penalty": 1.1,
                "messages": [{"role": "user", "content": question}],
            });
            let constrained = json!({
                "model": model, "max_tokens": 120, "seed": seed,
                "messages": [{"role": "user", "content": format!("{question} 챌린지 하나를 JSON으로.")}],
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "challenge", "schema": schema()}},
            });
            for body in [free, constrained] {
                let answer = reproducible_answer(&service, &body);
                answers.push(answer["choices"][0]["message"]["content"].clone());
            }
        }
        answers
    };
    let with = answers("on");
    assert!(
        with.iter()
            .all(|a| a.as_str().is_some_and(|t| !t.is_empty())),
        "{with:?}"
    );
    assert_eq!(with, answers("off"));
}
