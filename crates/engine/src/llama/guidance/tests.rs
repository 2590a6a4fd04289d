use serde_json::json;

use super::*;
use crate::tool_calls::tests::weather;
use crate::ToolChoice;

#[test]
fn integers_get_the_safe_range_and_objects_are_closed_but_only_schemas_are_touched() {
    let schema = json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "bounded": {"type": "integer", "minimum": 0},
            // A property named like keywords: its name is not a schema.
            "properties": {"type": "object", "properties": {"type": {"type": "integer"}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": true},
            "list": {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"const": {"type": "integer"}}]}},
        },
        "$defs": {"n": {"type": "integer"}},
        "enum": [{"type": "integer", "properties": {}}],
    });
    let out = with_layout(schema);
    let safe =
        json!({"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER});
    assert_eq!(out["properties"]["count"], safe);
    assert_eq!(
        out["properties"]["bounded"],
        json!({"type": "integer", "minimum": 0})
    );
    assert_eq!(out["additionalProperties"], false);
    let inner = &out["properties"]["properties"];
    assert_eq!(inner["additionalProperties"], false);
    assert_eq!(inner["properties"]["type"], safe);
    assert!(inner["properties"].get("additionalProperties").is_none());
    assert_eq!(out["properties"]["open"]["additionalProperties"], true);
    assert_eq!(out["properties"]["list"]["items"]["anyOf"][0], safe);
    assert_eq!(
        out["properties"]["list"]["items"]["anyOf"][1],
        json!({"const": {"type": "integer"}})
    );
    assert_eq!(out["$defs"]["n"], safe);
    assert_eq!(out["enum"], json!([{"type": "integer", "properties": {}}]));
    assert_eq!(out["x-guidance"]["whitespace_flexible"], false);
}

#[test]
fn a_schemas_own_layout_is_kept() {
    let out = with_layout(json!({"type": "object", "x-guidance": {"whitespace_flexible": true}}));
    assert_eq!(out["x-guidance"], json!({"whitespace_flexible": true}));
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
    assert!(lark_accepts(
        &grammar,
        r#" [{"name": "get_weather", "arguments": {"place": {"city": "서울"}}}]"#
    ));
    assert!(!lark_accepts(
        &grammar,
        r#" [{"name": "get_weather", "arguments": {"place": {"town": "서울"}}}]"#
    ));
    assert!(lark_accepts(
        &grammar,
        r#" [{"name": "now", "arguments": {}}]"#
    ));
}

#[test]
fn the_calls_grammar_admits_calls_of_the_offered_functions_only() {
    let one = r#" [{"name": "get_weather", "arguments": {"city": "서울"}}]"#;
    let two = r#" [{"name": "get_weather", "arguments": {"city": "서울"}}, {"name": "now", "arguments": {}}]"#;
    let auto = calls_grammar(&weather(ToolChoice::Auto, true));
    assert!(lark_accepts(&auto, one));
    assert!(lark_accepts(&auto, two));
    for wrong in [
        r#" [{"name": "delete_all", "arguments": {}}]"#,
        r#" [{"name": "get_weather", "arguments": {"town": "서울"}}]"#,
        r#" [{"name": "get_weather", "arguments": {"city": "서울서울서울서울서울서울"}}]"#,
        r#" []"#,
        r#"[{"name": "now", "arguments": {}}]"#,
    ] {
        assert!(!lark_accepts(&auto, wrong), "{wrong}");
    }
    let single = calls_grammar(&weather(ToolChoice::Required, false));
    assert!(lark_accepts(&single, one));
    assert!(!lark_accepts(&single, two));
    let named = calls_grammar(&weather(ToolChoice::Function("now".into()), true));
    assert!(lark_accepts(
        &named,
        r#" [{"name": "now", "arguments": {}}]"#
    ));
    assert!(!lark_accepts(&named, one));
}
