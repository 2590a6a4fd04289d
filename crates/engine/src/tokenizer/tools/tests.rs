use super::*;
use crate::tool_calls::tests::weather;
use crate::ToolChoice;

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
