use serde_json::json;

use super::*;
use crate::ToolFunction;

/// The calls `text` describes, read in pieces of `cut` characters: (name, arguments) per index.
fn read(text: &str, cut: usize) -> Vec<(String, String)> {
    let mut stream = ToolCallStream::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(cut) {
        for event in stream.push(&piece.iter().collect::<String>()) {
            match event {
                ToolCallEvent::Begin { index, name } => {
                    assert_eq!(index, calls.len(), "calls begin in order");
                    calls.push((name, String::new()));
                }
                ToolCallEvent::Arguments { index, fragment } => {
                    assert!(!fragment.is_empty());
                    calls[index].1.push_str(&fragment);
                }
            }
        }
    }
    calls
}

#[test]
fn calls_are_read_whole_wherever_the_text_is_cut() {
    let text = r#"[{"name": "get_weather", "arguments": {"city": "서울", "units": {"c": true}}}, {"name": "note", "arguments": {"text": "a \"quoted\" }, ] brace"}}]"#;
    for cut in 1..=text.chars().count() {
        let calls = read(text, cut);
        assert_eq!(
            calls,
            vec![
                (
                    "get_weather".to_owned(),
                    r#"{"city": "서울", "units": {"c": true}}"#.to_owned()
                ),
                (
                    "note".to_owned(),
                    r#"{"text": "a \"quoted\" }, ] brace"}"#.to_owned()
                ),
            ],
            "cut {cut}"
        );
    }
}

#[test]
fn arguments_before_the_name_are_sent_once_it_is_known() {
    let text = r#" [{"arguments": {"q": [1, 2]}, "name": "search"}]"#;
    for cut in 1..=8 {
        assert_eq!(
            read(text, cut),
            vec![("search".to_owned(), r#"{"q": [1, 2]}"#.to_owned())]
        );
    }
}

#[test]
fn arguments_as_a_string_or_empty_are_kept_as_written() {
    assert_eq!(
        read(
            r#"[{"name": "a", "arguments": "{\"x\": 1}"}, {"name": "b", "arguments": {}}]"#,
            3
        ),
        vec![
            ("a".to_owned(), r#""{\"x\": 1}""#.to_owned()),
            ("b".to_owned(), "{}".to_owned())
        ]
    );
}

#[test]
fn a_call_without_a_name_is_never_sent() {
    assert!(read(r#"[{"arguments": {"x": 1}}]"#, 2).is_empty());
}

#[test]
fn call_ids_are_nine_letters_or_digits_and_differ() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_call_id()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids
        .iter()
        .all(|id| id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric())));
}

/// Two functions, one with a bounded argument: the tools the tool-call tests offer.
pub(crate) fn weather(choice: ToolChoice, parallel: bool) -> Tools {
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
