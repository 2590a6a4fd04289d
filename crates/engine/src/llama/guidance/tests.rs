use serde_json::json;

use super::*;

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
