//! The protocols beside chat completions, from the wire (the client libraries drive them in
//! `clients`): `/v1/completions`, log probabilities, `n` choices sharing the prompt, the
//! Responses API with its store, Anthropic's Messages API, and OpenAI's shape for every other
//! `/v1` path. On the synthetic model: shapes, counts, determinism, never what the text says.

use serde_json::{json, Value};

use crate::support::{client, model_id, slow_model, tiny_model, Service, SseReader};

fn post(service: &Service, path: &str, body: &Value) -> reqwest::blocking::Response {
    client().post(service.url(path)).json(body).send().unwrap()
}

fn post_json(service: &Service, path: &str, body: &Value) -> Value {
    let response = post(service, path, body);
    assert_eq!(response.status(), 200, "{path}: {}", service.log());
    response.json().unwrap()
}

/// The `(event name, data)` of a stream.
fn events(response: reqwest::blocking::Response) -> Vec<(String, String)> {
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    while let Some(event) = reader.next_event() {
        events.push((event.event.clone(), event.raw.clone()));
    }
    events
}

/// The choices of a request texts, by index.
fn choice_texts(answer: &Value) -> Vec<String> {
    answer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = c["message"]["content"].as_str().or(c["text"].as_str());
            text.unwrap().to_owned()
        })
        .collect()
}

/// With one slot every request's cells lie where the last one's did, so a seeded request is
/// computed alike and answered alike (with several slots a seed is a best effort: README).
#[test]
fn with_one_slot_a_seeded_request_repeats_its_choices() {
    let service = Service::start(&slow_model(), &["--parallel", "1"]);
    let id = model_id(&service);
    let chat = json!({"model": id, "n": 3, "max_tokens": 12, "seed": 7, "temperature": 1.0,
                      "messages": [{"role": "user", "content": "텀블러 챌린지"}]});
    let completion = json!({"model": id, "max_tokens": 12, "seed": 7, "temperature": 1.0,
                            "top_p": 0.9, "prompt": "분리수거를 잘 하려면"});
    for (path, body) in [
        ("/v1/chat/completions", chat),
        ("/v1/completions", completion),
    ] {
        let first = choice_texts(&post_json(&service, path, &body));
        for _ in 0..2 {
            assert_eq!(
                choice_texts(&post_json(&service, path, &body)),
                first,
                "{path}"
            );
        }
        let mut other = body.clone();
        other["seed"] = json!(8);
        assert_ne!(
            choice_texts(&post_json(&service, path, &other)),
            first,
            "{path}"
        );
    }
}

#[test]
fn completions_take_text_token_ids_and_lists_and_echo_and_stream() {
    let service = Service::start(&tiny_model(), &[]);
    let id = model_id(&service);
    let text = post_json(
        &service,
        "/v1/completions",
        &json!({"model": id, "prompt": "옛날 옛적에", "max_tokens": 5, "seed": 3}),
    );
    assert_eq!(text["object"], "text_completion");
    assert_eq!(text["choices"][0]["index"], 0);
    assert!(text["usage"]["prompt_tokens"].as_u64().unwrap() > 1);
    assert!(text["usage"]["completion_tokens"].as_u64().unwrap() <= 5);
    // Greedy: the same prompt gives the same text; echo puts the prompt first.
    let greedy = json!({"model": id, "prompt": "옛날 옛적에", "max_tokens": 6, "temperature": 0});
    let first = post_json(&service, "/v1/completions", &greedy);
    let mut echo = greedy.clone();
    echo["echo"] = json!(true);
    let echoed = post_json(&service, "/v1/completions", &echo);
    assert_eq!(
        echoed["choices"][0]["text"].as_str().unwrap(),
        format!(
            "옛날 옛적에{}",
            first["choices"][0]["text"].as_str().unwrap()
        )
    );
    // Token ids, and a list of prompts: a choice each, the prompts counted once each.
    let ids = post_json(
        &service,
        "/v1/completions",
        &json!({"model": id, "prompt": [[1, 500, 900], [1, 77]], "max_tokens": 3}),
    );
    assert_eq!(ids["choices"].as_array().unwrap().len(), 2);
    assert_eq!(ids["usage"]["prompt_tokens"], 5);
    // An id outside the vocabulary, fill-in-the-middle on a model without FIM tokens: 400s.
    for (body, param) in [
        (json!({"model": id, "prompt": [1, 99_999_999]}), None),
        (
            json!({"model": id, "prompt": "def f(", "suffix": "):"}),
            None,
        ),
        (
            json!({"model": id, "prompt": [1], "echo": true}),
            Some("echo"),
        ),
    ] {
        let response = post(&service, "/v1/completions", &body);
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        if let Some(param) = param {
            assert_eq!(error["error"]["param"], param);
        }
    }
    // Streamed: text_completion chunks, a finish, the usage, [DONE].
    let mut streamed = greedy.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let data: Vec<String> = events(post(&service, "/v1/completions", &streamed))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|c| c["text"].as_str()))
        .collect();
    assert_eq!(text, first["choices"][0]["text"].as_str().unwrap());
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
    assert!(
        chunks.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn log_probabilities_come_from_the_models_distribution_streamed_and_not() {
    let service = Service::start(&tiny_model(), &[]);
    let id = model_id(&service);
    let body = json!({"model": id, "max_tokens": 8, "temperature": 0, "logprobs": true,
                      "top_logprobs": 3, "messages": [{"role": "user", "content": "안녕"}]});
    let whole = post_json(&service, "/v1/chat/completions", &body);
    let content = whole["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        content.len() as u64,
        whole["usage"]["completion_tokens"].as_u64().unwrap(),
        "{whole}"
    );
    for token in &content {
        let logprob = token["logprob"].as_f64().unwrap();
        let top = token["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!(logprob <= 0.0);
        // Greedy decoding chose the most likely token: it is the first alternative.
        assert_eq!(top[0]["bytes"], token["bytes"], "{token}");
        assert!((top[0]["logprob"].as_f64().unwrap() - logprob).abs() < 1e-4);
        let ordered = top
            .windows(2)
            .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64());
        assert!(ordered, "{top:?}");
        let probability: f64 = top
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap().exp())
            .sum();
        assert!(probability <= 1.0 + 1e-4);
    }
    // Streamed: the same tokens, each chunk carrying its own.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let chunks: Vec<Value> = events(post(&service, "/v1/chat/completions", &streamed))
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    let streamed_tokens: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .map(|t| t["bytes"].clone())
        .collect();
    let whole_tokens: Vec<Value> = content.iter().map(|t| t["bytes"].clone()).collect();
    assert_eq!(streamed_tokens, whole_tokens);
    // Without `logprobs` there are none, and `top_logprobs` alone is refused.
    let plain = json!({"model": id, "max_tokens": 4,
                       "messages": [{"role": "user", "content": "안녕"}]});
    assert!(
        post_json(&service, "/v1/chat/completions", &plain)["choices"][0]["logprobs"].is_null()
    );
    let mut refused = plain.clone();
    refused["top_logprobs"] = json!(2);
    assert_eq!(
        post(&service, "/v1/chat/completions", &refused).status(),
        400
    );
}

#[test]
fn n_choices_share_the_prompts_computation_and_seeded_choices_differ() {
    let service = Service::start(&slow_model(), &["--parallel", "4", "--log-level", "trace"]);
    let id = model_id(&service);
    let long = "텀블러와 장바구니를 챙기는 습관에 대해 자세히 알려 주세요. ".repeat(12);
    let body = json!({"model": id, "n": 4, "max_tokens": 12, "seed": 42, "temperature": 1.0,
                      "messages": [{"role": "user", "content": long}]});
    // The steps before the request (the warm-up of the recommendation prompt) are not counted.
    let logged_before = service.log().len();
    let answer = post_json(&service, "/v1/chat/completions", &body);
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    let indices: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert!(
        texts.windows(2).any(|w| w[0] != w[1]),
        "seeded choices differ: {texts:?}"
    );
    let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((4..=4 * 12).contains(&completion));
    // The prompt went through llama_decode once (the choices copy its cells and compute only
    // its last token): every decoded token, summed over the steps the log traces.
    let decoded: u64 = service.log()[logged_before..]
        .lines()
        .filter(|l| l.contains("decode step"))
        .filter_map(|l| {
            l.split(" tokens=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        decoded < 2 * prompt + completion + 8,
        "decoded {decoded} tokens for a {prompt}-token prompt and {completion} new"
    );
    // Streamed: every choice's chunks carry its index, each choice finishes.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let finished: Vec<u64> = events(post(&service, "/v1/chat/completions", &streamed))
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str::<Value>(&d).unwrap())
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    let mut sorted = finished.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3]);
}

#[test]
fn responses_answer_stream_store_and_continue_a_conversation() {
    let service = Service::start(&tiny_model(), &[]);
    let id = model_id(&service);
    let first = post_json(
        &service,
        "/v1/responses",
        &json!({"model": id, "input": "안녕하세요", "max_output_tokens": 6}),
    );
    assert_eq!(first["object"], "response");
    assert!(matches!(
        first["status"].as_str(),
        Some("completed" | "incomplete")
    ));
    assert_eq!(first["output"][0]["type"], "message");
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    let stored = client()
        .get(service.url(&format!("/v1/responses/{}", first["id"].as_str().unwrap())))
        .send()
        .unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.json::<Value>().unwrap()["id"], first["id"]);
    // The follow-up continues the stored conversation: its prompt holds the first turn, whose
    // cells it finds cached.
    let next = post_json(
        &service,
        "/v1/responses",
        &json!({"model": id, "input": "더 알려 주세요", "previous_response_id": first["id"],
                "max_output_tokens": 4}),
    );
    let first_prompt = first["usage"]["input_tokens"].as_u64().unwrap();
    assert!(next["usage"]["input_tokens"].as_u64().unwrap() > first_prompt);
    assert!(
        next["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            >= first_prompt - 4,
        "{next}"
    );
    // A missing id: 404 in OpenAI's shape.
    let missing = post(
        &service,
        "/v1/responses",
        &json!({"model": id, "input": "a", "previous_response_id": "resp_nope"}),
    );
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().unwrap()["error"]["type"],
        "invalid_request_error"
    );
    // Streamed: the event sequence, numbered.
    let stream = events(post(
        &service,
        "/v1/responses",
        &json!({"model": id, "input": "안녕", "max_output_tokens": 5, "stream": true}),
    ));
    let kinds: Vec<&str> = stream.iter().map(|(event, _)| event.as_str()).collect();
    assert_eq!(&kinds[..2], ["response.created", "response.in_progress"]);
    assert!(kinds.contains(&"response.output_item.added"));
    assert!(kinds.contains(&"response.output_text.done"));
    assert!(matches!(
        kinds.last(),
        Some(&("response.completed" | "response.incomplete"))
    ));
    let numbers: Vec<u64> = stream
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
}

#[test]
fn responses_make_a_required_function_call_and_take_its_output() {
    let service = Service::start(&tiny_model(), &[]);
    let id = model_id(&service);
    let tools = json!([{"type": "function", "name": "get_weather", "description": "날씨",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "enum": ["서울", "부산"]}},
                       "required": ["city"]}}]);
    // Random weights: the enum keeps the arguments within the budget.
    let called = post_json(
        &service,
        "/v1/responses",
        &json!({"model": id, "input": "서울 날씨?", "tools": tools, "tool_choice": "required",
                "max_output_tokens": 200}),
    );
    let call = called["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "function_call")
        .unwrap_or_else(|| panic!("a function_call item: {called}"))
        .clone();
    assert_eq!(call["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(
        matches!(arguments["city"].as_str(), Some("서울" | "부산")),
        "{arguments}"
    );
    let next = post_json(
        &service,
        "/v1/responses",
        &json!({"model": id, "previous_response_id": called["id"], "tools": tools,
                "max_output_tokens": 6,
                "input": [{"type": "function_call_output", "call_id": call["call_id"],
                           "output": "맑음, 21도"}]}),
    );
    assert_eq!(next["object"], "response");
}

#[test]
fn anthropic_messages_answer_stream_count_and_fail_in_their_shape() {
    let service = Service::start(&tiny_model(), &["--api-key", "k-123"]);
    // Anthropic's clients send the key as `x-api-key`, on every path.
    let models: Value = client()
        .get(service.url("/v1/models"))
        .header("x-api-key", "k-123")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = models["data"][0]["id"].as_str().unwrap().to_owned();
    let post_with_key = |path: &str, body: &Value| {
        client()
            .post(service.url(path))
            .header("x-api-key", "k-123")
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .unwrap()
    };
    let body = json!({"model": id, "max_tokens": 6, "system": "짧게",
                      "messages": [{"role": "user", "content": "안녕"}]});
    let message: Value = post_with_key("/v1/messages", &body).json().unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0]["type"], "text");
    assert!(matches!(
        message["stop_reason"].as_str(),
        Some("end_turn" | "max_tokens")
    ));
    let counted: Value = post_with_key("/v1/messages/count_tokens", &body)
        .json()
        .unwrap();
    assert_eq!(counted["input_tokens"], message["usage"]["input_tokens"]);
    // Streamed: message_start, blocks, message_delta, message_stop.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let names: Vec<String> = events(post_with_key("/v1/messages", &streamed))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert!(names.iter().any(|n| n == "content_block_start"));
    assert!(names.iter().any(|n| n == "content_block_stop"));
    assert_eq!(
        &names[names.len() - 2..],
        ["message_delta".to_owned(), "message_stop".to_owned()]
    );
    // Errors in Anthropic's shape: no key, no max_tokens.
    let unauthorized = post(&service, "/v1/messages", &body);
    assert_eq!(unauthorized.status(), 401);
    let error: Value = unauthorized.json().unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    let mut no_budget = body.clone();
    no_budget.as_object_mut().unwrap().remove("max_tokens");
    let invalid: Value = post_with_key("/v1/messages", &no_budget).json().unwrap();
    assert_eq!(
        invalid["error"]["type"], "invalid_request_error",
        "{invalid}"
    );
}

#[test]
fn other_v1_paths_answer_in_openais_shape_and_embeddings_say_why_not() {
    let service = Service::start(&tiny_model(), &[]);
    for (method, path) in [
        ("GET", "/v1/nothing"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1/chat/completions"),
        ("DELETE", "/v1/models"),
    ] {
        let response = client()
            .request(method.parse().unwrap(), service.url(path))
            .send()
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().unwrap();
        assert_eq!(
            body["error"]["type"], "invalid_request_error",
            "{method} {path}"
        );
        assert!(body["error"]["message"].as_str().unwrap().contains(path));
    }
    let embeddings = post(
        &service,
        "/v1/embeddings",
        &json!({"model": model_id(&service), "input": "안녕"}),
    );
    assert_eq!(embeddings.status(), 400);
    let body: Value = embeddings.json().unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embedding"));
    // Outside /v1 the Leafresh envelope stays.
    let leafresh: Value = client()
        .get(service.url("/nope"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(leafresh["status"], 404);
}

/// Every protocol through the upstream engine, in front of another instance of this service:
/// without a local tokenizer (chat requests upstream) and with one (token ids to its
/// `/v1/completions`).
#[test]
fn every_protocol_works_through_the_upstream_engine() {
    let upstream = Service::start(&tiny_model(), &["--parallel", "2"]);
    let tokenizer = tiny_model().display().to_string();
    for extra in [vec![], vec!["--tokenizer", tokenizer.as_str()]] {
        let mut gateway = Service::gateway(&upstream.url("/v1"), &extra);
        assert!(
            gateway.wait_health(200, std::time::Duration::from_secs(20)),
            "{}",
            gateway.log()
        );
        let id = model_id(&gateway);
        let how = format!("gateway {extra:?}");

        let completion = post_json(
            &gateway,
            "/v1/completions",
            &json!({"model": id, "prompt": ["안녕", "텀블러"], "n": 2, "max_tokens": 4,
                    "logprobs": 1, "seed": 3, "temperature": 1.0}),
        );
        let choices = completion["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 4, "{how}: {completion}");
        assert!(choices.iter().all(|c| c["logprobs"]["tokens"].is_array()));

        let chat = post_json(
            &gateway,
            "/v1/chat/completions",
            &json!({"model": id, "n": 2, "max_tokens": 4, "logprobs": true, "top_logprobs": 2,
                    "messages": [{"role": "user", "content": "안녕"}]}),
        );
        let choices = chat["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2, "{how}: {chat}");
        let content = choices[0]["logprobs"]["content"].as_array().unwrap();
        assert_eq!(
            content.len() as u64 * 2,
            chat["usage"]["completion_tokens"].as_u64().unwrap()
        );
        assert_eq!(
            content[0]["top_logprobs"].as_array().unwrap().len(),
            2,
            "{how}"
        );

        let response = post_json(
            &gateway,
            "/v1/responses",
            &json!({"model": id, "input": "안녕", "instructions": "짧게", "max_output_tokens": 6}),
        );
        assert_eq!(response["object"], "response", "{how}: {response}");
        let streamed = events(post(
            &gateway,
            "/v1/responses",
            &json!({"model": id, "input": "안녕", "max_output_tokens": 6, "stream": true}),
        ));
        assert_eq!(streamed.first().unwrap().0, "response.created", "{how}");
        assert!(
            matches!(
                streamed.last().unwrap().0.as_str(),
                "response.completed" | "response.incomplete"
            ),
            "{how}: {streamed:?}"
        );

        let message = post_json(
            &gateway,
            "/v1/messages",
            &json!({"model": id, "max_tokens": 6, "system": "짧게",
                    "messages": [{"role": "user", "content": "안녕"}]}),
        );
        assert_eq!(message["type"], "message", "{how}: {message}");
        let streamed = events(post(
            &gateway,
            "/v1/messages",
            &json!({"model": id, "max_tokens": 6, "stream": true,
                    "messages": [{"role": "user", "content": "안녕"}]}),
        ));
        assert_eq!(
            streamed.last().unwrap().0,
            "message_stop",
            "{how}: {streamed:?}"
        );
    }
}
