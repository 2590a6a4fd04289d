//! `/v1` tool calling on the way in: `tools`, `tool_choice` and `parallel_tool_calls`, and the
//! calls an assistant message of the history made. Each error names the field.

use serde_json::Value;

use crate::engine::{ToolCall, ToolChoice, ToolFunction, Tools};
use crate::http::error::OpenAiError;

/// Longest function name, as OpenAI allows.
const MAX_NAME_LEN: usize = 64;

/// The functions offered, or `None` when there are none or `tool_choice` is `"none"`.
pub fn offered(
    tools: Option<Value>,
    choice: Option<Value>,
    parallel: Option<Value>,
) -> Result<Option<Tools>, OpenAiError> {
    let functions = match tools {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| function(i, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "tools",
                "`tools` must be an array of {type: \"function\", function} objects",
            )
            .code("invalid_type"))
        }
    };
    // Not given: one call, as llama-server does. Small models offered a list of calls tend to
    // repeat the same call until their budget ends.
    let parallel = match parallel {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "parallel_tool_calls",
                "`parallel_tool_calls` must be a boolean",
            )
            .code("invalid_type"))
        }
    };
    let Some(choice) = tool_choice(choice, &functions)? else {
        return Ok(None);
    };
    if functions.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tools {
        functions,
        choice,
        parallel,
    }))
}

fn function(index: usize, item: Value) -> Result<ToolFunction, OpenAiError> {
    let param = format!("tools[{index}]");
    let invalid = |field: &str, message: &str, code: &'static str| {
        OpenAiError::invalid(format!("{param}{field}"), message.to_owned()).code(code)
    };
    match item.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(_) => {
            return Err(invalid(
                ".type",
                "only tools of type \"function\" are supported",
                "invalid_value",
            ))
        }
        None => {
            return Err(invalid(
                ".type",
                "a tool needs `type`",
                "missing_required_parameter",
            ))
        }
    }
    let Some(function) = item.get("function").filter(|f| f.is_object()) else {
        return Err(invalid(
            ".function",
            "a tool needs a `function` object",
            "missing_required_parameter",
        ));
    };
    let name = function_name(function.get("name"))
        .map_err(|message| invalid(".function.name", message, "invalid_value"))?;
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            return Err(invalid(
                ".function.description",
                "`description` must be a string",
                "invalid_type",
            ))
        }
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => {
            return Err(invalid(
                ".function.parameters",
                "`parameters` must be a JSON schema object",
                "invalid_type",
            ))
        }
    };
    Ok(ToolFunction {
        name,
        description,
        parameters,
    })
}

/// A function name as OpenAI allows it: 1 to 64 letters, digits, `_` or `-`.
fn function_name(value: Option<&Value>) -> Result<String, &'static str> {
    let Some(Value::String(name)) = value else {
        return Err("a function needs a `name` string");
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err("a function name must be 1 to 64 letters, digits, underscores or dashes");
    }
    Ok(name.clone())
}

/// `tool_choice`; `None` for `"none"`. A named function must be one of `functions`.
fn tool_choice(
    choice: Option<Value>,
    functions: &[ToolFunction],
) -> Result<Option<ToolChoice>, OpenAiError> {
    let invalid =
        |message: String| OpenAiError::invalid("tool_choice", message).code("invalid_value");
    match choice {
        None | Some(Value::Null) => Ok(Some(ToolChoice::Auto)),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(None),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(invalid(
                "`tool_choice` must be \"none\", \"auto\", \"required\" or {type: \"function\", \
                 function: {name}}"
                    .into(),
            )),
        },
        Some(named) => {
            let name = function_name(named.pointer("/function/name"))
                .map_err(|message| invalid(message.into()))?;
            if !functions.iter().any(|f| f.name == name) {
                return Err(invalid(
                    "`tool_choice` names a function that is not in `tools`".into(),
                ));
            }
            Ok(Some(ToolChoice::Function(name)))
        }
    }
}

/// The `tool_calls` of assistant message `param`.
pub fn history_calls(param: &str, value: Value) -> Result<Vec<ToolCall>, OpenAiError> {
    let Value::Array(items) = value else {
        return Err(OpenAiError::invalid(
            format!("{param}.tool_calls"),
            format!("`{param}.tool_calls` must be an array"),
        )
        .code("invalid_type"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            let at = format!("{param}.tool_calls[{i}]");
            let text = |pointer: &str| call.pointer(pointer).and_then(Value::as_str);
            let name = function_name(call.pointer("/function/name")).map_err(|message| {
                OpenAiError::invalid(format!("{at}.function.name"), message).code("invalid_value")
            })?;
            // OpenAI sends the arguments as JSON in a string; some clients send the object.
            let arguments = match call.pointer("/function/arguments") {
                Some(Value::String(text)) => text.clone(),
                None | Some(Value::Null) => "{}".into(),
                Some(value) => value.to_string(),
            };
            Ok(ToolCall {
                id: text("/id").unwrap_or_default().to_owned(),
                name,
                arguments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
