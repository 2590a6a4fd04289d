//! `/v1` conversations on the way in: `messages` of a chat completion or a `/tokenize` body, each
//! checked and turned into the engine's [`ChatMessage`]s (tool calls and results included).

use serde_json::Value;

use super::tools;
use crate::engine::{ChatMessage, Role, Tools};
use crate::http::error::OpenAiError;

pub fn messages(value: Option<Value>) -> Result<Vec<ChatMessage>, OpenAiError> {
    let Some(Value::Array(items)) = value else {
        return Err(OpenAiError::invalid(
            "messages",
            "`messages` must be a non-empty array of {role, content} objects",
        )
        .code("invalid_type"));
    };
    if items.is_empty() {
        return Err(
            OpenAiError::invalid("messages", "`messages` must not be empty").code("empty_array"),
        );
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| message(i, item))
        .collect()
}

fn message(index: usize, item: Value) -> Result<ChatMessage, OpenAiError> {
    let param = format!("messages[{index}]");
    let Value::Object(mut fields) = item else {
        return Err(
            OpenAiError::invalid(&param, format!("`{param}` must be an object"))
                .code("invalid_type"),
        );
    };
    let role = match fields.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => {
            return Err(OpenAiError::invalid(
                format!("{param}.role"),
                format!(
                    "`{param}.role` must be system, user, assistant or tool; got {}",
                    quoted_if_a_name(other)
                ),
            )
            .code("invalid_value"))
        }
        None => {
            return Err(OpenAiError::invalid(
                format!("{param}.role"),
                format!("`{param}.role` is required"),
            )
            .code("missing_required_parameter"))
        }
    };
    let tool_calls = match fields.remove("tool_calls") {
        Some(calls) if role == Role::Assistant && !calls.is_null() => {
            tools::history_calls(&param, calls)?
        }
        _ => Vec::new(),
    };
    let tool_call_id = match fields.remove("tool_call_id") {
        Some(Value::String(id)) if role == Role::Tool => Some(id),
        _ if role == Role::Tool => {
            return Err(OpenAiError::invalid(
                format!("{param}.tool_call_id"),
                format!("`{param}.tool_call_id` is required: the id of the call this answers"),
            )
            .code("missing_required_parameter"))
        }
        _ => None,
    };
    let content = match fields.remove("content") {
        Some(Value::String(text)) => text,
        Some(Value::Array(parts)) => text_parts(&param, parts)?,
        // An assistant turn that only called tools has no content; it contributes nothing.
        Some(Value::Null) | None if role == Role::Assistant => String::new(),
        _ => {
            return Err(OpenAiError::invalid(
                format!("{param}.content"),
                format!("`{param}.content` must be a string or an array of text parts"),
            )
            .code("invalid_type"))
        }
    };
    // A history can carry NUL characters back (a model may emit the byte token <0x00>), and
    // llama.cpp takes C strings: drop them rather than refuse the conversation.
    let content = if content.contains('\0') {
        content.replace('\0', "")
    } else {
        content
    };
    Ok(ChatMessage {
        tool_calls,
        tool_call_id,
        ..ChatMessage::new(role, content)
    })
}

fn text_parts(param: &str, parts: Vec<Value>) -> Result<String, OpenAiError> {
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        match (
            part.get("type").and_then(Value::as_str),
            part.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(piece)) => text.push_str(piece),
            (Some("text"), None) => {
                return Err(OpenAiError::invalid(
                    format!("{param}.content[{i}].text"),
                    "a text part needs a `text` string",
                )
                .code("invalid_type"))
            }
            (kind, _) => {
                return Err(OpenAiError::invalid(
                    format!("{param}.content[{i}].type"),
                    format!(
                        "this model takes text only; content part type {} is not supported",
                        kind.map_or_else(|| "(missing)".into(), quoted_if_a_name)
                    ),
                )
                .code("invalid_value"))
            }
        }
    }
    Ok(text)
}

/// What a `/tokenize` body asks to count.
pub struct TokenizeRequest {
    /// The model named, if any.
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// The functions offered.
    pub tools: Option<Tools>,
}

/// A `/tokenize` body (`{"model", "messages": [...], "tools": [...]}`, as vLLM takes it; other
/// fields are ignored).
pub fn tokenize_messages(body: &[u8]) -> Result<TokenizeRequest, OpenAiError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| OpenAiError::from_json(&e))?;
    if !value.is_object() {
        return Err(OpenAiError::invalid(
            "body",
            "The body must be a JSON object with `messages`.",
        )
        .code("invalid_type"));
    }
    let mut take = |field: &str| value.get_mut(field).map(Value::take);
    let model = take("model").and_then(|m| m.as_str().map(str::to_owned));
    let tools = tools::offered(take("tools"), None, None)?;
    Ok(TokenizeRequest {
        model,
        messages: messages(take("messages"))?,
        tools,
    })
}

/// Names of the OpenAI API we do not serve (roles, content part types): quoted in an error when
/// the client sent one of them, which says what is unsupported without repeating client text.
const KNOWN_UNSUPPORTED: &[&str] = &["function", "image_url", "input_audio", "file", "refusal"];

/// `text` quoted when it is one of [`KNOWN_UNSUPPORTED`], else "another value".
fn quoted_if_a_name(text: &str) -> String {
    if KNOWN_UNSUPPORTED.contains(&text) {
        format!("{text:?}")
    } else {
        "another value".into()
    }
}
