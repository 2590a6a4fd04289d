//! Upstream mode: this service as a gateway (`--upstream`, no model) in front of a real engine,
//! another instance of this service on the tiny model. A stand-in upstream plays only the faults
//! a real engine cannot be made to show (garbage, a stall).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    client, encode, free_port, get_events, logged_field, model_id, reserved_port, slow_model,
    tiny_model, wait_for_metric, Service, SseReader,
};

fn base_info_url(service: &Service, session: &str) -> String {
    service.url(&format!(
        "/ai/chatbot/recommendation/base-info?sessionId={}&location={}&workType={}&category={}",
        encode(session),
        encode("도시"),
        encode("사무직"),
        encode("비건")
    ))
}

fn free_text_url(service: &Service, session: &str, message: &str) -> String {
    service.url(&format!(
        "/ai/chatbot/recommendation/free-text?sessionId={}&message={}",
        encode(session),
        encode(message)
    ))
}

/// POSTs `body` to `path` and returns the JSON answer.
fn post_json(service: &Service, path: &str, body: &Value) -> Value {
    client()
        .post(service.url(path))
        .json(body)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// A gateway in front of a healthy upstream, once the gateway has seen it.
fn gateway_to(upstream: &Service, extra: &[&str]) -> Service {
    let mut gateway = Service::gateway(&upstream.url("/v1"), extra);
    assert!(
        gateway.wait_health(200, Duration::from_secs(20)),
        "{}",
        gateway.log()
    );
    gateway
}

/// A streamed `/v1` completion through `service`: the data of every event, `[DONE]` included.
fn stream_data(service: &Service, body: &Value) -> Vec<String> {
    let response = client()
        .post(service.url("/v1/chat/completions"))
        .json(body)
        .send()
        .unwrap();
    let mut reader = SseReader::new(response);
    let mut data = Vec::new();
    while let Some(event) = reader.next_event() {
        data.push(event.raw);
    }
    data
}

/// A `/v1` stream on the slow model that runs for seconds (1500 tokens), still open.
fn long_stream(gateway: &Service) -> SseReader<reqwest::blocking::Response> {
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(
            &json!({"model": "slow-llama", "max_tokens": 1500, "stream": true,
                      "messages": [{"role": "user", "content": "길게 써 주세요"}]}),
        )
        .send()
        .unwrap();
    SseReader::new(response)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn base_info_and_a_free_text_follow_up_are_answered_through_the_upstream() {
    let upstream = Service::start(&tiny_model(), &[]);
    let gateway = gateway_to(&upstream, &[]);

    let (status, _, events) = get_events(&base_info_url(&gateway, "s-1"));
    assert_eq!(status, 200);
    let last = events.last().unwrap();
    assert_eq!(last.event, "close", "{events:?}\n{}", gateway.log());
    assert_eq!(
        last.json()["data"]["challenges"].as_array().unwrap().len(),
        3
    );
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| e.event == "challenge"));

    let (_, _, events) = get_events(&free_text_url(&gateway, "s-1", "플라스틱을 줄이고 싶어요"));
    assert_eq!(events.last().unwrap().event, "close", "{events:?}");

    // The upstream generated both, and the gateway counted the prompts exactly as the upstream
    // did (through its /tokenize); the follow-up carried the first turn as history.
    let upstream_prompts = logged_field(&upstream.log(), "chat-completions", "prompt_tokens");
    let base = logged_field(&gateway.log(), "base-info", "prompt_tokens");
    let follow_up = logged_field(&gateway.log(), "free-text", "prompt_tokens");
    assert_eq!(upstream_prompts, vec![base[0], follow_up[0]]);
    assert!(follow_up[0] > base[0]);
    gateway.assert_logged("engine=\"upstream\"");
    assert!(gateway.log().contains("upstream_ms="));

    // No weights in the gateway.
    let rss_mib = peak_rss_kib(gateway.pid()) / 1024;
    assert!(rss_mib < 100, "gateway peak RSS {rss_mib} MiB");
}

#[test]
fn the_openai_api_streams_answers_and_passes_json_schema_on() {
    let upstream = Service::start(&tiny_model(), &[]);
    let gateway = gateway_to(&upstream, &[]);

    let models: Value = client()
        .get(gateway.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny-llama", "{models}");
    assert!(models["data"][0]["max_model_len"].as_u64().unwrap() > 0);

    let whole: Value = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny-llama", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "안녕하세요"}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(whole["choices"][0]["finish_reason"], "length", "{whole}");
    assert_eq!(whole["usage"]["completion_tokens"], 8);

    let data = stream_data(
        &gateway,
        &json!({"model": "tiny-llama", "max_tokens": 8, "stream": true,
                "messages": [{"role": "user", "content": "안녕하세요"}]}),
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!text.is_empty());

    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
                        "required": ["n"], "additionalProperties": false});
    let shaped: Value = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny-llama", "max_tokens": 40,
                      "messages": [{"role": "user", "content": "숫자 하나"}],
                      "response_format": {"type": "json_schema",
                                          "json_schema": {"name": "n", "schema": schema}}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let content = shaped["choices"][0]["message"]["content"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(content).unwrap_or_else(|_| panic!("{content}"));
    assert!(parsed["n"].is_i64(), "{parsed}");

    // A prompt over the upstream's context is the client's 400, as without a gateway.
    let long = "가".repeat(3000);
    let refused = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny-llama", "messages": [{"role": "user", "content": long}]}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
}

#[test]
fn a_client_that_disconnects_cancels_its_upstream_request() {
    let upstream = Service::start(&slow_model(), &["--no-grammar"]);
    let gateway = gateway_to(&upstream, &["--no-grammar"]);
    let mut reader = long_stream(&gateway);
    for _ in 0..3 {
        reader.next_event().expect("the stream started");
    }
    drop(reader);
    assert!(
        upstream.wait_for_log("client left; generation stopped", 1, Duration::from_secs(5)),
        "the upstream kept generating:\n{}",
        upstream.log()
    );
}

#[test]
fn health_is_503_while_the_upstream_is_down_and_200_once_it_is_back() {
    // Held until the upstream listens on it: the test waits seconds before starting it.
    let (port, _reserved) = reserved_port();
    let mut gateway = Service::gateway(&format!("http://127.0.0.1:{port}/v1"), &[]);
    assert!(gateway.wait_health(503, Duration::from_secs(5)));
    gateway.assert_logged("upstream engine unreachable");

    // A Leafresh request meanwhile: 503 with the Korean envelope and Retry-After.
    let response = client().get(base_info_url(&gateway, "s")).send().unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().unwrap();
    // The sentence for an unreachable upstream, not the one for a stopped engine.
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("추론 서버에 연결할 수 없습니다."),
        "{body}"
    );

    let _upstream = Service::start_on(port, &tiny_model(), &[]);
    assert!(
        gateway.wait_health(200, Duration::from_secs(15)),
        "{}",
        gateway.log()
    );
    let (_, _, events) = get_events(&base_info_url(&gateway, "s"));
    assert_eq!(events.last().unwrap().event, "close");
}

#[test]
fn an_upstream_killed_mid_stream_ends_both_apis_with_a_final_error() {
    let upstream = Service::start(&slow_model(), &["--no-grammar", "--parallel", "2"]);
    let gateway = gateway_to(&upstream, &["--no-grammar", "--upstream-idle-timeout", "5"]);

    let leafresh = client().get(base_info_url(&gateway, "s")).send().unwrap();
    let mut leafresh = SseReader::new(leafresh);
    let mut openai = long_stream(&gateway);
    assert_eq!(leafresh.next_event().unwrap().event, "challenge");
    openai.next_event().unwrap();
    drop(upstream);

    let killed = Instant::now();
    let mut last = None;
    while let Some(event) = leafresh.next_event() {
        last = Some(event);
    }
    let last = last.unwrap();
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.json()["status"], 502);
    let mut data = Vec::new();
    while let Some(event) = openai.next_event() {
        data.push(event.raw);
    }
    assert_eq!(data.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_error", "{error}");
    assert!(killed.elapsed() < Duration::from_secs(5));
}

/// The (head, body) of every request a stand-in upstream got.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// What a stand-in upstream serves: a model list and a token count like a real one, and for chat
/// completions whatever `answer` writes (given the request's body).
struct StandIn {
    /// The body of `GET /v1/models`.
    models: &'static str,
    /// How long `POST /tokenize` takes to answer.
    tokenize_after: Duration,
    /// The count `POST /tokenize` gives a body.
    count: fn(&Value) -> u64,
    answer: fn(&mut std::net::TcpStream, &Value),
}

impl StandIn {
    fn answering(answer: fn(&mut std::net::TcpStream, &Value)) -> Self {
        Self {
            models: r#"{"object":"list","data":[{"id":"stand-in","max_model_len":4096}]}"#,
            tokenize_after: Duration::ZERO,
            count: |_| 300,
            answer,
        }
    }

    /// Serves on a free port; returns the API base URL and the (head, body) of every request.
    fn serve(self) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let stand_in = Arc::new(self);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, stand_in) = (Arc::clone(&recorded), Arc::clone(&stand_in));
                std::thread::spawn(move || stand_in.reply(stream, &seen));
            }
        });
        (url, seen)
    }

    fn reply(&self, mut stream: std::net::TcpStream, seen: &Seen) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().unwrap().push((head.clone(), body.clone()));
        if head.starts_with("GET /v1/models") {
            let _ = stream.write_all(json_reply(self.models).as_bytes());
        } else if head.starts_with("POST /tokenize") {
            std::thread::sleep(self.tokenize_after);
            let count = json!({"count": (self.count)(&body)}).to_string();
            let _ = stream.write_all(json_reply(&count).as_bytes());
        } else if head.starts_with("POST /v1/chat/completions") {
            (self.answer)(&mut stream, &body);
        } else {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    }
}

fn json_reply(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A whole chat completion stream, as an OpenAI-compatible engine writes it: `content`, then the
/// finish with usage, then `[DONE]`.
fn write_chat_stream(stream: &mut std::net::TcpStream, content: &str, prompt_tokens: u64) {
    let delta = json!({"object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {"content": content}}]});
    let end = json!({"object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1,
                               "total_tokens": prompt_tokens + 1}});
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
         data: {delta}\n\ndata: {end}\n\ndata: [DONE]\n\n"
    );
}

#[test]
fn garbage_from_the_upstream_is_a_502_and_the_session_id_is_forwarded() {
    let (url, seen) = StandIn::answering(|stream, _| {
        let page = "<html>upstream says hello</html>";
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
    })
    .serve();
    let mut gateway = Service::gateway(&url, &[]);
    assert!(
        gateway.wait_health(200, Duration::from_secs(10)),
        "{}",
        gateway.log()
    );

    let refused = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "stand-in", "messages": [{"role": "user", "content": "안녕"}]}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 502);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");

    let response = client()
        .get(base_info_url(&gateway, "session-7"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 502);
    let completions: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(head, _)| head)
        .filter(|h| h.starts_with("POST /v1/chat/completions"))
        .cloned()
        .collect();
    assert!(
        completions
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("x-session-id: session-7")),
        "{completions:?}"
    );
}

#[test]
fn an_upstream_that_stalls_mid_stream_ends_the_stream_within_the_idle_timeout() {
    let (url, _) = StandIn::answering(|stream, _| {
        let chunk = r#"{"choices":[{"index":0,"delta":{"content":"가"}}]}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {chunk}\n\n"
        );
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(30));
    })
    .serve();
    let mut gateway = Service::gateway(&url, &["--upstream-idle-timeout", "1"]);
    assert!(
        gateway.wait_health(200, Duration::from_secs(10)),
        "{}",
        gateway.log()
    );
    let started = Instant::now();
    let data = stream_data(
        &gateway,
        &json!({"model": "stand-in", "stream": true,
                "messages": [{"role": "user", "content": "안녕"}]}),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data.iter().any(|d| d.contains("\"가\"")), "{data:?}");
    assert!(data[data.len() - 2].contains("upstream_error"), "{data:?}");
}

#[test]
fn a_local_tokenizer_counts_prompts_exactly_and_sends_them_as_token_ids() {
    let upstream = Service::start(&tiny_model(), &[]);
    let tokenizer = tiny_model().display().to_string();
    let gateway = gateway_to(&upstream, &["--tokenizer", &tokenizer]);
    gateway.assert_logged("counting=Some(Local)");
    gateway.assert_logged("token_prompts=true");
    // The recommendation (its JSON schema) goes to the instance's /v1/completions as token ids,
    // the count the gateway made being the one the upstream made of them.
    let (_, _, events) = get_events(&base_info_url(&gateway, "t"));
    let last = events.last().unwrap();
    assert_eq!(last.event, "close", "{events:?}");
    assert_eq!(
        last.json()["data"]["challenges"].as_array().unwrap().len(),
        3
    );
    let counted = logged_field(&gateway.log(), "base-info", "prompt_tokens");
    assert_eq!(
        counted,
        logged_field(&upstream.log(), "completions", "prompt_tokens")
    );
    assert!(logged_field(&upstream.log(), "chat-completions", "prompt_tokens").is_empty());

    // So does a chat completion, and the client's own raw prompts: text, and token ids.
    let id = model_id(&gateway);
    let chat = post_json(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": id, "max_tokens": 4,
                "messages": [{"role": "user", "content": "안녕 [INST] <s>"}]}),
    );
    assert_eq!(chat["object"], "chat.completion", "{chat}");
    for prompt in [json!("텀블러를"), json!([1000, 1100, 1200])] {
        let answer = post_json(
            &gateway,
            "/v1/completions",
            &json!({"model": id, "prompt": prompt, "max_tokens": 4, "logprobs": 2}),
        );
        assert_eq!(answer["object"], "text_completion", "{answer}");
        let logprobs = &answer["choices"][0]["logprobs"];
        assert_eq!(
            logprobs["tokens"].as_array().unwrap().len() as u64,
            answer["usage"]["completion_tokens"].as_u64().unwrap(),
            "{answer}"
        );
    }
    let upstream_counts = logged_field(&upstream.log(), "completions", "prompt_tokens");
    assert_eq!(upstream_counts.len(), 4, "{upstream_counts:?}");
    // The token ids went through as they were (no BOS added on the way).
    assert_eq!(upstream_counts[3], 3);
}

#[test]
fn tokenize_counts_chat_messages_as_a_completion_would() {
    let service = Service::start(&tiny_model(), &[]);
    let messages = json!([{"role": "system", "content": "짧게 답하세요."},
                          {"role": "user", "content": "분리수거 팁 [INST] 하나"}]);
    let tools = json!([{"type": "function", "function": {"name": "now",
        "description": "지금 시각", "parameters": {"type": "object", "properties": {}}}}]);
    let mut counts = Vec::new();
    // Without and with tools offered: their list counts too, as in the completion.
    for extra in [json!({}), json!({"tools": tools})] {
        let mut body = json!({"model": "tiny-llama", "messages": messages});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let counted = post_json(&service, "/tokenize", &body);
        body["max_tokens"] = json!(1);
        let answer = post_json(&service, "/v1/chat/completions", &body);
        assert_eq!(
            counted["count"], answer["usage"]["prompt_tokens"],
            "{counted}"
        );
        assert!(counted["max_model_len"].as_u64().unwrap() > 0);
        counts.push(counted["count"].as_u64().unwrap());
    }
    assert!(counts[1] > counts[0], "{counts:?}");
    let refused = client()
        .post(service.url("/tokenize"))
        .json(&json!({"prompt": "no messages"}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
}

#[test]
fn tool_calls_and_a_tool_round_trip_pass_through_the_gateway() {
    let engine = Service::start(&tiny_model(), &[]);
    let gateway = gateway_to(&engine, &[]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                       "required": ["city"]}}}]);
    let ask = |messages: Value, stream: bool| {
        json!({"model": "tiny-llama", "max_tokens": 120, "temperature": 0, "stream": stream,
               "messages": messages, "tools": tools, "tool_choice": "required",
               "parallel_tool_calls": false})
    };
    let question = json!([{"role": "user", "content": "서울 날씨?"}]);
    let whole = post_json(
        &gateway,
        "/v1/chat/completions",
        &ask(question.clone(), false),
    );
    let choice = &whole["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{whole}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        arguments["city"].as_str().unwrap().chars().count() <= 8,
        "{arguments}"
    );

    // Streamed: the name first, then the arguments in pieces, relayed as they came.
    let data = stream_data(&gateway, &ask(question.clone(), true));
    let deltas: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(deltas[0]["function"]["name"], "get_weather", "{deltas:?}");
    let streamed: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());

    // The call and its result go back upstream as history.
    let mut history = question.as_array().unwrap().clone();
    history.push(choice["message"].clone());
    history.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "맑음"}));
    let mut follow_up = ask(Value::Array(history), false);
    follow_up["tool_choice"] = json!("none");
    let answer = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&follow_up)
        .send()
        .unwrap();
    assert!(answer.status().is_success());
    let answer: Value = answer.json().unwrap();
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{answer}"
    );
}

/// Before the upstream was first reached nothing is sent: it is not known what it serves, how to
/// count for it, or whether prompts may go as token ids (so client text could reach its
/// template as text). Both APIs answer 503 with `Retry-After`, not a 404 for a model the list
/// does not hold yet; counting with a local vocabulary needs no upstream.
#[test]
fn before_the_upstream_is_reached_requests_are_503_and_local_counting_works() {
    let down = format!("http://127.0.0.1:{}/v1", free_port());
    let tokenizer = tiny_model().display().to_string();
    for extra in [
        vec!["--tokenizer", tokenizer.as_str()],
        vec![
            "--tokenizer",
            tokenizer.as_str(),
            "--upstream-model",
            "tiny-llama",
        ],
        vec![],
    ] {
        let gateway = Service::gateway(&down, &extra);
        let chat = client()
            .post(gateway.url("/v1/chat/completions"))
            .json(&json!({"model": "tiny-llama",
                          "messages": [{"role": "user", "content": "[INST] 안녕"}]}))
            .send()
            .unwrap();
        assert_eq!(chat.status(), 503, "{extra:?}");
        assert!(chat.headers().contains_key("retry-after"), "{extra:?}");
        let body: Value = chat.json().unwrap();
        assert!(body["error"]["message"].is_string(), "{extra:?}: {body}");
        let leafresh = client()
            .get(base_info_url(&gateway, "early"))
            .send()
            .unwrap();
        assert_eq!(leafresh.status(), 503, "{extra:?}");
        assert!(leafresh.headers().contains_key("retry-after"), "{extra:?}");
        if !extra.is_empty() {
            // The local vocabulary counts at once.
            let counted = post_json(
                &gateway,
                "/tokenize",
                &json!({"messages": [{"role": "user", "content": "안녕"}]}),
            );
            assert!(counted["count"].as_u64().unwrap() > 1, "{counted}");
        }
    }
}

/// `--upstream http://HOST:PORT`, the server's address without `/v1`, reaches its OpenAI API:
/// answers whole and streamed, with usage (it was a 502 per request, and streams without usage).
#[test]
fn an_upstream_address_without_v1_means_its_v1() {
    let upstream = Service::start(&tiny_model(), &[]);
    let mut gateway = Service::gateway(&upstream.base_url(), &[]);
    assert!(
        gateway.wait_health(200, Duration::from_secs(20)),
        "{}",
        gateway.log()
    );
    let body = json!({"model": "tiny-llama", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "안녕"}]});
    let whole = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(whole.status(), 200, "{}", gateway.log());
    let whole: Value = whole.json().unwrap();
    assert!(
        whole["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{whole}"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let data = stream_data(&gateway, &streamed);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        data.iter().any(|d| d.contains("\"prompt_tokens\"")),
        "{data:?}"
    );
}

/// An upstream serving two models with their own windows: a request for one is counted, fitted
/// and sized for that one (its count asked for it, its window), not for the default.
#[test]
fn a_request_for_another_upstream_model_is_counted_and_sized_for_that_model() {
    let (url, seen) = StandIn {
        models: r#"{"object":"list","data":[{"id":"small","max_model_len":256},
                    {"id":"large","max_model_len":4096}]}"#,
        tokenize_after: Duration::ZERO,
        // One token per character of the messages' contents.
        count: |body| {
            body["messages"].as_array().map_or(0, |messages| {
                messages
                    .iter()
                    .map(|m| m["content"].as_str().unwrap_or("").chars().count() as u64)
                    .sum()
            })
        },
        // The answer says which model and budget it was sent.
        answer: |stream, body| {
            let said = format!("{} {}", body["model"], body["max_tokens"]);
            write_chat_stream(stream, &said, 600);
        },
    }
    .serve();
    let mut gateway = Service::gateway(&url, &[]);
    assert!(gateway.wait_health(200, Duration::from_secs(10)));
    let models: Value = client()
        .get(gateway.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let windows: Vec<(String, u64)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["max_model_len"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(windows, [("small".into(), 256), ("large".into(), 4096)]);

    let answer = post_json(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "large", "max_tokens": 5000,
                "messages": [{"role": "user", "content": "가".repeat(600)}]}),
    );
    // 600 prompt tokens leave 3496 of large's 4096 (small's 256 would have refused it).
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "\"large\" 3496",
        "{answer}\n{}",
        gateway.log()
    );
    // The request's counts (the discovery's probe of `/tokenize` asks for the default model).
    let counted_for: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(head, body)| {
            head.starts_with("POST /tokenize") && body.to_string().contains("가가")
        })
        .map(|(_, body)| body["model"].clone())
        .collect();
    assert!(!counted_for.is_empty());
    assert!(counted_for.iter().all(|m| m == "large"), "{counted_for:?}");
    // The same request for the small model is refused by its own window.
    let refused = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "small",
                      "messages": [{"role": "user", "content": "가".repeat(600)}]}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
}

/// With a local vocabulary, a message whose text alone cannot fit the window is refused before
/// it is rendered or tokenized (the refusal names the lower bound it found), as the embedded
/// engine refuses it.
#[test]
fn the_gateway_refuses_a_message_too_long_for_the_window_before_tokenizing_it() {
    let upstream = Service::start(&tiny_model(), &[]);
    let tokenizer = tiny_model().display().to_string();
    let gateway = gateway_to(&upstream, &["--tokenizer", &tokenizer]);
    let long = "플라스틱 ".repeat(150_000);
    let refused = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "tiny-llama",
                      "messages": [{"role": "user", "content": long}]}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("needs at least"), "{message}");
    assert!(message.contains("bytes per token"), "{message}");
}

/// A stop signal waits for requests still being counted (the upstream's `/tokenize` takes two
/// seconds here), not only for those generating: the client gets its whole answer.
#[test]
fn a_stop_waits_for_a_request_still_being_counted() {
    let (url, _) = StandIn {
        tokenize_after: Duration::from_secs(2),
        ..StandIn::answering(|stream, _| write_chat_stream(stream, "다 됐어요", 300))
    }
    .serve();
    let mut gateway = Service::gateway(&url, &["--shutdown-timeout", "20"]);
    assert!(gateway.wait_health(200, Duration::from_secs(10)));
    let url = gateway.url("/v1/chat/completions");
    let request = std::thread::spawn(move || {
        client()
            .post(url)
            .json(&json!({"model": "stand-in",
                          "messages": [{"role": "user", "content": "안녕"}]}))
            .send()
            .and_then(|r| r.json::<Value>())
    });
    // The request is being counted (its /tokenize answers after 2 s) when the stop comes.
    std::thread::sleep(Duration::from_millis(500));
    gateway.terminate();
    let answer = request.join().unwrap().expect("a whole answer");
    assert_eq!(
        answer["choices"][0]["message"]["content"], "다 됐어요",
        "{answer}"
    );
    assert_eq!(gateway.wait_exit(Duration::from_secs(20)), Some(Some(0)));
}

/// Past the grace period every request ends with a final error: the one streaming with an error
/// chunk and `[DONE]`, the one still waiting for an upstream place (its stream not begun) with a
/// 503; none is sent after the stop.
#[test]
fn past_the_grace_period_running_and_waiting_requests_end_with_a_final_error() {
    let upstream = Service::start(&slow_model(), &["--no-grammar"]);
    let mut gateway = gateway_to(&upstream, &["--parallel", "1", "--shutdown-timeout", "1"]);
    let mut running = long_stream(&gateway);
    assert!(running.next_event().is_some());
    let waiting = std::thread::spawn({
        let url = gateway.url("/v1/chat/completions");
        move || {
            let response = client()
                .post(url)
                .json(
                    &json!({"model": "slow-llama", "stream": true, "max_tokens": 5,
                              "messages": [{"role": "user", "content": "안녕"}]}),
                )
                .send()
                .unwrap();
            let retry = response.headers().contains_key("retry-after");
            (response.status(), retry, response.text().unwrap())
        }
    });
    assert!(wait_for_metric(
        &gateway,
        "leafresh_requests_queued",
        1.0,
        Duration::from_secs(10)
    ));
    gateway.terminate();
    let mut last = Vec::new();
    while let Some(event) = running.next_event() {
        last.push(event.raw);
    }
    assert_eq!(last.last().map(String::as_str), Some("[DONE]"), "{last:?}");
    assert!(last[last.len() - 2].contains("shutting down"), "{last:?}");
    let (status, retry, body) = waiting.join().unwrap();
    assert_eq!((status.as_u16(), retry), (503, true), "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(gateway.wait_exit(Duration::from_secs(20)), Some(Some(0)));
    // The upstream got the one request, not the one that waited.
    assert_eq!(
        upstream.log().matches("request finished").count(),
        1,
        "{}",
        upstream.log()
    );
}

/// The count assumed for an upstream that cannot count (`upper_bound`: one token per byte of
/// content, a few per message for the template) is never below the real count, checked with real
/// vocabularies and templates over Korean, emoji, code and mixed conversations.
#[test]
fn the_bound_for_an_upstream_that_cannot_count_is_never_below_the_real_count() {
    use leafresh_llm::engine::tokenizer::Tokenizer;
    use leafresh_llm::engine::upstream::upper_bound;
    use leafresh_llm::engine::ChatMessage;
    let texts = [
        "안녕하세요",
        "가",
        "플라스틱 줄이기 챌린지를 추천해 주세요. 회사에서 할 수 있는 걸로요!",
        "😀🌱♻️ 지구를 지켜요",
        "fn main() { println!(\"{}\", 1 + 2); }",
        "ㄱㄴㄷ ㅏㅑ 똠방각하 뷁",
        "mixed 한국어 and English, 숫자 12345 and 記号 ※",
        "\n\n   \t  ",
        "",
    ];
    let conversations: Vec<Vec<ChatMessage>> = texts
        .iter()
        .map(|t| vec![ChatMessage::user(*t)])
        .chain(texts.windows(3).map(|w| {
            vec![
                ChatMessage::system(w[0]),
                ChatMessage::user(w[1]),
                ChatMessage::assistant(w[2]),
                ChatMessage::user(w[0]),
            ]
        }))
        .collect();
    let real = real_model_template();
    let tokenizers = [
        Tokenizer::load(&tiny_model(), None).unwrap(),
        Tokenizer::load(&real.0, Some(real.1)).unwrap(),
    ];
    for tokenizer in &tokenizers {
        for messages in &conversations {
            let real = tokenizer.prompt(messages).unwrap().len();
            assert!(
                real <= upper_bound(messages),
                "{real} tokens > bound {} for {messages:?}",
                upper_bound(messages)
            );
        }
    }
}

fn real_model_template() -> (std::path::PathBuf, &'static str) {
    (
        crate::support::real_model(),
        crate::support::REAL_MODEL_TEMPLATE[1],
    )
}
