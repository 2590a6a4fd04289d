//! Grammar fast-forward: where an output constraint admits exactly one continuation, the engine
//! feeds its tokens in one batch. Checked on the tiny model's real vocabulary: random walks through
//! every kind of constraint the service compiles (the forced tokens are the model's own, the
//! outputs stay valid), and the service end to end (`forced_tokens` in the log line, valid
//! answers, `--no-fast-forward`).

use std::sync::Arc;

use leafresh_llm::engine::llama::guidance::{GrammarSource, Guidance};
use leafresh_llm::leafresh::{answer_grammar, AnswerBounds};
use llama_cpp_2::model::LlamaModel;
use llguidance::Matcher;
use serde_json::{json, Value};

use crate::support::{
    client, encode, get_events, logged_field, tiny_model, Service, SseEvent, SseReader,
};

/// A small random number generator (xorshift), so that a failing walk can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The schemas of the walks: nested objects, enums (Korean too), bounded arrays, numbers.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"enum": ["red", "green", "파랑"]}, "maxItems": 3}},
            "required": ["name", "age", "tags"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "location": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 8},
                "lat": {"type": "number", "minimum": -90, "maximum": 90}},
                "required": ["city", "lat"], "additionalProperties": false},
            "ok": {"type": "boolean"},
            "kind": {"const": "챌린지"}},
            "required": ["location", "ok", "kind"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 9},
            "note": {"type": "string", "maxLength": 5}},
            "required": ["id", "note"], "additionalProperties": false},
            "minItems": 1, "maxItems": 3}),
    ]
}

/// Checks that `value` is what `schema` (one of [`schemas`]) describes, by hand.
fn check_schema(index: usize, v: &Value) {
    let chars = |v: &Value| v.as_str().unwrap().chars().count();
    match index {
        0 => {
            assert!(chars(&v["name"]) <= 12, "{v}");
            assert!((0..=150).contains(&v["age"].as_i64().unwrap()), "{v}");
            let tags = v["tags"].as_array().unwrap();
            assert!(tags.len() <= 3, "{v}");
            assert!(tags
                .iter()
                .all(|t| ["red", "green", "파랑"].contains(&t.as_str().unwrap())));
            assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
        }
        1 => {
            assert!(chars(&v["location"]["city"]) <= 8, "{v}");
            assert!(v["location"]["lat"].as_f64().unwrap().abs() <= 90.0, "{v}");
            assert!(v["ok"].is_boolean(), "{v}");
            assert_eq!(v["kind"], "챌린지");
        }
        _ => {
            let items = v.as_array().unwrap();
            assert!((1..=3).contains(&items.len()), "{v}");
            for item in items {
                assert!((1..=9).contains(&item["id"].as_i64().unwrap()), "{v}");
                assert!(chars(&item["note"]) <= 5, "{v}");
            }
        }
    }
}

/// Checks a Leafresh answer strictly: three challenges, every value within its bound, none blank.
fn check_answer(b: &AnswerBounds, v: &Value) {
    let within = |v: &Value, max: usize| {
        let s = v.as_str().unwrap();
        assert!(
            !s.trim().is_empty() && s.chars().count() <= max,
            "{s:?} over {max}"
        );
    };
    within(&v["recommend"], b.recommend_chars);
    let challenges = v["challenges"].as_array().unwrap();
    assert_eq!(challenges.len(), 3);
    for c in challenges {
        within(&c["title"], b.title_chars);
        within(&c["description"], b.description_chars);
        assert_eq!(c.as_object().unwrap().len(), 2);
    }
}

/// `text` tokenized as the middle of an answer by llama.cpp's tokenizer (what the model produces
/// for it): after a newline, which stops SentencePiece adding a space before the first word.
fn model_tokens(llama: &LlamaModel, text: &[u8]) -> Vec<u32> {
    let vocab = llama.vocab();
    let newline = vocab.tokenize(b"\n", false, false);
    let mut marked = b"\n".to_vec();
    marked.extend_from_slice(text);
    let tokens = vocab.tokenize(&marked, false, false);
    assert!(tokens.starts_with(&newline), "the newline merged: {text:?}");
    tokens[newline.len()..].iter().map(|t| t.0 as u32).collect()
}

/// One random walk: a random allowed token at every free choice (the end of generation once in a
/// while where it is allowed), the forced tokens taken whenever there are any. Returns the text
/// and how many tokens were forced.
fn walk(matcher: &mut Matcher, llama: &LlamaModel, rng: &mut Rng) -> (String, usize) {
    let trie = matcher.tok_env().unwrap().tok_trie().clone();
    let eos = trie.eos_token();
    let mut tokens: Vec<u32> = Vec::new();
    let mut forced = 0;
    for _ in 0..4000 {
        if matcher.is_stopped() {
            break;
        }
        let run = matcher.consume_ff_tokens();
        if !run.is_empty() {
            let bytes = trie.decode_raw(&run);
            assert_eq!(
                run,
                model_tokens(llama, &bytes),
                "forced tokens that are not the model's own for {:?}",
                String::from_utf8_lossy(&bytes)
            );
            forced += run.len();
            tokens.extend(run);
        }
        if matcher.is_stopped() {
            break;
        }
        let mask = matcher.compute_mask().unwrap();
        if mask.is_allowed(eos) && rng.below(4) == 0 {
            break;
        }
        let allowed: Vec<u32> = (0..trie.vocab_size() as u32)
            .filter(|&t| t != eos && mask.is_allowed(t))
            .collect();
        assert!(!allowed.is_empty(), "nothing allowed after {tokens:?}");
        let token = allowed[rng.below(allowed.len())];
        matcher.consume_token(token).unwrap();
        tokens.push(token);
    }
    assert!(matcher.is_accepting().unwrap(), "the walk did not finish");
    let text = String::from_utf8(trie.decode_raw(&tokens)).expect("the output is UTF-8");
    (text, forced)
}

#[test]
fn forced_tokens_are_the_models_own_and_every_output_stays_valid() {
    let tokenizer = Arc::new(crate::engine::tokenizer());
    let llama = crate::engine::llama();
    let guidance = Guidance::new(tokenizer).expect("the constraint compiler");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let bounds = [
        AnswerBounds::MIN,
        AnswerBounds::MAX,
        AnswerBounds::fitting(400).unwrap(),
    ];
    for b in &bounds {
        let grammar = answer_grammar(b);
        let mut forced = 0;
        for seed in 0..40 {
            let mut matcher = guidance.matcher(GrammarSource::Lark(&grammar)).unwrap();
            let (text, n) = walk(&mut matcher, &llama, &mut rng);
            let answer: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("walk {seed}: {e}: {text}"));
            check_answer(b, &answer);
            forced += n;
        }
        // Keys and punctuation: at least the 13 fixed runs of every answer.
        assert!(forced >= 40 * 13, "{forced} tokens forced in 40 answers");
    }
    for (index, schema) in schemas().iter().enumerate() {
        let text = schema.to_string();
        let mut forced = 0;
        for seed in 0..60 {
            let mut matcher = guidance.matcher(GrammarSource::JsonSchema(&text)).unwrap();
            let (output, n) = walk(&mut matcher, &llama, &mut rng);
            let value: Value = serde_json::from_str(&output)
                .unwrap_or_else(|e| panic!("schema {index} walk {seed}: {e}: {output}"));
            check_schema(index, &value);
            forced += n;
        }
        assert!(
            forced > 60,
            "schema {index}: {forced} tokens forced in 60 outputs"
        );
    }
}

fn base_info_url(service: &Service, session: &str) -> String {
    service.url(&format!(
        "/ai/chatbot/recommendation/base-info?sessionId={session}&location={}&workType={}&category={}",
        encode("도시"),
        encode("사무직"),
        encode("디지털 탄소")
    ))
}

/// The `close` event's challenges of a finished base-info stream.
fn closed_challenges(events: &[SseEvent]) -> Vec<Value> {
    let close = events.last().expect("events");
    assert_eq!(close.event, "close", "{events:?}");
    close.json()["data"]["challenges"]
        .as_array()
        .expect("challenges")
        .clone()
}

#[test]
fn base_info_forces_the_keys_and_closes_with_three_challenges() {
    let service = Service::start(&tiny_model(), &[]);
    for i in 0..3 {
        let (status, _, events) = get_events(&base_info_url(&service, &format!("ff{i}")));
        assert!(status.is_success());
        assert_eq!(closed_challenges(&events).len(), 3);
    }
    let log = service.log();
    let forced = logged_field(&log, "base-info", "forced_tokens");
    let completion = logged_field(&log, "base-info", "completion_tokens");
    assert_eq!(forced.len(), 3, "{log}");
    for (f, c) in forced.iter().zip(&completion) {
        // The keys and punctuation of three challenges are well over 13 tokens; sampled text is
        // at least one token per value.
        assert!(*f >= 13 && f + 7 <= *c, "forced {f} of {c}");
    }

    let plain = Service::start(&tiny_model(), &["--no-fast-forward"]);
    let (_, _, events) = get_events(&base_info_url(&plain, "plain"));
    assert_eq!(closed_challenges(&events).len(), 3);
    assert_eq!(
        logged_field(&plain.log(), "base-info", "forced_tokens"),
        vec![0]
    );
}

fn schema_request(index: usize, stream: bool) -> Value {
    json!({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "JSON please"}],
        "max_tokens": 300,
        "stream": stream,
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "walk", "schema": schemas()[index]}},
    })
}

/// The text of a streamed chat completion.
fn streamed_content(response: reqwest::blocking::Response) -> String {
    let mut reader = SseReader::new(response);
    let mut text = String::new();
    while let Some(event) = reader.next_event() {
        if event.raw == "[DONE]" {
            break;
        }
        if let Some(piece) = event.json()["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    text
}

#[test]
fn json_schema_answers_are_valid_with_forced_tokens_streamed_or_not() {
    let service = Service::start(&tiny_model(), &[]);
    let http = client();
    for index in 0..schemas().len() {
        let body: Value = http
            .post(service.url("/v1/chat/completions"))
            .json(&schema_request(index, false))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        check_schema(index, &serde_json::from_str(content).expect(content));
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");

        let response = http
            .post(service.url("/v1/chat/completions"))
            .json(&schema_request(index, true))
            .send()
            .unwrap();
        let content = streamed_content(response);
        check_schema(index, &serde_json::from_str(&content).expect(&content));
    }
    let forced = logged_field(&service.log(), "chat-completions", "forced_tokens");
    assert_eq!(forced.len(), 6);
    assert!(forced.iter().all(|&f| f > 0), "{forced:?}");
}

#[test]
fn forced_runs_longer_than_the_batch_room_wait_their_turn() {
    // Eight slots and the smallest batch, 32 tokens: forced runs of several tokens each leave the
    // others little or no room at a step, so runs are split across steps.
    let service = Service::start(&tiny_model(), &["--parallel", "8", "--batch-size", "32"]);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let url = service.url("/v1/chat/completions");
            std::thread::spawn(move || {
                let body: Value = client()
                    .post(url)
                    .json(&schema_request(i % 3, false))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                let content = body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                check_schema(i % 3, &serde_json::from_str(&content).expect(&content));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a valid answer");
    }
    let forced = logged_field(&service.log(), "chat-completions", "forced_tokens");
    assert_eq!(forced.len(), 8);
}
