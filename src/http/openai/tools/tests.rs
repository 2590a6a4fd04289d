use serde_json::json;

use super::*;

fn weather() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "날씨",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
           {"type": "function", "function": {"name": "now"}}])
}

#[test]
fn functions_choice_and_parallel_are_read() {
    let tools = offered(Some(weather()), None, None).unwrap().unwrap();
    assert_eq!(tools.choice, ToolChoice::Auto);
    // Not given: one call, as llama-server.
    assert!(!tools.parallel);
    let parallel = offered(Some(weather()), None, Some(json!(true))).unwrap();
    assert!(parallel.unwrap().parallel);
    assert_eq!(tools.functions[0].name, "get_weather");
    assert_eq!(tools.functions[0].description.as_deref(), Some("날씨"));
    // No parameters: a function without arguments.
    assert_eq!(
        tools.functions[1].parameters,
        json!({"type": "object", "properties": {}})
    );

    let named = json!({"type": "function", "function": {"name": "now"}});
    let tools = offered(Some(weather()), Some(named), Some(json!(false)))
        .unwrap()
        .unwrap();
    assert_eq!(tools.choice, ToolChoice::Function("now".into()));
    assert!(!tools.parallel);
    let required = offered(Some(weather()), Some(json!("required")), None).unwrap();
    assert_eq!(required.unwrap().choice, ToolChoice::Required);
}

#[test]
fn none_or_no_tools_offer_nothing() {
    assert!(offered(Some(weather()), Some(json!("none")), None)
        .unwrap()
        .is_none());
    assert!(offered(None, Some(json!("auto")), None).unwrap().is_none());
    assert!(offered(Some(json!([])), None, None).unwrap().is_none());
}

#[test]
fn each_mistake_names_its_field() {
    let cases = [
        (json!({"a": 1}), None, "tools"),
        (json!([{"function": {"name": "a"}}]), None, "tools[0].type"),
        (json!([{"type": "retrieval"}]), None, "tools[0].type"),
        (json!([{"type": "function"}]), None, "tools[0].function"),
        (
            json!([{"type": "function", "function": {"name": "a b"}}]),
            None,
            "tools[0].function.name",
        ),
        (
            json!([{"type": "function", "function": {"name": "a", "parameters": "x"}}]),
            None,
            "tools[0].function.parameters",
        ),
        (weather(), Some(json!("sometimes")), "tool_choice"),
        (
            weather(),
            Some(json!({"type": "function", "function": {"name": "other"}})),
            "tool_choice",
        ),
    ];
    for (tools, choice, param) in cases {
        let e = offered(Some(tools), choice, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{e:?}");
        assert!(e.code.is_some(), "{e:?}");
    }
}

#[test]
fn history_calls_keep_ids_and_arguments_as_text() {
    let calls = history_calls(
        "messages[1]",
        json!([{"id": "abc123def", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"서울\"}"}},
               {"id": "x", "type": "function", "function": {"name": "now", "arguments": {"a": 1}}}]),
    )
    .unwrap();
    assert_eq!(calls[0].id, "abc123def");
    assert_eq!(calls[0].arguments, "{\"city\": \"서울\"}");
    assert_eq!(calls[1].arguments, "{\"a\":1}");
    let e = history_calls("messages[1]", json!([{"function": {}}])).unwrap_err();
    assert_eq!(
        e.param.as_deref(),
        Some("messages[1].tool_calls[0].function.name")
    );
}
