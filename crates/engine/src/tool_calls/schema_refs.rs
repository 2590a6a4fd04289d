//! A function's `parameters` schema moved into a larger schema (the list of calls a model may
//! write) with its `$ref`s still meaning what they meant in the function's own schema.
//!
//! `openai.pydantic_function_tool`, MCP servers and Pydantic give nested models as `$defs` plus
//! `{"$ref": "#/$defs/Name"}`. A reference is resolved against the document's root, so once the
//! parameters sit inside `{"type": "array", "items": {"anyOf": [...]}}` every `#/...` would point
//! into the list schema instead. So each function's schema and its definitions become entries of
//! the root's `$defs` under the function's own prefix, and its references are rewritten to match.

use serde_json::{Map, Value};

/// Where definitions live in a schema: JSON Schema 2019+ and draft 7.
const DEFINITION_KEYWORDS: [&str; 2] = ["$defs", "definitions"];

/// `parameters` of the function with `prefix` made self-contained under the root's `$defs`:
/// returns the schema to put in its place (a reference) and adds its entries to `root_defs`.
pub fn hoist(prefix: &str, mut parameters: Value, root_defs: &mut Map<String, Value>) -> Value {
    let mut definitions = Vec::new();
    if let Value::Object(object) = &mut parameters {
        for keyword in DEFINITION_KEYWORDS {
            if let Some(Value::Object(defs)) = object.remove(keyword) {
                definitions.extend(defs.into_iter().map(|(name, def)| (keyword, name, def)));
            }
        }
    }
    if definitions.is_empty() && !has_reference(&parameters) {
        // Nothing refers anywhere: the schema can stay where it is, as it is.
        return parameters;
    }
    for (keyword, name, mut def) in definitions {
        rewrite_references(&mut def, prefix);
        root_defs.insert(format!("{prefix}{}{name}", separator(keyword)), def);
    }
    rewrite_references(&mut parameters, prefix);
    root_defs.insert(prefix.to_owned(), parameters);
    serde_json::json!({ "$ref": format!("#/$defs/{prefix}") })
}

/// Keeps names from `$defs` and `definitions` apart (a schema may use both).
fn separator(keyword: &str) -> &'static str {
    if keyword == "$defs" {
        "-"
    } else {
        "--"
    }
}

fn has_reference(schema: &Value) -> bool {
    match schema {
        Value::Object(object) => {
            object.get("$ref").is_some_and(Value::is_string) || object.values().any(has_reference)
        }
        Value::Array(items) => items.iter().any(has_reference),
        _ => false,
    }
}

/// Every local `$ref` in `schema` rewritten from the function's root to its entries.
fn rewrite_references(schema: &mut Value, prefix: &str) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("$ref") {
                if let Some(rewritten) = rewritten(reference, prefix) {
                    *reference = rewritten;
                }
            }
            for (key, value) in object.iter_mut() {
                // `const` and `enum` hold values, not schemas.
                if key != "const" && key != "enum" {
                    rewrite_references(value, prefix);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_references(item, prefix)),
        _ => {}
    }
}

/// `reference` as seen from the root: `#/$defs/Name/...` to `#/$defs/{prefix}-Name/...`, any
/// other pointer into the function's schema to one under `#/$defs/{prefix}`. Remote references
/// are left as they are (the grammar compiler refuses them).
fn rewritten(reference: &str, prefix: &str) -> Option<String> {
    let pointer = reference.strip_prefix('#')?;
    for keyword in DEFINITION_KEYWORDS {
        if let Some(rest) = pointer.strip_prefix(&format!("/{keyword}/")) {
            return Some(format!("#/$defs/{prefix}{}{rest}", separator(keyword)));
        }
    }
    Some(format!("#/$defs/{prefix}{pointer}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `openai.pydantic_function_tool` gives for a model that nests another.
    fn pydantic() -> Value {
        json!({
            "$defs": {
                "Address": {
                    "properties": {"city": {"title": "City", "type": "string"}},
                    "required": ["city"], "title": "Address", "type": "object",
                    "additionalProperties": false
                }
            },
            "properties": {
                "name": {"type": "string"},
                "home": {"$ref": "#/$defs/Address"},
                "friends": {"type": "array", "items": {"$ref": "#"}}
            },
            "required": ["name", "home"], "type": "object", "additionalProperties": false
        })
    }

    #[test]
    fn definitions_move_to_the_root_under_the_functions_prefix() {
        let mut defs = Map::new();
        let placed = hoist("f0", pydantic(), &mut defs);
        assert_eq!(placed, json!({"$ref": "#/$defs/f0"}));
        let own = &defs["f0"];
        assert!(own.get("$defs").is_none());
        assert_eq!(own["properties"]["home"]["$ref"], "#/$defs/f0-Address");
        assert_eq!(own["properties"]["friends"]["items"]["$ref"], "#/$defs/f0");
        assert_eq!(defs["f0-Address"]["title"], "Address");
    }

    #[test]
    fn pointers_into_the_schema_and_draft_7_definitions_are_rewritten_too() {
        let mut defs = Map::new();
        let schema = json!({
            "definitions": {"Id": {"type": "integer"}},
            "properties": {
                "a": {"$ref": "#/definitions/Id"},
                "b": {"$ref": "#/properties/a"},
                "c": {"const": {"$ref": "#/not/a/schema"}}
            }
        });
        hoist("f1", schema, &mut defs);
        let own = &defs["f1"];
        assert_eq!(own["properties"]["a"]["$ref"], "#/$defs/f1--Id");
        assert_eq!(own["properties"]["b"]["$ref"], "#/$defs/f1/properties/a");
        assert_eq!(own["properties"]["c"]["const"]["$ref"], "#/not/a/schema");
        assert_eq!(defs["f1--Id"], json!({"type": "integer"}));
    }

    #[test]
    fn a_schema_without_references_stays_in_place() {
        let mut defs = Map::new();
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        assert_eq!(hoist("f0", schema.clone(), &mut defs), schema);
        assert!(defs.is_empty());
    }
}
