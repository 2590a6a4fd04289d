//! Anthropic Messages requests (`POST /v1/messages`, `/v1/messages/count_tokens`): `system`,
//! messages of text, `tool_use` and `tool_result` blocks, `tools` with `input_schema`,
//! `tool_choice`, the sampling fields, checked and turned into the engine's conversation. Errors
//! are OpenAI-style internally (`param` names the field); the handler writes Anthropic's shape.

use serde::Deserialize;
use serde_json::Value;

use crate::engine::{ChatMessage, Role, SamplingParams, ToolCall, ToolChoice, ToolFunction, Tools};
use crate::http::error::OpenAiError;
use crate::http::openai::request::{integer, number};

/// Most stop sequences of one request.
const MAX_STOP_SEQUENCES: usize = 16;

/// The request as sent; validation, not serde, says what is missing or wrong.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    model: Option<Value>,
    max_tokens: Option<Value>,
    messages: Option<Value>,
    system: Option<Value>,
    stop_sequences: Option<Value>,
    stream: Option<Value>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    top_k: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
}

/// A Messages request whose every value is present and in range.
#[derive(Debug, Clone)]
pub struct ValidMessages {
    pub model: String,
    /// `None` for `count_tokens`, which takes none.
    pub max_tokens: Option<usize>,
    pub messages: Vec<ChatMessage>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub sampling: SamplingParams,
    pub tools: Option<Tools>,
}

impl MessagesRequest {
    /// Checks a request; `count_only` for `count_tokens`, which needs no `max_tokens`.
    pub fn validate(self, count_only: bool) -> Result<ValidMessages, OpenAiError> {
        let model = match self.model {
            Some(Value::String(model)) if !model.trim().is_empty() => model,
            _ => return Err(OpenAiError::invalid("model", "model: Field required")),
        };
        let max_tokens = integer("max_tokens", self.max_tokens.as_ref(), 1, 1 << 20)?;
        if max_tokens.is_none() && !count_only {
            return Err(OpenAiError::invalid(
                "max_tokens",
                "max_tokens: Field required",
            ));
        }
        let mut messages = system(self.system)?;
        messages.extend(conversation(self.messages)?);
        let defaults = SamplingParams::default();
        // Anthropic's own defaults are temperature 1 and no top-k or top-p: llama.cpp's defaults
        // stand in for a field left out, as on the OpenAI API.
        let sampling = SamplingParams {
            temperature: number("temperature", self.temperature.as_ref(), 0.0, 1.0)?
                .unwrap_or(defaults.temperature),
            top_p: number("top_p", self.top_p.as_ref(), 0.0, 1.0)?.unwrap_or(defaults.top_p),
            top_k: integer("top_k", self.top_k.as_ref(), 0, 1 << 20)?
                .map_or(defaults.top_k, |k| k as i32),
            ..defaults
        };
        Ok(ValidMessages {
            model,
            max_tokens: max_tokens.map(|n| n as usize),
            messages,
            stop: stop_sequences(self.stop_sequences)?,
            stream: matches!(self.stream, Some(Value::Bool(true))),
            sampling,
            tools: tools(self.tools, self.tool_choice)?,
        })
    }
}

/// `system`: a string or a list of text blocks.
fn system(value: Option<Value>) -> Result<Vec<ChatMessage>, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![ChatMessage::system(text)]),
        Some(Value::Array(blocks)) => {
            let text = texts("system", &blocks)?;
            Ok(vec![ChatMessage::system(text)])
        }
        Some(_) => Err(OpenAiError::invalid(
            "system",
            "system: must be a string or a list of text blocks",
        )),
    }
}

/// The text of a list of `text` blocks, joined.
fn texts(param: &str, blocks: &[Value]) -> Result<String, OpenAiError> {
    let mut text = String::new();
    for (i, block) in blocks.iter().enumerate() {
        match (block.get("type").and_then(Value::as_str), block.get("text")) {
            (Some("text"), Some(Value::String(piece))) => text.push_str(piece),
            _ => {
                return Err(OpenAiError::invalid(
                    format!("{param}.{i}"),
                    format!("{param}.{i}: only text blocks are supported here"),
                ))
            }
        }
    }
    Ok(text)
}

/// `messages`: alternating user and assistant messages, each a string or a list of blocks. A
/// user message's `tool_result` blocks become tool messages (before its text); an assistant
/// message's `tool_use` blocks become its tool calls.
fn conversation(value: Option<Value>) -> Result<Vec<ChatMessage>, OpenAiError> {
    let Some(Value::Array(items)) = value else {
        return Err(OpenAiError::invalid(
            "messages",
            "messages: Field required (a list of {role, content})",
        ));
    };
    if items.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "messages: at least one message is required",
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages.{i}");
        let role = match item.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(OpenAiError::invalid(
                    format!("{param}.role"),
                    format!("{param}.role: must be \"user\" or \"assistant\""),
                ))
            }
        };
        match item.get("content") {
            Some(Value::String(text)) => messages.push(ChatMessage::new(role, text.clone())),
            Some(Value::Array(blocks)) => {
                messages.extend(blocks_of(&param, role, blocks)?);
            }
            _ => {
                return Err(OpenAiError::invalid(
                    format!("{param}.content"),
                    format!("{param}.content: must be a string or a list of content blocks"),
                ))
            }
        }
    }
    Ok(messages)
}

/// The messages one Anthropic message's blocks make.
fn blocks_of(param: &str, role: Role, blocks: &[Value]) -> Result<Vec<ChatMessage>, OpenAiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{param}.content.{j}");
        let invalid = |message: &str| OpenAiError::invalid(&at, format!("{at}: {message}"));
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => match block.get("text") {
                Some(Value::String(piece)) => text.push_str(piece),
                _ => return Err(invalid("a text block needs `text`")),
            },
            (Role::Assistant, Some("tool_use")) => {
                let name = block.get("name").and_then(Value::as_str);
                let (Some(id), Some(name)) = (block.get("id").and_then(Value::as_str), name) else {
                    return Err(invalid("a tool_use block needs `id` and `name`"));
                };
                calls.push(ToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments: block
                        .get("input")
                        .map_or_else(|| "{}".to_owned(), Value::to_string),
                });
            }
            (Role::User, Some("tool_result")) => {
                let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(invalid("a tool_result block needs `tool_use_id`"));
                };
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => texts(&format!("{at}.content"), parts)?,
                    Some(_) => return Err(invalid("`content` must be a string or text blocks")),
                };
                let mut result = ChatMessage::new(Role::Tool, content);
                result.tool_call_id = Some(id.to_owned());
                results.push(result);
            }
            // An earlier answer's thinking, sent back as it came: not part of the prompt (the
            // templates of thinking models leave earlier thinking out too).
            (Role::Assistant, Some("thinking" | "redacted_thinking")) => {}
            (_, Some(kind @ ("image" | "document" | "thinking" | "redacted_thinking"))) => {
                return Err(invalid(&format!(
                    "{kind} blocks are not supported: this server serves a text model"
                )))
            }
            _ => return Err(invalid("an unknown or misplaced content block")),
        }
    }
    let mut messages = results;
    if !text.is_empty() || !calls.is_empty() || messages.is_empty() {
        let mut message = ChatMessage::new(role, text);
        message.tool_calls = calls;
        messages.push(message);
    }
    Ok(messages)
}

/// `stop_sequences`: a list of strings.
fn stop_sequences(value: Option<Value>) -> Result<Vec<String>, OpenAiError> {
    let invalid = |message: &str| OpenAiError::invalid("stop_sequences", message.to_owned());
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_SEQUENCES {
                return Err(invalid("stop_sequences: too many stop sequences"));
            }
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) if !s.is_empty() && s.len() <= 256 => Ok(s),
                    _ => Err(invalid(
                        "stop_sequences: each must be a non-empty string of at most 256 bytes",
                    )),
                })
                .collect()
        }
        Some(_) => Err(invalid("stop_sequences: must be a list of strings")),
    }
}

/// `tools` (name, description, input_schema) and `tool_choice` (`auto`, `any`, `tool` with a
/// name, `none`; `disable_parallel_tool_use`).
fn tools(value: Option<Value>, choice: Option<Value>) -> Result<Option<Tools>, OpenAiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(OpenAiError::invalid("tools", "tools: must be a list")),
    };
    let mut functions = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("tools.{i}");
        let invalid = |message: &str| OpenAiError::invalid(&at, format!("{at}: {message}"));
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .ok_or_else(|| invalid("`name` must be 1 to 64 letters, digits, `_` or `-`"))?;
        let parameters = match item.get("input_schema") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            _ => return Err(invalid("`input_schema` must be a JSON schema object")),
        };
        functions.push(ToolFunction {
            name: name.to_owned(),
            description: item
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters,
        });
    }
    let invalid = |message: &str| OpenAiError::invalid("tool_choice", message.to_owned());
    let (choice, parallel) = match &choice {
        None | Some(Value::Null) => (Some(ToolChoice::Auto), true),
        Some(choice) => {
            let parallel = !matches!(
                choice.get("disable_parallel_tool_use"),
                Some(Value::Bool(true))
            );
            let kind = match choice.get("type").and_then(Value::as_str) {
                Some("auto") => Some(ToolChoice::Auto),
                Some("any") => Some(ToolChoice::Required),
                Some("none") => None,
                Some("tool") => {
                    let name = choice.get("name").and_then(Value::as_str).unwrap_or("");
                    if !functions.iter().any(|f| f.name == name) {
                        return Err(invalid("tool_choice: names a tool that is not in `tools`"));
                    }
                    Some(ToolChoice::Function(name.to_owned()))
                }
                _ => {
                    return Err(invalid(
                        "tool_choice: `type` must be auto, any, tool or none",
                    ))
                }
            };
            (kind, parallel)
        }
    };
    Ok(choice
        .filter(|_| !functions.is_empty())
        .map(|choice| Tools {
            functions,
            choice,
            parallel,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(body: Value) -> Result<ValidMessages, OpenAiError> {
        serde_json::from_value::<MessagesRequest>(body)
            .unwrap()
            .validate(false)
    }

    #[test]
    fn blocks_become_the_engines_messages_tool_calls_and_results() {
        let valid = validate(json!({
            "model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "짧게"}],
            "messages": [
                {"role": "user", "content": "서울 날씨?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "찾아볼게요"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "서울"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "맑음"},
                    {"type": "text", "text": "고마워요"}]}],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}
        }))
        .unwrap();
        let roles: Vec<Role> = valid.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(
            valid.messages[2].tool_calls[0].arguments,
            r#"{"city":"서울"}"#
        );
        assert_eq!(valid.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(valid.tools.unwrap().choice, ToolChoice::Required);
    }

    #[test]
    fn what_is_missing_or_not_supported_names_the_field() {
        for (body, param) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "a"}]}),
                "messages.0.role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {}}]}]}),
                "messages.0.content.0",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}],
                       "tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "g"}}),
                "tool_choice",
            ),
        ] {
            assert_eq!(
                validate(body.clone()).unwrap_err().param.as_deref(),
                Some(param),
                "{body}"
            );
        }
    }
}
