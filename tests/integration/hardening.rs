//! Bad input, from the wire (issue 7): every case asserts its status, the body's shape (the
//! Leafresh envelope or the OpenAI error body), that the body leaks nothing of the machine, and
//! that the next normal request still succeeds. Raw sockets send what an HTTP client library
//! would refuse to.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{client, encode, tiny_model, Service, SseReader};

const BASE_INFO: &str = "/ai/chatbot/recommendation/base-info";
const FREE_TEXT: &str = "/ai/chatbot/recommendation/free-text";
const CHAT: &str = "/v1/chat/completions";

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub body: String,
}

/// Sends `request` bytes as they are (the caller writes `Connection: close`) and reads the whole
/// response. A chunked body is returned with its chunk framing; callers only search it.
pub fn raw(service: &Service, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(service.base_url().trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The server may answer (413) and close before it has read everything: that is the point.
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    RawResponse {
        status,
        body: body.to_string(),
    }
}

fn raw_get(service: &Service, path_and_query: &[u8]) -> RawResponse {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(path_and_query);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw(service, &request)
}

fn raw_post(service: &Service, content_type: &str, body: &[u8]) -> RawResponse {
    let mut request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw(service, &request)
}

/// Fragments that would reveal the machine or the implementation in an error body.
pub fn assert_no_leak(body: &str, context: &str) {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let machine_paths = [
        env!("CARGO_MANIFEST_DIR"),
        home.as_str(),
        "/tmp/",
        "/work/",
        "/home/",
        "/root/",
        "/usr/",
        "/proc/",
        ".gguf",
        "src/",
        ".rs:",
    ];
    for needle in machine_paths {
        assert!(
            !body.contains(needle),
            "{context}: body leaks a path ({needle}): {body}"
        );
    }
    let implementation = [
        "0x",
        "::",
        "panicked",
        "RUST_BACKTRACE",
        "ChatRequest",
        "struct ",
        "enum ",
        "Error {",
        "Some(",
        "None,",
        "serde",
        "actix",
        "llama_",
        "String",
        "Vec<",
    ];
    for needle in implementation {
        assert!(
            !body.contains(needle),
            "{context}: body leaks an implementation detail ({needle}): {body}"
        );
    }
}

/// The Leafresh envelope with `status` as its HTTP status, returned.
fn assert_envelope(response: &RawResponse, status: u16, context: &str) -> Value {
    assert_eq!(response.status, status, "{context}: {response:?}");
    assert_no_leak(&response.body, context);
    let body: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("{context}: not JSON ({e}): {:?}", response.body));
    assert_eq!(body["status"], status, "{context}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: {body}"
    );
    assert!(body.get("data").is_some(), "{context}: {body}");
    body
}

/// The OpenAI error body with `status`, returned.
fn assert_openai_error(response: &RawResponse, status: u16, context: &str) -> Value {
    assert_eq!(response.status, status, "{context}: {}", response.body);
    assert_no_leak(&response.body, context);
    let body: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("{context}: not JSON ({e}): {:?}", response.body));
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: {body}"
    );
    assert!(error["type"].is_string(), "{context}: {body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{context}: {body}"
    );
    body
}

/// A stream that answered 200 and ended with the contract's `close` event.
fn assert_recommendation_completes(service: &Service, path_and_query: &str, context: &str) {
    let response = client().get(service.url(path_and_query)).send().unwrap();
    assert_eq!(response.status(), 200, "{context}");
    let mut reader = SseReader::new(response);
    let mut last = None;
    while let Some(event) = reader.next_event() {
        assert_no_leak(&event.raw, context);
        last = Some(event);
    }
    assert_eq!(last.map(|e| e.event).as_deref(), Some("close"), "{context}");
}

/// The normal request after each bad one: the service is still up and answering.
fn assert_still_serving(service: &Service, context: &str) {
    let response = client()
        .post(service.url(CHAT))
        .json(&json!({"model": "tiny-llama", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "안녕하세요"}]}))
        .send()
        .unwrap_or_else(|e| panic!("after {context}: the service is gone: {e}"));
    assert_eq!(response.status(), 200, "after {context}");
}

#[test]
fn bad_query_strings_get_an_envelope_or_a_cleaned_value() {
    let service = &Service::start(&tiny_model(), &["--parallel", "2"]);
    let category = encode("비건");
    // The HTTP layer (the `http` crate's URI type) takes request targets up to 64 KiB; longer
    // ones are refused below, before routing.
    let long = "a".repeat(60_000);
    let long_korean = encode(&"가".repeat(6_500));
    // (case, path and query, status; 200 means a stream that ends with `close`)
    let cases: Vec<(&str, String, u16)> = vec![
        ("no query at all", BASE_INFO.to_string(), 400),
        ("empty query", format!("{BASE_INFO}?"), 400),
        ("only separators", format!("{BASE_INFO}?&&&=&"), 400),
        (
            "empty key",
            format!("{BASE_INFO}?=x&location=a&workType=b&category={category}"),
            200,
        ),
        (
            "empty value",
            format!("{BASE_INFO}?location=&workType=b&category={category}"),
            400,
        ),
        (
            "repeated key: the first value counts",
            format!("{BASE_INFO}?location=a&location=&workType=b&category={category}&category=x"),
            200,
        ),
        (
            "invalid escape kept literally",
            format!("{BASE_INFO}?location=%ZZ&workType=%&category={category}"),
            200,
        ),
        (
            "truncated escape kept literally",
            format!("{BASE_INFO}?location=%E&workType=b%E1%84&category={category}"),
            400,
        ),
        (
            "escape that is not UTF-8",
            format!("{BASE_INFO}?location=%FF%FE&workType=b&category={category}"),
            400,
        ),
        (
            "truncated UTF-8 sequence",
            format!("{BASE_INFO}?location=%EB%8F&workType=b&category={category}"),
            400,
        ),
        (
            "overlong UTF-8",
            format!("{BASE_INFO}?location=%C0%AF&workType=b&category={category}"),
            400,
        ),
        (
            "encoded surrogate",
            format!("{BASE_INFO}?location=%ED%A0%80&workType=b&category={category}"),
            400,
        ),
        (
            "NUL and controls dropped",
            format!("{BASE_INFO}?location=%00%1B%7F%C2%85a&workType=b%0D%0A&category={category}"),
            200,
        ),
        (
            "only controls is blank",
            format!("{BASE_INFO}?location=%00%01&workType=b&category={category}"),
            400,
        ),
        (
            "unknown category",
            format!("{BASE_INFO}?location=a&workType=b&category=%00"),
            400,
        ),
        (
            "100 KB ASCII value",
            format!("{BASE_INFO}?location={long}&workType=b&category={category}"),
            400,
        ),
        (
            "90 KB of encoded Korean",
            format!("{BASE_INFO}?location={long_korean}&workType=b&category={category}"),
            400,
        ),
        (
            "free-text without message",
            format!("{FREE_TEXT}?sessionId=s"),
            400,
        ),
        (
            "free-text 100 KB message",
            format!("{FREE_TEXT}?sessionId=s&message={long}"),
            422,
        ),
        (
            "free-text message not UTF-8",
            format!("{FREE_TEXT}?sessionId=s&message=%FF"),
            400,
        ),
        (
            "free-text 100 KB session id",
            format!(
                "{FREE_TEXT}?sessionId={long}&message={}",
                encode("비건 챌린지 추천해줘")
            ),
            400,
        ),
    ];
    for (case, path, status) in &cases {
        if *status == 200 {
            assert_recommendation_completes(service, path, case);
        } else if path.starts_with(FREE_TEXT) {
            // The contract answers free-text mistakes inside the stream: one `error` event.
            let response = client().get(service.url(path)).send().unwrap();
            assert_eq!(response.status(), 200, "{case}");
            let mut reader = SseReader::new(response);
            let event = reader.next_event().expect("an error event");
            assert_eq!(event.event, "error", "{case}");
            assert_no_leak(&event.raw, case);
            let body = event.json();
            assert_eq!(body["status"], *status, "{case}: {body}");
            assert!(body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty() && m.len() < 600));
            assert!(
                reader.next_event().is_none(),
                "{case}: more after the error"
            );
        } else {
            let response = raw_get(service, path.as_bytes());
            let body = assert_envelope(&response, *status, case);
            assert!(
                body["message"].as_str().unwrap().len() < 600,
                "{case}: {body}"
            );
        }
        assert_still_serving(service, case);
    }
    // A 100 KB value: over the HTTP layer's 64 KiB request-target limit, a bare 400 before any
    // handler runs (no envelope can be sent from there); the service goes on.
    let huge = format!(
        "{BASE_INFO}?location={}&workType=b&category={category}",
        "a".repeat(100_000)
    );
    let response = raw_get(service, huge.as_bytes());
    assert_eq!(response.status, 400, "{response:?}");
    assert_no_leak(&response.body, "100 KB value");
    assert_still_serving(service, "100 KB value");
    // Raw bytes that are not even ASCII in the request line.
    let mut path = format!("{BASE_INFO}?location=").into_bytes();
    path.extend_from_slice(&[0xff, 0xfe, 0x80]);
    path.extend_from_slice(format!("&workType=b&category={category}").as_bytes());
    let response = raw_get(service, &path);
    assert!(matches!(response.status, 400 | 404), "{response:?}");
    assert_no_leak(&response.body, "raw bytes in the request line");
    assert_still_serving(service, "raw bytes in the request line");
}

#[test]
fn bad_json_bodies_get_openai_errors_and_oversized_ones_413_unread() {
    let service = &Service::start(&tiny_model(), &["--max-body-bytes", "65536"]);
    let valid = r#"{"model": "tiny-llama", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}"#;
    // Deep enough for any recursive parser's stack, small enough for the 64 KiB limit here.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let deep_in_field = format!(
        r#"{{"model": "tiny-llama", "messages": {}{}}}"#,
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("empty body", "application/json", b"".to_vec(), 400),
        ("not JSON", "application/json", b"hello".to_vec(), 400),
        (
            "truncated",
            "application/json",
            valid.as_bytes()[..40].to_vec(),
            400,
        ),
        ("JSON array", "application/json", b"[1, 2]".to_vec(), 400),
        (
            "JSON string",
            "application/json",
            br#""model""#.to_vec(),
            400,
        ),
        ("JSON null", "application/json", b"null".to_vec(), 400),
        ("deeply nested", "application/json", deep.into_bytes(), 400),
        (
            "deeply nested field",
            "application/json",
            deep_in_field.into_bytes(),
            400,
        ),
        (
            "trailing garbage",
            "application/json",
            format!("{valid} x").into_bytes(),
            400,
        ),
        (
            "invalid UTF-8",
            "application/json",
            {
                let mut b = valid.replace("hi", "h\u{1}").into_bytes();
                let at = b.iter().position(|&c| c == 1).unwrap();
                b[at] = 0xff;
                b
            },
            400,
        ),
        (
            "lone surrogate escape",
            "application/json",
            valid.replace("hi", r"\ud800").into_bytes(),
            400,
        ),
        (
            "lone low surrogate",
            "application/json",
            valid.replace("hi", r"\udc00x").into_bytes(),
            400,
        ),
        (
            "NaN literal",
            "application/json",
            valid
                .replace(r#""max_tokens": 2"#, r#""temperature": NaN"#)
                .into_bytes(),
            400,
        ),
        (
            "number out of range",
            "application/json",
            valid
                .replace(r#""max_tokens": 2"#, r#""temperature": 1e999"#)
                .into_bytes(),
            400,
        ),
        (
            "raw control character in a string",
            "application/json",
            valid.replace("hi", "h\u{1}i").into_bytes(),
            400,
        ),
        (
            "escaped NUL is cleaned",
            "application/json",
            valid.replace("hi", r"h\u0000i").into_bytes(),
            200,
        ),
        (
            "text/plain with valid JSON is read",
            "text/plain",
            valid.as_bytes().to_vec(),
            200,
        ),
        (
            "form content type with valid JSON is read",
            "application/x-www-form-urlencoded",
            valid.as_bytes().to_vec(),
            200,
        ),
    ];
    for (case, content_type, body, status) in cases {
        let response = raw_post(service, content_type, &body);
        if status == 200 {
            assert_eq!(response.status, 200, "{case}: {response:?}");
        } else {
            let error = assert_openai_error(&response, status, case);
            assert_eq!(error["error"]["type"], "invalid_request_error", "{case}");
        }
        assert_still_serving(service, case);
    }

    // Over the limit with a Content-Length: 413 at once, before the body is sent.
    let started = Instant::now();
    let mut stream = TcpStream::connect(service.base_url().trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{answer}");
    assert_no_leak(body, "declared 1 GiB");
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["param"], "body", "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_still_serving(service, "declared 1 GiB body");

    // Over the limit, chunked (no length declared): refused once the limit is passed.
    let big = format!(
        r#"{{"model": "tiny-llama", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "a".repeat(200_000)
    );
    let mut request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in big.as_bytes().chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw(service, &request);
    assert_openai_error(&response, 413, "chunked body over the limit");
    assert_still_serving(service, "chunked body over the limit");
}

#[test]
fn every_invalid_openai_field_is_a_400_naming_it() {
    let service = &Service::start(&tiny_model(), &[]);
    let user = json!([{"role": "user", "content": "안녕"}]);
    let base = json!({"model": "tiny-llama", "messages": user, "max_tokens": 2});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        if value.is_null() && field != "messages" {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("messages missing", without("messages"), "messages"),
        ("messages null", with("messages", Value::Null), "messages"),
        (
            "messages a string",
            with("messages", json!("hi")),
            "messages",
        ),
        ("messages a number", with("messages", json!(5)), "messages"),
        ("messages empty", with("messages", json!([])), "messages"),
        (
            "message a number",
            with("messages", json!([1])),
            "messages[0]",
        ),
        (
            "message null",
            with("messages", json!([null])),
            "messages[0]",
        ),
        (
            "unknown role",
            with("messages", json!([{"role": "robot", "content": "x"}])),
            "messages[0].role",
        ),
        (
            "role a number",
            with("messages", json!([{"role": 1, "content": "x"}])),
            "messages[0].role",
        ),
        (
            "missing role",
            with("messages", json!([{"content": "x"}])),
            "messages[0].role",
        ),
        (
            "missing content",
            with("messages", json!([{"role": "user"}])),
            "messages[0].content",
        ),
        (
            "content a number",
            with("messages", json!([{"role": "user", "content": 1}])),
            "messages[0].content",
        ),
        (
            "content an object",
            with("messages", json!([{"role": "user", "content": {}}])),
            "messages[0].content",
        ),
        (
            "image part",
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]),
            ),
            "messages[0].content[0].type",
        ),
        ("model missing", without("model"), "model"),
        ("model a number", with("model", json!(7)), "model"),
        ("max_tokens 0", with("max_tokens", json!(0)), "max_tokens"),
        (
            "max_tokens negative",
            with("max_tokens", json!(-1)),
            "max_tokens",
        ),
        (
            "max_tokens fractional",
            with("max_tokens", json!(1.5)),
            "max_tokens",
        ),
        (
            "max_tokens huge",
            with("max_tokens", json!(1e30)),
            "max_tokens",
        ),
        (
            "max_tokens over i64",
            with("max_tokens", json!(u64::MAX)),
            "max_tokens",
        ),
        (
            "max_tokens a string",
            with("max_tokens", json!("10")),
            "max_tokens",
        ),
        (
            "max_completion_tokens negative",
            with("max_completion_tokens", json!(-3)),
            "max_completion_tokens",
        ),
        (
            "temperature negative",
            with("temperature", json!(-0.5)),
            "temperature",
        ),
        (
            "temperature out of range",
            with("temperature", json!(2.5)),
            "temperature",
        ),
        (
            "temperature huge",
            with("temperature", json!(1e308)),
            "temperature",
        ),
        (
            "temperature a string",
            with("temperature", json!("NaN")),
            "temperature",
        ),
        ("top_p negative", with("top_p", json!(-0.1)), "top_p"),
        ("top_p over 1", with("top_p", json!(1.01)), "top_p"),
        ("top_p a string", with("top_p", json!("Infinity")), "top_p"),
        (
            "presence_penalty out of range",
            with("presence_penalty", json!(-2.5)),
            "presence_penalty",
        ),
        (
            "frequency_penalty out of range",
            with("frequency_penalty", json!(3)),
            "frequency_penalty",
        ),
        (
            "repeat_penalty zero",
            with("repeat_penalty", json!(0)),
            "repeat_penalty",
        ),
        ("top_k negative", with("top_k", json!(-1)), "top_k"),
        ("min_p over 1", with("min_p", json!(2)), "min_p"),
        ("n 17", with("n", json!(17)), "n"),
        ("n 0", with("n", json!(0)), "n"),
        ("n huge", with("n", json!(1_000_000)), "n"),
        ("stream a string", with("stream", json!("yes")), "stream"),
        (
            "stream_options a list",
            with("stream_options", json!([])),
            "stream_options",
        ),
        ("seed fractional", with("seed", json!(0.5)), "seed"),
        (
            "five stop strings",
            with("stop", json!(["a", "b", "c", "d", "e"])),
            "stop",
        ),
        (
            "a long stop string",
            with("stop", json!(["x".repeat(1000)])),
            "stop",
        ),
        ("stop a number", with("stop", json!(5)), "stop"),
        ("stop with a number", with("stop", json!(["a", 5])), "stop"),
        (
            "response_format unknown type",
            with("response_format", json!({"type": "xml"})),
            "response_format.type",
        ),
        (
            "response_format a string",
            with("response_format", json!("json")),
            "response_format.type",
        ),
        (
            "json_schema without schema",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "json_schema schema a string",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"schema": "object"}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "json_schema with a bad ref",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"schema": {"$ref": "#/definitions/missing"}}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "json_schema with an unknown type",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"schema": {"type": "bogus"}}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "json_schema with properties a number",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": 5}}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "json_schema with an empty enum",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"schema": {"enum": []}}}),
            ),
            "response_format.json_schema.schema",
        ),
        (
            "json_schema with a remote ref (never fetched)",
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"schema": {"$ref": "http://example.com/s.json"}}}),
            ),
            "response_format.json_schema.schema",
        ),
    ];
    for (case, body, param) in &cases {
        let response = raw_post(service, "application/json", body.to_string().as_bytes());
        let error = assert_openai_error(&response, 400, case);
        assert_eq!(error["error"]["param"], *param, "{case}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{case}");
        assert_still_serving(service, case);
    }

    // A huge max_tokens within the accepted range is clamped to the room the slot leaves: with
    // the end-of-sequence token (`</s>`, id 2) barred, the answer runs to exactly that room.
    let window = crate::support::models(service)["data"][0]["max_model_len"]
        .as_u64()
        .unwrap();
    let mut huge = with("max_tokens", json!(1_000_000));
    huge["logit_bias"] = json!({"2": -100});
    let response = client().post(service.url(CHAT)).json(&huge).send().unwrap();
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().unwrap();
    let usage = &completion["usage"];
    let used =
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(used, window, "{usage}");
    assert_eq!(completion["choices"][0]["finish_reason"], "length");

    // Model names: unknown is a 404; one with path characters is not echoed back.
    for model in [
        "no-such-model",
        "../../../etc/passwd",
        "C:\\models\\x.gguf",
        "/root/.ssh/id_rsa",
    ] {
        let response = raw_post(
            service,
            "application/json",
            with("model", json!(model)).to_string().as_bytes(),
        );
        let error = assert_openai_error(&response, 404, model);
        assert_eq!(error["error"]["code"], "model_not_found");
        assert!(
            !response.body.contains("etc") && !response.body.contains("ssh"),
            "{}",
            response.body
        );
        assert_still_serving(service, model);
    }
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn a_100k_character_prompt_is_refused_fast_five_times_then_a_normal_one_succeeds() {
    let service = &Service::start(&tiny_model(), &["--ctx-size", "4096", "--parallel", "2"]);
    assert_still_serving(service, "warm-up");
    let rss_before = rss_kib(service.pid());
    // Every generation logs its prompt size; a refused prompt logs none.
    let generations = || {
        service
            .log()
            .lines()
            .filter(|l| l.contains("request finished") && l.contains(" prompt_tokens="))
            .count()
    };
    let generations_before = generations();
    for (i, text) in [
        "가".repeat(100_000),
        "a".repeat(100_000),
        "환경 ".repeat(33_334),
        "😀".repeat(100_000),
        "a b ".repeat(25_000),
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let response = client()
            .post(service.url(CHAT))
            .json(&json!({"model": "tiny-llama", "stream": i % 2 == 0,
                          "messages": [{"role": "user", "content": text}]}))
            .send()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status(), 400, "prompt {i}");
        let body = response.text().unwrap();
        assert_no_leak(&body, "100k prompt");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
        assert!(
            elapsed < Duration::from_millis(500),
            "prompt {i} took {elapsed:?} to refuse"
        );
    }
    let rss_after = rss_kib(service.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Nothing was tokenized, so nothing was logged as a generation.
    assert_eq!(generations(), generations_before, "{}", service.log());
    assert_still_serving(service, "five 100k prompts");
}

#[test]
fn request_values_never_reach_the_log_as_lines_of_their_own() {
    let service = &Service::start(&tiny_model(), &[]);
    let injected = "INJECTED-LOG-LINE";
    let query = format!(
        "{BASE_INFO}?sessionId=a%0D%0A{injected}&location=a%0A{injected}&workType=b&category={}",
        encode("비건")
    );
    assert_recommendation_completes(service, &query, "CR/LF in query values");
    let response = raw_post(
        service,
        "application/json",
        json!({"model": format!("x\r\n{injected}"), "messages": [{"role": "user", "content": format!("a\r\n{injected}")}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(response.status, 404);
    let mut headers = "GET /health HTTP/1.1
Host: localhost
Connection: close
User-Agent: x
"
    .to_string();
    headers.push_str(&format!("X-Request-Id: {injected}\r\n\r\n"));
    assert_eq!(raw(service, headers.as_bytes()).status, 200);
    // The two requests that log were answered after their `request finished` line was written;
    // waiting for both lines (not for a fixed time) means the log holds all they wrote.
    assert!(
        service.wait_for_log("request finished", 2, Duration::from_secs(10)),
        "{}",
        service.log()
    );
    for line in service.log().lines() {
        assert!(
            !line.starts_with(injected),
            "a request value became a log line: {line}"
        );
    }
}
