//! The OpenAI-compatible API from the wire (the official SDK drives it in `openai_sdk`): keys,
//! errors after the stream began, and the Leafresh endpoints behind the optional key.

use serde_json::{json, Value};

use crate::support::{client, tiny_model, Service};

fn chat(service: &Service, body: &Value, key: Option<&str>) -> reqwest::blocking::Response {
    let mut request = client()
        .post(service.url("/v1/chat/completions"))
        .json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().unwrap()
}

#[test]
fn nested_control_token_spellings_in_messages_are_counted_as_plain_text() {
    let service = Service::start(&tiny_model(), &[]);
    let llama = crate::engine::llama();
    for nested in [
        "가</</s>s>나",
        "<<s>s>",
        "</s</s>>",
        "[/IN[/INST]ST]",
        "[[INST]INST]",
    ] {
        let body = json!({"model": "tiny-llama", "max_tokens": 1,
                          "messages": [{"role": "user", "content": nested}]});
        let response: Value = chat(&service, &body, None).json().unwrap();
        // `<s>[INST] {content}[/INST]`: three control tokens, and the content as plain text
        // (after `[INST]`, llama.cpp tokenizes " {content}" with a leading space of its own).
        let plain = llama
            .vocab()
            .tokenize(format!(" {nested}").as_bytes(), false, false);
        assert_eq!(
            response["usage"]["prompt_tokens"],
            3 + plain.len(),
            "{nested}: {response}"
        );
    }
}

#[test]
fn user_defined_markup_in_a_message_is_counted_as_its_characters() {
    // llama.cpp matches user-defined tokens in text even without special parsing; where the
    // template writes them as its turn markup, a message that spells one keeps its characters.
    let service = Service::start(&crate::engine::markup_model_file(), &[]);
    let count = |content: &str| -> u64 {
        let body = json!({"messages": [{"role": "user", "content": content}]});
        let response: Value = client()
            .post(service.url("/tokenize"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        response["count"].as_u64().expect("a count")
    };
    let plain = count("가나");
    for (spelled, characters) in [
        ("가<|start|>나", 9),
        ("가<|st<|start|>art|>나", 18),
        ("가<|message|><|close|>나", 22),
    ] {
        // Each character one token (SentencePiece's merges may join a few, and the text after
        // a user-defined token gets its own leading space); the markup token would be one.
        let counted = count(spelled);
        assert!(
            (plain + characters - 2..=plain + characters + 2).contains(&counted),
            "{spelled}: {counted} tokens, {plain} without the markup"
        );
    }
}

#[test]
fn the_api_key_guards_v1_and_with_the_flag_the_leafresh_endpoints() {
    let service = Service::start(
        &tiny_model(),
        &["--api-key", "s3cret", "--api-key-leafresh"],
    );
    let body = json!({"model": "tiny-llama", "messages": [{"role": "user", "content": "안녕"}], "max_tokens": 3});
    for key in [None, Some("wrong"), Some("s3cret-but-longer")] {
        let response = chat(&service, &body, key);
        assert_eq!(response.status(), 401, "{key:?}");
        let error: Value = response.json().unwrap();
        assert_eq!(error["error"]["type"], "authentication_error");
    }
    assert_eq!(chat(&service, &body, Some("s3cret")).status(), 200);
    let models = client().get(service.url("/v1/models")).send().unwrap();
    assert_eq!(models.status(), 401);

    let leafresh = service.url(
        "/ai/chatbot/recommendation/base-info?location=a&workType=b&category=%EB%B9%84%EA%B1%B4",
    );
    let refused = client().get(&leafresh).send().unwrap();
    assert_eq!(refused.status(), 401);
    let envelope: Value = refused.json().unwrap();
    assert_eq!(envelope["status"], 401);
    assert_eq!(envelope["data"], Value::Null);
    let allowed = client()
        .get(&leafresh)
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(allowed.status(), 200);
    // Health and the test page stay public.
    assert_eq!(
        client()
            .get(service.url("/health"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(client().get(service.url("/")).send().unwrap().status(), 200);
}

#[test]
fn without_the_leafresh_flag_the_key_guards_only_v1() {
    let service = Service::start(&tiny_model(), &["--api-key", "s3cret"]);
    let leafresh = service.url(
        "/ai/chatbot/recommendation/base-info?location=a&workType=b&category=%EB%B9%84%EA%B1%B4",
    );
    assert_eq!(client().get(&leafresh).send().unwrap().status(), 200);
    let models = client()
        .get(service.url("/v1/models"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(models.status(), 200);
}

#[test]
#[cfg(feature = "fault-injection")]
fn an_error_after_the_stream_began_is_a_final_error_chunk_then_done() {
    let service = Service::start(&tiny_model(), &["--debug-panic-at-step", "3"]);
    let body = json!({"model": "tiny-llama", "stream": true, "max_tokens": 50,
                      "messages": [{"role": "user", "content": "안녕하세요"}]});
    let response = chat(&service, &body, None);
    assert_eq!(response.status(), 200);
    let text = response.text().unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let error: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert!(error["error"]["message"].is_string(), "{text}");
    let first: Value = serde_json::from_str(data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
}

#[test]
fn bad_bodies_are_400_invalid_request_errors_naming_the_field() {
    let service = Service::start(&tiny_model(), &[]);
    for (body, param) in [
        ("not json", "body"),
        (r#"{"model": "tiny-llama"}"#, "messages"),
        (
            r#"{"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
            "temperature",
        ),
        (
            r#"{"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "n": 17}"#,
            "n",
        ),
    ] {
        let response = client()
            .post(service.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["param"], param, "{body}");
    }
}

#[test]
fn a_client_that_sends_our_answer_back_reuses_the_whole_previous_turn() {
    // What Open WebUI does: the next request carries the whole history, our answer included.
    let service = Service::start(&tiny_model(), &["--parallel", "1"]);
    let first = json!([{"role": "user", "content": "분리수거 팁 하나만 알려줘"}]);
    let answer: Value = chat(
        &service,
        &json!({"model": "tiny-llama", "max_tokens": 40, "temperature": 0, "messages": first}),
        None,
    )
    .json()
    .unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let (prompt, completion) = (
        answer["usage"]["prompt_tokens"].as_u64().unwrap(),
        answer["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    let history = json!([
        {"role": "user", "content": "분리수거 팁 하나만 알려줘"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "하나 더"}
    ]);
    let next: Value = chat(
        &service,
        &json!({"model": "tiny-llama", "max_tokens": 4, "messages": history}),
        None,
    )
    .json()
    .unwrap();
    let cached = next["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached + 2 >= prompt + completion,
        "cached {cached}, previous prompt {prompt} + answer {completion}: {next}"
    );
}

/// A chat template that refuses conversations the way Hugging Face templates do
/// (`raise_exception`): two user turns in a row, and any message with the word "금지".
const REFUSING_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message['role'] == 'user' and loop.previtem is defined and loop.previtem['role'] == 'user' %}\
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
{% if '금지' in message['content'] %}{{ raise_exception('금지된 단어는 받지 않습니다') }}{% endif %}\
{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}\
{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}\
{% endfor %}";

/// What the model's own template refuses is the client's request: a 400 with the template's
/// message on `/v1`, the Leafresh envelope in Korean, never a 500 logged as a fault.
#[test]
fn a_conversation_the_chat_template_refuses_is_the_clients_400_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("refusing.jinja");
    std::fs::write(&template, REFUSING_TEMPLATE).unwrap();
    let service = Service::start(
        &tiny_model(),
        &["--chat-template", template.to_str().unwrap()],
    );
    let body = json!({"model": "tiny-llama", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "안녕"},
                                   {"role": "user", "content": "또 안녕"}]});
    let response = chat(&service, &body, None);
    assert_eq!(response.status(), 400);
    let error: Value = response.json().unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("roles must alternate"), "{message}");

    let refused = client()
        .get(crate::recommend::base_info_url(
            &service,
            "s",
            "금지 구역",
            "사무직",
            "비건",
        ))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    let envelope: Value = refused.json().unwrap();
    assert_eq!(envelope["status"], 400, "{envelope}");
    let message = envelope["message"].as_str().unwrap();
    assert!(
        message.starts_with("대화 형식이 모델의 채팅 템플릿에 맞지 않습니다"),
        "{message}"
    );
    assert!(message.contains("금지된 단어는 받지 않습니다"), "{message}");
    // Alternating turns without the word pass.
    let fine = json!({"model": "tiny-llama", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "안녕"}]});
    assert_eq!(chat(&service, &fine, None).status(), 200);
    assert!(
        !service.log().contains("request failed"),
        "{}",
        service.log()
    );
}
