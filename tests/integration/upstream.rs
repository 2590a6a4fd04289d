//! Upstream mode: this service as a gateway (`--upstream`, no model) in front of a real engine,
//! another instance of this service on the tiny model. A stand-in upstream plays only the faults
//! a real engine cannot be made to show (garbage, a stall).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    client, encode, free_port, get_events, logged_field, slow_model, tiny_model, Service, SseReader,
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
    let port = free_port();
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

/// A stand-in upstream: a model list and a token count like a real one, and for chat
/// completions whatever `answer` writes. Records the request heads it saw.
fn stand_in(answer: fn(&mut std::net::TcpStream)) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
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
                seen.lock().unwrap().push(head.clone());
                let json_reply = |body: &str| {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                if head.starts_with("GET /v1/models") {
                    let list =
                        r#"{"object":"list","data":[{"id":"stand-in","max_model_len":4096}]}"#;
                    let _ = stream.write_all(json_reply(list).as_bytes());
                } else if head.starts_with("POST /tokenize") {
                    let _ = stream.write_all(json_reply(r#"{"count":300}"#).as_bytes());
                } else if head.starts_with("POST /v1/chat/completions") {
                    answer(&mut stream);
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, heads)
}

#[test]
fn garbage_from_the_upstream_is_a_502_and_the_session_id_is_forwarded() {
    let (url, heads) = stand_in(|stream| {
        let page = "<html>upstream says hello</html>";
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
    });
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
    let completions: Vec<String> = heads
        .lock()
        .unwrap()
        .iter()
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
    let (url, _) = stand_in(|stream| {
        let chunk = r#"{"choices":[{"index":0,"delta":{"content":"가"}}]}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {chunk}\n\n"
        );
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(30));
    });
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
fn a_local_tokenizer_counts_prompts_exactly_as_the_upstream_does() {
    let upstream = Service::start(&tiny_model(), &[]);
    let tokenizer = tiny_model().display().to_string();
    let gateway = gateway_to(&upstream, &["--tokenizer", &tokenizer]);
    gateway.assert_logged("counting=Some(Local)");
    let (_, _, events) = get_events(&base_info_url(&gateway, "t"));
    assert_eq!(events.last().unwrap().event, "close", "{events:?}");
    assert_eq!(
        logged_field(&gateway.log(), "base-info", "prompt_tokens"),
        logged_field(&upstream.log(), "chat-completions", "prompt_tokens")
    );
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
