//! JSON written as Python's `json.dumps(value, ensure_ascii=False)` writes it, which is what Hugging
//! Face's chat templates get from their `tojson` filter: `", "` and `": "` between items on one
//! line, or with `indent` one item per line and `","` at line ends; keys in the order they came;
//! non-ASCII characters as they are; no HTML escaping. Templates render function lists, call
//! arguments and results this way, and a model was trained on exactly that text.

use serde_json::Value;

/// `value` on one line (`json.dumps(value, ensure_ascii=False)`).
pub fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write(value, None, 0, &mut out);
    out
}

/// `value` as `json.dumps(value, ensure_ascii=False, indent=indent)` writes it.
pub fn python_json_indented(value: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write(value, indent, 0, &mut out);
    out
}

fn write(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let (open, close, items): (char, char, Vec<(Option<&String>, &Value)>) = match value {
        Value::Array(list) => ('[', ']', list.iter().map(|v| (None, v)).collect()),
        Value::Object(fields) => ('{', '}', fields.iter().map(|(k, v)| (Some(k), v)).collect()),
        scalar => {
            out.push_str(&scalar.to_string());
            return;
        }
    };
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return;
    }
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * depth));
        }
    };
    for (i, (key, item)) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(if indent.is_some() { "," } else { ", " });
        }
        newline(out, depth + 1);
        if let Some(key) = key {
            out.push_str(&Value::String(key.clone()).to_string());
            out.push_str(": ");
        }
        write(item, indent, depth + 1, out);
    }
    newline(out, depth);
    out.push(close);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layouts_are_pythons() {
        let value =
            json!({"city": "서울 <b>", "unit": ["c", 1, 2.5, null, true], "e": {}, "l": []});
        assert_eq!(
            python_json(&value),
            r#"{"city": "서울 <b>", "unit": ["c", 1, 2.5, null, true], "e": {}, "l": []}"#
        );
        // json.dumps(value, ensure_ascii=False, indent=4)
        assert_eq!(
            python_json_indented(&json!({"a": [1, {"b": "\n"}], "c": {}}), Some(4)),
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": \"\\n\"\n        }\n    ],\n    \"c\": {}\n}"
        );
    }

    #[test]
    fn keys_keep_their_order() {
        let value: Value = serde_json::from_str(r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(python_json(&value), r#"{"z": 1, "a": 2}"#);
    }
}
