//! The previous turn reused whole: every follow-up finds at least `prompt(N) + completion(N) - 2`
//! of its tokens cached, in Leafresh sessions (after a base-info and after a free-text turn) and
//! in `/v1` conversations where the client sends our answer back as text; with fast-forward on
//! and off; on the real model (sliding-window attention) and on the synthetic one. Many seeded
//! conversations, two at a time on two slots, so that each must find its own slot again.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::model_id;
use crate::recommend::{base_info_url, free_text_url};
use crate::support::{client, get_events, real_model, tiny_model, Service, REAL_MODEL_TEMPLATE};

/// What the service logged about one finished generation.
#[derive(Debug, Clone, Copy)]
struct Turn {
    prompt: usize,
    cached: usize,
    completion: usize,
}

impl Turn {
    /// The `count`-th `request finished` line of the log (from 1).
    fn logged(service: &Service, count: usize) -> Turn {
        assert!(
            service.wait_for_log("request finished", count, Duration::from_secs(10)),
            "{}",
            service.log()
        );
        let log = service.log();
        let line = log
            .lines()
            .filter(|l| l.contains("request finished"))
            .nth(count - 1)
            .unwrap();
        let field = |name: &str| -> usize {
            let rest = line.split(&format!(" {name}=")).nth(1).expect(line);
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .expect(line)
        };
        Turn {
            prompt: field("prompt_tokens"),
            cached: field("cached_tokens"),
            completion: field("completion_tokens"),
        }
    }

    fn from_usage(usage: &Value) -> Turn {
        let count = |v: &Value| v.as_u64().unwrap() as usize;
        Turn {
            prompt: count(&usage["prompt_tokens"]),
            cached: count(&usage["prompt_tokens_details"]["cached_tokens"]),
            completion: count(&usage["completion_tokens"]),
        }
    }
}

/// Asserts that `next` found the whole of `previous` (prompt and answer) cached; the last two
/// tokens of an answer may be re-read (the end-of-turn token the template spells its own way).
fn assert_reused(previous: Turn, next: Turn, what: &str) {
    assert!(
        next.cached + 2 >= previous.prompt + previous.completion,
        "{what}: cached {} of {} after {}+{}",
        next.cached,
        next.prompt,
        previous.prompt,
        previous.completion
    );
}

/// A small deterministic generator, so that every run sends the same conversations.
struct Seeded(u64);

impl Seeded {
    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        choices[(self.0 % choices.len() as u64) as usize]
    }
}

const LOCATIONS: [&str; 5] = ["도시", "농촌", "바닷가 마을", "산간 지역", "대학가"];
const WORK_TYPES: [&str; 4] = ["사무직", "학생", "자영업", "프리랜서"];
const CATEGORIES: [&str; 5] = ["제로웨이스트", "플로깅", "비건", "에너지 절약", "업사이클"];
const MESSAGES: [&str; 6] = [
    "텀블러 쓰는 챌린지 추천해줘",
    "더 쉬운 챌린지로 부탁해",
    "회사에서 할 수 있는 환경 챌린지로 바꿔줘",
    "주말에 가족과 함께 할 만한 친환경 활동은?",
    "비용이 들지 않는 챌린지 알려줘",
    "조금 더 도전적인 걸로 추천해줘",
];

/// Seeded Leafresh sessions of three turns, two at a time: even seeds open with base-info,
/// odd ones with free text; the follow-ups are free text.
fn leafresh_sessions_reuse_the_previous_turn(model: &Path, extra: &[&str], seeds: u64) {
    let mut args = vec!["--parallel", "2"];
    args.extend_from_slice(extra);
    let service = Service::start(model, &args);
    let mut finished = 0;
    for pair in (0..seeds).step_by(2) {
        let mut previous: [Option<Turn>; 2] = [None, None];
        let mut random = [Seeded(pair * 7919 + 1), Seeded(pair * 7919 + 2)];
        for step in 0..3 {
            for lane in 0..2 {
                let seed = pair + lane as u64;
                let session = format!("reuse-{seed}");
                let random = &mut random[lane];
                let url = if step == 0 && seed.is_multiple_of(2) {
                    let (location, work, category) = (
                        random.pick(&LOCATIONS),
                        random.pick(&WORK_TYPES),
                        random.pick(&CATEGORIES),
                    );
                    base_info_url(&service, &session, location, work, category)
                } else {
                    free_text_url(&service, &session, random.pick(&MESSAGES))
                };
                let (status, _, events) = get_events(&url);
                assert_eq!(status, 200);
                assert_eq!(events.last().unwrap().event, "close", "{events:?}");
                finished += 1;
                let turn = Turn::logged(&service, finished);
                if let Some(previous) = previous[lane] {
                    assert_reused(
                        previous,
                        turn,
                        &format!("session {seed}, turn {}", step + 1),
                    );
                }
                previous[lane] = Some(turn);
            }
        }
    }
}

/// Seeded `/v1` conversations of three turns, two at a time: the client sends our answer back
/// as text, as Open WebUI does.
fn chat_conversations_reuse_the_previous_turn(model: &Path, extra: &[&str], seeds: u64) {
    let mut args = vec!["--parallel", "2"];
    args.extend_from_slice(extra);
    let service = Service::start(model, &args);
    let id = model_id(&service);
    for pair in (0..seeds).step_by(2) {
        let mut histories: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
        let mut previous: [Option<Turn>; 2] = [None, None];
        let mut random = [Seeded(pair * 104_729 + 1), Seeded(pair * 104_729 + 2)];
        for step in 0..3 {
            for lane in 0..2 {
                let seed = pair + lane as u64;
                let history = &mut histories[lane];
                history.push(json!({"role": "user", "content": random[lane].pick(&MESSAGES)}));
                let answer: Value = client()
                    .post(service.url("/v1/chat/completions"))
                    .json(
                        &json!({"model": id, "max_tokens": 40, "seed": seed, "messages": history}),
                    )
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                let text = answer["choices"][0]["message"]["content"]
                    .as_str()
                    .expect("an answer");
                history.push(json!({"role": "assistant", "content": text}));
                let turn = Turn::from_usage(&answer["usage"]);
                if let Some(previous) = previous[lane] {
                    let what = format!("conversation {seed}, turn {}: {history:?}", step + 1);
                    assert_reused(previous, turn, &what);
                }
                previous[lane] = Some(turn);
            }
        }
    }
}

/// A piece of `text`'s second half (2 to 6 characters, not blank) whose first occurrence is
/// there: a stop string that cuts the answer in its second half.
fn stop_in_second_half(text: &str) -> Option<String> {
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    for len in 2..=6 {
        for (k, &start) in starts.iter().enumerate().skip(starts.len() / 2) {
            let Some(&end) = starts.get(k + len) else {
                break;
            };
            let piece = &text[start..end];
            if !piece.trim().is_empty() && text.find(piece) == Some(start) {
                return Some(piece.to_owned());
            }
        }
    }
    None
}

/// Where a stop string cuts the answers of [`answers_cut_by_a_stop_string_are_reused_as_received`].
enum Cut {
    /// This string (frequent in the model's answers).
    At(&'static str),
    /// A piece of the answer's second half, found by asking without a stop first (the same
    /// greedy answer comes again where the prompt's logits do not change with the cache).
    SecondHalf,
}

/// `/v1` conversations whose first answer a stop string cuts (the end of generation is barred
/// with `logit_bias`, so a `stop` finish is the cut): the follow-up that sends back the answer the
/// client received finds that answer's tokens cached up to the cut, not only the prompt.
fn answers_cut_by_a_stop_string_are_reused_as_received(
    model: &Path,
    extra: &[&str],
    no_end: Value,
    cut_at: Cut,
    seeds: u64,
) {
    let service = Service::start(model, extra);
    let id = model_id(&service);
    let mut checked = 0;
    for seed in 0..seeds {
        let asked = format!("{} ({seed})", MESSAGES[seed as usize % MESSAGES.len()]);
        let question = json!([{"role": "user", "content": asked}]);
        let ask = |stop: Option<&str>| -> Value {
            let mut body = json!({"model": id, "max_tokens": 40, "temperature": 0,
                                  "logit_bias": no_end, "messages": question});
            if let Some(stop) = stop {
                body["stop"] = json!([stop]);
            }
            client()
                .post(service.url("/v1/chat/completions"))
                .json(&body)
                .send()
                .unwrap()
                .json()
                .unwrap()
        };
        let stop = match cut_at {
            Cut::At(stop) => stop.to_owned(),
            Cut::SecondHalf => {
                let whole = ask(None);
                let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
                match stop_in_second_half(text) {
                    Some(stop) => stop,
                    None => continue,
                }
            }
        };
        let cut = ask(Some(&stop));
        let first = Turn::from_usage(&cut["usage"]);
        // Only an answer the stop string cut, after a few tokens.
        if cut["choices"][0]["finish_reason"] != "stop" || first.completion < 6 {
            continue;
        }
        let received = cut["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(!received.contains(&stop));
        let mut history = question.as_array().unwrap().clone();
        history.push(json!({"role": "assistant", "content": received}));
        history.push(json!({"role": "user", "content": "고마워요"}));
        let next: Value = client()
            .post(service.url("/v1/chat/completions"))
            .json(&json!({"model": id, "max_tokens": 4, "seed": seed, "messages": history}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let next = Turn::from_usage(&next["usage"]);
        // Everything generated before the cut, but the token the cut split (and the stop's own).
        assert!(
            next.cached + 3 >= first.prompt + first.completion,
            "seed {seed}: cached {} after {}+{} (cut at {stop:?})",
            next.cached,
            first.prompt,
            first.completion
        );
        checked += 1;
    }
    assert!(
        checked * 2 >= seeds as usize,
        "only {checked} of {seeds} answers were cut after 6 tokens or more"
    );
}

fn real() -> (std::path::PathBuf, Vec<&'static str>) {
    (real_model(), REAL_MODEL_TEMPLATE.to_vec())
}

#[test]
fn leafresh_follow_ups_reuse_the_whole_previous_turn_on_real_weights() {
    let (model, template) = real();
    leafresh_sessions_reuse_the_previous_turn(&model, &template, 4);
    let mut plain = template.clone();
    plain.push("--no-fast-forward");
    leafresh_sessions_reuse_the_previous_turn(&model, &plain, 4);
}

#[test]
fn chat_follow_ups_reuse_the_whole_previous_turn_on_real_weights() {
    let (model, template) = real();
    chat_conversations_reuse_the_previous_turn(&model, &template, 4);
}

#[test]
fn leafresh_follow_ups_reuse_the_whole_previous_turn_on_the_synthetic_model() {
    leafresh_sessions_reuse_the_previous_turn(&tiny_model(), &[], 10);
    leafresh_sessions_reuse_the_previous_turn(&tiny_model(), &["--no-fast-forward"], 10);
}

#[test]
fn chat_follow_ups_reuse_the_whole_previous_turn_on_the_synthetic_model() {
    chat_conversations_reuse_the_previous_turn(&tiny_model(), &[], 10);
}

#[test]
fn answers_cut_by_a_stop_string_are_reused_on_real_weights() {
    let (model, template) = real();
    // Gemma's end-of-generation tokens barred; its answers hold line breaks.
    let no_end = json!({"1": -100, "106": -100, "212": -100});
    answers_cut_by_a_stop_string_are_reused_as_received(
        &model,
        &template,
        no_end,
        Cut::At("\n"),
        8,
    );
}

#[test]
fn answers_cut_by_a_stop_string_are_reused_on_the_synthetic_model() {
    let no_end = json!({"2": -100});
    answers_cut_by_a_stop_string_are_reused_as_received(
        &tiny_model(),
        &[],
        no_end,
        Cut::SecondHalf,
        12,
    );
}
