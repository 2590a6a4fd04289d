//! Tool calling on real weights: Gemma 3 270M has no tool format of its own, so it gets the
//! generic one (the functions described in the system text, a JSON answer held by the grammar),
//! with llama.cpp's gemma template and with Gemma 3's own Jinja template. Over several prompts:
//! a required call and a named one are made, with arguments valid for the schema; `auto` gives
//! a valid call or text; a result sent back reaches the prompt and is answered in text.

use serde_json::{json, Value};

use super::model_id;
use crate::support::{chat_ok, manifest_dir, real_model, Service, REAL_MODEL_TEMPLATE};

const PROMPTS: [&str; 4] = [
    "서울 날씨 어때?",
    "What's the weather like in Busan today?",
    "부산은 지금 비가 와?",
    "Tell me the weather in Seoul, please.",
];

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "enum": ["Seoul", "Busan"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"]}}},
        {"type": "function", "function": {"name": "get_time",
            "description": "Current time in a timezone",
            "parameters": {"type": "object", "properties": {
                "zone": {"type": "string"}}, "required": ["zone"]}}},
    ])
}

fn chat(service: &Service, body: Value) -> Value {
    chat_ok(service, &body)
}

fn assert_valid(call: &Value, context: &str) {
    let name = call["function"]["name"].as_str().unwrap();
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{context}: arguments are JSON: {e}: {call}"));
    match name {
        "get_weather" => {
            assert!(["Seoul", "Busan"].contains(&arguments["city"].as_str().unwrap()));
            assert!(["celsius", "fahrenheit"].contains(&arguments["unit"].as_str().unwrap()));
            assert_eq!(
                arguments.as_object().unwrap().len(),
                2,
                "{context}: {arguments}"
            );
        }
        "get_time" => assert!(arguments["zone"].is_string(), "{context}: {arguments}"),
        other => panic!("{context}: {other} was not offered"),
    }
}

fn calls_on(template: &[&str]) {
    let service = Service::start(&real_model(), template);
    let model = model_id(&service);
    let context = format!("{template:?}");
    for prompt in PROMPTS {
        let body = |choice: Value| {
            json!({"model": model, "messages": [{"role": "user", "content": prompt}],
                   "tools": tools(), "tool_choice": choice, "max_tokens": 120})
        };
        for choice in [
            json!("required"),
            json!({"type": "function", "function": {"name": "get_weather"}}),
        ] {
            let answer = chat(&service, body(choice.clone()));
            let message = &answer["choices"][0]["message"];
            assert_eq!(
                answer["choices"][0]["finish_reason"], "tool_calls",
                "{context}: {answer}"
            );
            let calls = message["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{context} {choice}: {answer}");
            assert_valid(&calls[0], &context);
            if choice.is_object() {
                assert_eq!(calls[0]["function"]["name"], "get_weather");
            }
            assert!(message["content"].is_null(), "{context}: {answer}");
        }
        let answer = chat(&service, body(json!("auto")));
        let message = &answer["choices"][0]["message"];
        match message["tool_calls"].as_array() {
            Some(calls) => calls.iter().for_each(|c| assert_valid(c, &context)),
            None => assert!(
                !message["content"]
                    .as_str()
                    .unwrap()
                    .trim_start()
                    .starts_with('{'),
                "{context}: a message, not the JSON it came in: {answer}"
            ),
        }

        // The round trip: the call and its result, then a text answer that knows it.
        let call = json!({"id": "call00001", "type": "function", "function":
                          {"name": "get_weather", "arguments": "{\"city\": \"Seoul\", \"unit\": \"celsius\"}"}});
        let messages = json!([
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call00001", "content": "{\"temperature\": 21, \"sky\": \"clear\"}"},
        ]);
        let answer = chat(
            &service,
            json!({"model": model, "messages": messages, "tools": tools(), "tool_choice": "none",
                   "max_tokens": 40}),
        );
        let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(!text.trim().is_empty(), "{context}: {answer}");
        let alone = chat(
            &service,
            json!({"model": model, "messages": [messages[0].clone()], "max_tokens": 1}),
        );
        let tokens = |a: &Value| a["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(
            tokens(&answer) > tokens(&alone) + 20,
            "{context}: the result is in the prompt"
        );
    }
}

#[test]
fn gemma_calls_functions_in_the_generic_format_with_llama_cpps_template() {
    calls_on(&REAL_MODEL_TEMPLATE);
}

#[test]
fn gemma_calls_functions_in_the_generic_format_with_its_own_jinja_template() {
    let template = manifest_dir().join("crates/testmodel/src/templates/gemma3.jinja");
    let template = template.to_str().unwrap().to_owned();
    calls_on(&["--chat-template", &template]);
}
