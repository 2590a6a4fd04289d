//! Every model family's chat format, on synthetic models that carry the family's real template
//! and special tokens ([`TinyModelSpec::family`]): the template renders tool conversations as
//! Python's jinja2 does (token for token), client text spelled like the family's markup stays
//! text, and through the service each family's calls are made in its own syntax (auto,
//! required, a named function, parallel, streamed and not, a result round trip), with thinking
//! apart from the answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use leafresh_llm::engine::tokenizer::Tokenizer;
use leafresh_llm::engine::{ChatMessage, Role, ToolCall, ToolChoice, ToolFunction, Tools};
use leafresh_testmodel::{TinyModelSpec, FAMILIES};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use serde_json::{json, Map, Value};

use crate::support::{chat_ok, client, model_id, tiny_model_with, Service, SseReader};

/// The families whose template renders tools natively, and the syntax each is detected as.
const NATIVE: [(&str, &str); 6] = [
    ("qwen2.5", "hermes"),
    ("qwen3", "hermes"),
    ("hermes2pro", "hermes"),
    ("llama3.1", "llama3"),
    ("gpt-oss", "harmony"),
    ("mistral-v0.3", "mistral"),
];

/// Conversations jinja2 refuses and minijinja renders: Hermes 2 Pro's `tool_use` template
/// iterates `tools` when there are none (jinja2: a TypeError on `None`; minijinja: nothing to
/// iterate). The service renders those with an empty function list either way.
const LENIENT: &[&str] = &["hermes2pro/a_plain", "hermes2pro/f_markup_in_user_text"];

/// Each family's synthetic model, written once per run.
fn family_model(family: &str) -> PathBuf {
    static MODELS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut models = MODELS.get_or_init(Default::default).lock().unwrap();
    models
        .entry(family.to_owned())
        .or_insert_with(|| {
            let spec = TinyModelSpec::family(family).expect("a known family");
            tiny_model_with(&format!("family-{family}.gguf"), &spec)
        })
        .clone()
}

fn fixtures() -> Value {
    let path = crate::support::manifest_dir().join("tests/fixtures/chat_templates.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Today as Python's `strftime("%Y-%m-%d")` writes it: the fixtures were rendered with
/// `strftime_now` pinned to 2026-12-06, the service renders today.
fn today() -> String {
    let output = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn every_family_renders_as_pythons_jinja2_token_for_token() {
    let fixtures = fixtures();
    let mut compared = 0;
    let mut lenient = Vec::new();
    for family in FAMILIES {
        let path = family_model(family);
        let tokenizer = Tokenizer::load(&path, None).unwrap();
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model =
            LlamaModel::load_from_file(crate::model_file::backend(), &path, &params).unwrap();
        let vocab = model.vocab();
        for (case, fixture) in fixtures[*family].as_object().unwrap() {
            let mut context: Map<String, Value> = fixture["extra"].as_object().unwrap().clone();
            context.insert("messages".into(), fixture["messages"].clone());
            if !fixture["tools"].is_null() {
                context.insert("tools".into(), fixture["tools"].clone());
            }
            let ours = tokenizer
                .template_prompt(context)
                .expect("a Jinja template");
            let Some(rendered) = fixture["rendered"].as_str() else {
                // jinja2 raised: so does minijinja (the messages differ, not the fact), except
                // where it is lenient (iterating `none` gives nothing).
                if ours.is_ok() {
                    lenient.push(format!("{family}/{case}"));
                }
                continue;
            };
            let ours = ours.unwrap_or_else(|e| panic!("{family}/{case}: {e}"));
            let rendered = rendered.replace("2026-12-06", &today());
            let reference: Vec<i32> = vocab
                .tokenize(rendered.as_bytes(), false, true)
                .iter()
                .map(|t| t.0)
                .collect();
            let ours_ids: Vec<i32> = ours.iter().map(|t| t.0).collect();
            let spelled: Vec<u8> = ours
                .iter()
                .flat_map(|&t| vocab.token_to_piece(t, true, None))
                .collect();
            let spelled = String::from_utf8(spelled).unwrap();
            if case.starts_with("f_markup") {
                // The client wrote the markup: the same text, but as plain text, not tokens.
                assert_ne!(ours_ids, reference, "{family}/{case}");
                // The same text (SentencePiece's spaces aside: it writes them as `▁`, and adds
                // one before a text).
                let unspaced = |text: &str| text.replace([' ', '\u{2581}'], "");
                assert_eq!(unspaced(&spelled), unspaced(&rendered), "{family}/{case}");
            } else {
                assert_eq!(ours_ids, reference, "{family}/{case}\n{rendered}");
            }
            compared += 1;
        }
    }
    assert!(compared > 60, "{compared} renderings compared");
    assert_eq!(
        lenient, LENIENT,
        "renderings jinja2 refuses and minijinja makes"
    );
}

fn weather_tools(choice: ToolChoice, parallel: bool) -> Tools {
    Tools {
        functions: vec![
            ToolFunction {
                name: "get_weather".into(),
                description: Some("Weather in a city".into()),
                parameters: json!({"type": "object",
                    "properties": {"city": {"type": "string", "enum": ["Seoul", "Busan"]}},
                    "required": ["city"]}),
            },
            ToolFunction {
                name: "get_time".into(),
                description: Some("Time in a timezone".into()),
                parameters: json!({"type": "object",
                    "properties": {"zone": {"type": "string", "enum": ["Asia/Seoul"]}},
                    "required": ["zone"]}),
            },
        ],
        choice,
        parallel,
    }
}

/// A conversation with a call and its result in its history, every client string written by
/// `text` (plain, or spelled like markup).
fn round_trip(text: &dyn Fn(&str) -> String) -> Vec<ChatMessage> {
    let mut call = ChatMessage::assistant("");
    call.tool_calls = vec![ToolCall {
        id: "call00001".into(),
        name: "get_weather".into(),
        arguments: json!({"city": text("Seoul")}).to_string(),
    }];
    vec![
        ChatMessage::system(text("be brief")),
        ChatMessage::user(text("weather?")),
        call,
        ChatMessage {
            tool_call_id: Some("call00001".into()),
            ..ChatMessage::new(Role::Tool, text("sunny"))
        },
    ]
}

#[test]
fn client_text_spelled_like_markup_stays_text_in_every_family() {
    for family in FAMILIES {
        let spec = TinyModelSpec::family(family).unwrap();
        let markup: Vec<String> = spec.extra_tokens.iter().map(|(t, _)| t.clone()).collect();
        let all_markup = markup.concat();
        let tokenizer = Tokenizer::load(&family_model(family), None).unwrap();
        let count_markup = |prompt: &[llama_cpp_2::token::LlamaToken]| {
            prompt.iter().filter(|&&t| tokenizer.is_markup(t)).count()
        };
        let tools = weather_tools(ToolChoice::Auto, true);
        let plain = tokenizer
            .chat_prompt(&round_trip(&|t| t.to_owned()), Some(&tools), &Map::new())
            .unwrap_or_else(|e| panic!("{family}: {e}"));
        let forged = round_trip(&|t| format!("{t}{all_markup}"));
        let mut forged_tools = tools.clone();
        forged_tools.functions[0].description = Some(all_markup.clone());
        let forged = tokenizer
            .chat_prompt(&forged, Some(&forged_tools), &Map::new())
            .unwrap_or_else(|e| panic!("{family}: {e}"));
        assert_eq!(
            count_markup(forged.tokens()),
            count_markup(plain.tokens()),
            "{family}: client strings spelled {markup:?} became markup"
        );
    }
}

fn chat(service: &Service, body: Value) -> Value {
    chat_ok(service, &body)
}

/// The calls of a streamed answer, gathered from its chunks; and its content and reasoning.
fn stream(service: &Service, mut body: Value) -> (Vec<Value>, String, String, String) {
    body["stream"] = json!(true);
    let response = client()
        .post(service.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    let (mut calls, mut content, mut reasoning, mut finish) = (
        Vec::<Value>::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    while let Some(event) = reader.next_event() {
        if event.raw == "[DONE]" {
            break;
        }
        let chunk = event.json();
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or_default());
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push(json!({"name": call["function"]["name"], "arguments": ""}));
            }
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            let so_far = calls[index]["arguments"].as_str().unwrap().to_owned() + arguments;
            calls[index]["arguments"] = json!(so_far);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
    }
    (calls, content, reasoning, finish)
}

fn tools_json() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string", "enum": ["Seoul", "Busan"]}},
                "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
            "parameters": {"type": "object",
                "properties": {"zone": {"type": "string", "enum": ["Asia/Seoul"]}},
                "required": ["zone"]}}},
    ])
}

/// A call is of an offered function, with arguments valid for its schema.
fn assert_valid_call(family: &str, name: &str, arguments: &str) {
    let arguments: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("{family}: {name}'s arguments are JSON ({e}): {arguments:?}"));
    match name {
        "get_weather" => assert!(
            ["Seoul", "Busan"].contains(&arguments["city"].as_str().unwrap_or_default()),
            "{family}: {arguments}"
        ),
        "get_time" => assert_eq!(arguments["zone"], "Asia/Seoul", "{family}"),
        other => panic!("{family}: a call of {other}, which was not offered"),
    }
    assert_eq!(
        arguments.as_object().unwrap().len(),
        1,
        "{family}: {arguments}"
    );
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Required, named, streamed and not, parallel, and auto: every family's calls are made in its
/// own syntax and read back as OpenAI tool calls with valid arguments.
#[test]
fn every_family_calls_functions_in_its_own_syntax() {
    let families = NATIVE
        .iter()
        .copied()
        .chain([("deepseek-r1", "generic"), ("gemma3", "generic")]);
    for (family, syntax) in families {
        let mut service = Service::start(&family_model(family), &["--parallel", "1"]);
        service.wait_healthy();
        service.assert_logged(&format!("tool_format={syntax}"));
        let model = model_id(&service);
        let request = |choice: Value, parallel: bool| {
            json!({"model": model, "messages": user("weather in Seoul and the time?"),
                   "tools": tools_json(), "tool_choice": choice,
                   "parallel_tool_calls": parallel, "max_tokens": 160, "seed": 7})
        };
        for seed in 0..4 {
            // Parallel calls on every other request: a random model may go on calling until
            // its budget ends, which leaves its last call cut.
            let parallel = seed % 2 == 1;
            let mut body = request(json!("required"), parallel);
            body["seed"] = json!(seed);
            let answer = chat(&service, body);
            let choice = &answer["choices"][0];
            let calls = choice["message"]["tool_calls"].as_array().unwrap();
            let finish = choice["finish_reason"].as_str().unwrap();
            assert!(!calls.is_empty(), "{family}: {answer}");
            let complete = match finish {
                "tool_calls" => calls.len(),
                "length" if parallel => calls.len() - 1,
                _ => panic!("{family}: {answer}"),
            };
            if !parallel {
                assert_eq!(calls.len(), 1, "{family}: {answer}");
            }
            for call in &calls[..complete] {
                let function = &call["function"];
                assert_valid_call(
                    family,
                    function["name"].as_str().unwrap(),
                    function["arguments"].as_str().unwrap(),
                );
                assert!(!call["id"].as_str().unwrap().is_empty());
            }
            assert!(choice["message"]["content"].is_null(), "{family}: {answer}");
        }
        // A named function, streamed.
        let named = json!({"type": "function", "function": {"name": "get_time"}});
        let (calls, content, _, finish) = stream(&service, request(named, false));
        assert_eq!(finish, "tool_calls", "{family}");
        assert_eq!(calls.len(), 1, "{family}: {calls:?}");
        assert_eq!(calls[0]["name"], "get_time", "{family}");
        assert_valid_call(family, "get_time", calls[0]["arguments"].as_str().unwrap());
        assert!(content.is_empty(), "{family}: {content:?}");
        // Auto: text, or calls, each well formed.
        for seed in 0..3 {
            let mut body = request(json!("auto"), true);
            body["seed"] = json!(seed);
            let (calls, content, _, finish) = stream(&service, body);
            // A call cut by the budget is the last one.
            let complete = calls.len() - usize::from(finish == "length" && !calls.is_empty());
            for call in &calls[..complete] {
                assert_valid_call(
                    family,
                    call["name"].as_str().unwrap(),
                    call["arguments"].as_str().unwrap(),
                );
            }
            if !calls.is_empty() {
                assert!(
                    ["tool_calls", "length"].contains(&finish.as_str()),
                    "{family}"
                );
                assert!(
                    content.trim().is_empty() || syntax != "generic",
                    "{content:?}"
                );
            }
        }
        // A round trip: calls and their results in the history (two where the format has
        // parallel calls; Llama 3.1's template refuses two), then the answer.
        let mut history = json!([
            {"role": "user", "content": "weather in Seoul and the time?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call00001", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Seoul\"}"}},
                {"id": "call00002", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"zone\": \"Asia/Seoul\"}"}}]},
            {"role": "tool", "tool_call_id": "call00001", "content": "맑음, 21도"},
            {"role": "tool", "tool_call_id": "call00002", "content": "12:00"},
        ]);
        if ["llama3", "harmony"].contains(&syntax) {
            history[1]["tool_calls"].as_array_mut().unwrap().pop();
            history.as_array_mut().unwrap().pop();
        }
        let body = json!({"model": model, "messages": history, "tools": tools_json(),
                          "max_tokens": 12, "seed": 1});
        let answer = chat(&service, body);
        assert!(
            answer["usage"]["prompt_tokens"].as_u64().unwrap() > 20,
            "{family}"
        );
        service.terminate();
    }
}

/// Thinking is apart from the answer: streamed as `reasoning_content`, never in `content`; a
/// required call is made after it; `enable_thinking: false` leaves the answer without it.
#[test]
fn thinking_models_keep_their_thinking_out_of_the_answer() {
    for family in ["qwen3", "deepseek-r1"] {
        let mut service = Service::start(&family_model(family), &["--parallel", "1"]);
        service.wait_healthy();
        service.assert_logged("reasoning_format=<think>");
        let model = model_id(&service);
        for seed in 0..4 {
            let body = json!({"model": model, "messages": user("hi"), "max_tokens": 40,
                              "seed": seed});
            let (_, content, reasoning, _) = stream(&service, body.clone());
            assert!(!content.contains("<think>") && !content.contains("</think>"));
            assert!(!reasoning.contains("<think>") && !reasoning.contains("</think>"));
            let whole = chat(&service, body);
            let message = &whole["choices"][0]["message"];
            let text = message["content"].as_str().unwrap_or_default();
            assert!(!text.contains("</think>"), "{family}: {whole}");
        }
        if family == "deepseek-r1" {
            // Its prompt opens the thinking: the answer begins in it.
            let body = json!({"model": model, "messages": user("hi"), "max_tokens": 8,
                              "seed": 3});
            let (_, content, reasoning, _) = stream(&service, body);
            assert!(!reasoning.is_empty(), "content {content:?}");
            // The Responses and Anthropic shapes of it.
            let post = |path: &str, body: Value| -> Value {
                let response = client().post(service.url(path)).json(&body).send().unwrap();
                assert_eq!(response.status(), 200);
                response.json().unwrap()
            };
            let response = post(
                "/v1/responses",
                json!({"model": model, "input": "hi", "max_output_tokens": 8}),
            );
            assert_eq!(response["output"][0]["type"], "reasoning", "{response}");
            let text = &response["output"][0]["content"][0]["text"];
            assert!(!text.as_str().unwrap().is_empty(), "{response}");
            let message = post(
                "/v1/messages",
                json!({"model": model, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "hi"}]}),
            );
            assert_eq!(message["content"][0]["type"], "thinking", "{message}");
            // Sent back as it came, the thinking block is accepted and left out.
            let follow_up = post(
                "/v1/messages",
                json!({"model": model, "max_tokens": 4, "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": message["content"]},
                    {"role": "user", "content": "more"}]}),
            );
            assert_eq!(follow_up["type"], "message", "{follow_up}");
        }
        if family == "qwen3" {
            let body = json!({"model": model, "messages": user("hi"), "max_tokens": 16,
                              "chat_template_kwargs": {"enable_thinking": false}});
            let (_, _, reasoning, _) = stream(&service, body);
            assert!(reasoning.is_empty(), "{reasoning:?}");
        }
        service.terminate();
    }
}
