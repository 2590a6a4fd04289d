use serde_json::json;

use super::*;
use crate::ToolFunction;

fn tokens() -> ToolTokens {
    ToolTokens {
        calls: LlamaToken(5),
        available: LlamaToken(6),
        available_end: LlamaToken(7),
        results: LlamaToken(8),
        results_end: LlamaToken(9),
        inst: LlamaToken(3),
        inst_end: LlamaToken(4),
    }
}

fn weather(choice: ToolChoice, parallel: bool) -> Tools {
    Tools {
        functions: vec![
            ToolFunction {
                name: "get_weather".into(),
                description: Some("Weather of a city".into()),
                parameters: json!({"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 10}},
                    "required": ["city"], "additionalProperties": false}),
            },
            ToolFunction {
                name: "now".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
            },
        ],
        choice,
        parallel,
    }
}

/// Tokens as their ids, text as it is: the prompt the fragments describe, readable.
fn spelled(fragments: &[Fragment<LlamaToken>]) -> String {
    fragments
        .iter()
        .map(|f| match f {
            Fragment::Token(t) => format!("<{}>", t.0),
            Fragment::Text(text) => text.clone(),
        })
        .collect()
}

#[test]
fn a_round_trip_renders_as_mistrals_template_writes_it() {
    let call = ToolCall {
        id: "abc123def".into(),
        name: "get_weather".into(),
        arguments: "{\"city\":\"서울\"}".into(),
    };
    let messages = vec![
        ChatMessage::system("Be brief."),
        ChatMessage::user("서울 날씨?"),
        ChatMessage {
            tool_calls: vec![call],
            ..ChatMessage::assistant("")
        },
        ChatMessage {
            tool_call_id: Some("abc123def".into()),
            ..ChatMessage::new(Role::Tool, "{\"temp\": 3}")
        },
    ];
    let tools = weather(ToolChoice::Auto, true);
    let text = spelled(&render(&messages, Some(&tools), &tokens(), LlamaToken(2)));
    assert_eq!(
        text,
        concat!(
            "<6> [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", ",
            "\"description\": \"Weather of a city\", \"parameters\": {\"type\": \"object\", ",
            "\"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 10}}, ",
            "\"required\": [\"city\"], \"additionalProperties\": false}}}, ",
            "{\"type\": \"function\", \"function\": {\"name\": \"now\", \"parameters\": ",
            "{\"type\": \"object\", \"properties\": {}}}}]<7>",
            "<3> Be brief.\n\n서울 날씨?<4>",
            "<5> [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"서울\"}, \"id\": \"abc123def\"}]<2>",
            "<8> {\"content\": {\"temp\": 3}, \"call_id\": \"abc123def\"}<9>",
        )
    );
}

#[test]
fn a_plain_text_result_is_quoted_and_an_answer_trimmed() {
    let messages = vec![
        ChatMessage::user("a"),
        ChatMessage::assistant("  b "),
        ChatMessage {
            tool_call_id: Some("x".into()),
            ..ChatMessage::new(Role::Tool, "맑음 \"3도\"")
        },
    ];
    let text = spelled(&render(&messages, None, &tokens(), LlamaToken(2)));
    assert_eq!(
        text,
        "<3> a<4> b<2><8> {\"content\": \"맑음 \\\"3도\\\"\", \"call_id\": \"x\"}<9>"
    );
}

#[test]
fn without_a_user_turn_the_system_prompt_and_the_functions_get_a_turn_of_their_own() {
    let call = ToolCall {
        id: "abc123def".into(),
        name: "now".into(),
        arguments: "{}".into(),
    };
    let messages = vec![
        ChatMessage::system("Be brief."),
        ChatMessage {
            tool_calls: vec![call],
            ..ChatMessage::assistant("")
        },
        ChatMessage {
            tool_call_id: Some("abc123def".into()),
            ..ChatMessage::new(Role::Tool, "12:00")
        },
    ];
    let tools = weather(ToolChoice::Auto, false);
    let text = spelled(&render(&messages, Some(&tools), &tokens(), LlamaToken(2)));
    assert!(text.starts_with("<6> [{\"type\": \"function\""), "{text}");
    assert!(
        text.contains("<7><3> Be brief.<4><5> [{\"name\": \"now\""),
        "{text}"
    );
    assert!(
        text.ends_with("<8> {\"content\": \"12:00\", \"call_id\": \"abc123def\"}<9>"),
        "{text}"
    );
}

#[test]
fn a_functions_nested_models_are_resolved_against_its_own_parameters() {
    // What `openai.pydantic_function_tool` gives for a model that nests another.
    let mut tools = weather(ToolChoice::Auto, false);
    tools.functions[0].parameters = json!({
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                  "required": ["city"], "additionalProperties": false}},
        "type": "object", "properties": {"place": {"$ref": "#/$defs/Place"}},
        "required": ["place"], "additionalProperties": false
    });
    let grammar = calls_grammar(&tools);
    assert!(accepts(
        &grammar,
        r#" [{"name": "get_weather", "arguments": {"place": {"city": "서울"}}}]"#
    ));
    assert!(!accepts(
        &grammar,
        r#" [{"name": "get_weather", "arguments": {"place": {"town": "서울"}}}]"#
    ));
    assert!(accepts(&grammar, r#" [{"name": "now", "arguments": {}}]"#));
}

use crate::llama::guidance::lark_accepts as accepts;

#[test]
fn the_calls_grammar_admits_calls_of_the_offered_functions_only() {
    let one = r#" [{"name": "get_weather", "arguments": {"city": "서울"}}]"#;
    let two = r#" [{"name": "get_weather", "arguments": {"city": "서울"}}, {"name": "now", "arguments": {}}]"#;
    let auto = calls_grammar(&weather(ToolChoice::Auto, true));
    assert!(accepts(&auto, one));
    assert!(accepts(&auto, two));
    for wrong in [
        r#" [{"name": "delete_all", "arguments": {}}]"#,
        r#" [{"name": "get_weather", "arguments": {"town": "서울"}}]"#,
        r#" [{"name": "get_weather", "arguments": {"city": "서울서울서울서울서울서울"}}]"#,
        r#" []"#,
        r#"[{"name": "now", "arguments": {}}]"#,
    ] {
        assert!(!accepts(&auto, wrong), "{wrong}");
    }
    let single = calls_grammar(&weather(ToolChoice::Required, false));
    assert!(accepts(&single, one));
    assert!(!accepts(&single, two));
    let named = calls_grammar(&weather(ToolChoice::Function("now".into()), true));
    assert!(accepts(&named, r#" [{"name": "now", "arguments": {}}]"#));
    assert!(!accepts(&named, one));
}

#[test]
fn without_tool_tokens_calls_and_results_become_text() {
    let messages = vec![
        ChatMessage::user("a"),
        ChatMessage {
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "now".into(),
                arguments: "{}".into(),
            }],
            ..ChatMessage::assistant("")
        },
        ChatMessage {
            tool_call_id: Some("c1".into()),
            ..ChatMessage::new(Role::Tool, "12:00")
        },
    ];
    let plain = as_plain_messages(&messages);
    assert_eq!(
        plain[1],
        ChatMessage::assistant(r#"[{"name": "now", "arguments": {}}]"#)
    );
    assert_eq!(plain[2], ChatMessage::user("Result of tool call c1: 12:00"));
    assert!(!uses_tools(&plain, None));
    assert!(uses_tools(&messages, None));
}
