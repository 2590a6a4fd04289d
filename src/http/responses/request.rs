//! OpenAI Responses requests (`POST /v1/responses`): `input` as text or items (messages,
//! `function_call`, `function_call_output`), `instructions`, function `tools` and `tool_choice`,
//! `text.format`, the sampling fields, `previous_response_id` and `store`; checked and turned
//! into the engine's conversation.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{
    ChatMessage, OutputConstraint, Role, SamplingParams, ToolCall, ToolChoice, ToolFunction, Tools,
};
use crate::http::error::OpenAiError;
use crate::http::openai::request::{boolean, integer, number};

/// The request as sent; validation, not serde, says what is missing or wrong.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    model: Option<Value>,
    input: Option<Value>,
    instructions: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<Value>,
    text: Option<Value>,
    max_output_tokens: Option<Value>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    stream: Option<Value>,
    store: Option<Value>,
    previous_response_id: Option<Value>,
    metadata: Option<Value>,
}

/// A Responses request whose every value is present and in range.
#[derive(Debug, Clone)]
pub struct ValidResponses {
    pub model: String,
    /// This request's input, as messages (the stored conversation comes before it).
    pub input: Vec<ChatMessage>,
    pub instructions: Option<String>,
    pub tools: Option<Tools>,
    /// The request's `tools` and `tool_choice` as sent, echoed in the response.
    pub tools_echo: Value,
    pub tool_choice_echo: Value,
    pub parallel_tool_calls: bool,
    pub format: Option<OutputConstraint>,
    /// `text` as sent (or its default), echoed in the response.
    pub text_echo: Value,
    pub max_output_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stream: bool,
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub metadata: Value,
}

impl ResponsesRequest {
    pub fn validate(self) -> Result<ValidResponses, OpenAiError> {
        let model = match self.model {
            Some(Value::String(model)) if !model.trim().is_empty() => model,
            _ => {
                return Err(
                    OpenAiError::invalid("model", "`model` is required (a string)")
                        .code("missing_required_parameter"),
                )
            }
        };
        let instructions = match self.instructions {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => {
                return Err(
                    OpenAiError::invalid("instructions", "`instructions` must be a string")
                        .code("invalid_type"),
                )
            }
        };
        let previous_response_id = match self.previous_response_id {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id),
            Some(_) => {
                return Err(OpenAiError::invalid(
                    "previous_response_id",
                    "`previous_response_id` must be a string",
                )
                .code("invalid_type"))
            }
        };
        let parallel_tool_calls =
            boolean("parallel_tool_calls", self.parallel_tool_calls.as_ref())?.unwrap_or(false);
        let tools_echo = self.tools.clone().unwrap_or_else(|| json!([]));
        let tool_choice_echo = self.tool_choice.clone().unwrap_or_else(|| json!("auto"));
        let (format, text_echo) = format(self.text)?;
        let defaults = SamplingParams::default();
        let sampling = SamplingParams {
            temperature: number("temperature", self.temperature.as_ref(), 0.0, 2.0)?
                .unwrap_or(defaults.temperature),
            top_p: number("top_p", self.top_p.as_ref(), 0.0, 1.0)?.unwrap_or(defaults.top_p),
            ..defaults
        };
        Ok(ValidResponses {
            model,
            input: input(self.input)?,
            instructions,
            tools: tools(self.tools, self.tool_choice, parallel_tool_calls)?,
            tools_echo,
            tool_choice_echo,
            parallel_tool_calls,
            format,
            text_echo,
            max_output_tokens: integer(
                "max_output_tokens",
                self.max_output_tokens.as_ref(),
                1,
                1 << 20,
            )?
            .map(|n| n as usize),
            sampling,
            stream: boolean("stream", self.stream.as_ref())?.unwrap_or(false),
            store: boolean("store", self.store.as_ref())?.unwrap_or(true),
            previous_response_id,
            metadata: match self.metadata {
                Some(metadata @ Value::Object(_)) => metadata,
                _ => json!({}),
            },
        })
    }
}

/// `input`: a string (one user message) or a list of items.
fn input(value: Option<Value>) -> Result<Vec<ChatMessage>, OpenAiError> {
    let items = match value {
        Some(Value::String(text)) => return Ok(vec![ChatMessage::user(text)]),
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err(OpenAiError::invalid(
                "input",
                "`input` must be a string or a non-empty list of items",
            )
            .code("invalid_type"))
        }
    };
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let invalid = |message: &str| {
            OpenAiError::invalid(&param, format!("`{param}`: {message}")).code("invalid_value")
        };
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    _ => return Err(invalid("a message needs a role: user, assistant, system")),
                };
                let text = content_text(&param, item.get("content"))?;
                messages.push(ChatMessage::new(role, text));
            }
            Some("function_call") => {
                let text = |field: &str| item.get(field).and_then(Value::as_str);
                let (Some(call_id), Some(name)) = (text("call_id"), text("name")) else {
                    return Err(invalid("a function_call needs `call_id` and `name`"));
                };
                let call = ToolCall {
                    id: call_id.to_owned(),
                    name: name.to_owned(),
                    arguments: text("arguments").unwrap_or("{}").to_owned(),
                };
                // Calls follow the assistant message that made them, or make one.
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => {
                        let mut message = ChatMessage::assistant("");
                        message.tool_calls.push(call);
                        messages.push(message);
                    }
                }
            }
            Some("function_call_output") => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    return Err(invalid("a function_call_output needs `call_id`"));
                };
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => content_text(&param, Some(other))?,
                    None => String::new(),
                };
                let mut result = ChatMessage::new(Role::Tool, output);
                result.tool_call_id = Some(call_id.to_owned());
                messages.push(result);
            }
            // A reasoning summary of an earlier response: not part of the prompt.
            Some("reasoning") => {}
            Some(other) => {
                return Err(invalid(&format!(
                    "items of type {} are not supported",
                    serde_json::to_string(other).unwrap_or_default()
                )))
            }
        }
    }
    Ok(messages)
}

/// A message's `content`: a string, or text parts (`input_text`, `output_text`, `text`).
fn content_text(param: &str, content: Option<&Value>) -> Result<String, OpenAiError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("input_text" | "output_text" | "text"), Some(Value::String(piece))) => {
                        text.push_str(piece)
                    }
                    _ => {
                        return Err(OpenAiError::invalid(
                            format!("{param}.content"),
                            "only text content (input_text, output_text) is supported: this \
                             server serves a text model",
                        )
                        .code("invalid_value"))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(OpenAiError::invalid(
            format!("{param}.content"),
            "`content` must be a string or a list of text parts",
        )
        .code("invalid_type")),
    }
}

/// Function `tools` (`{type: "function", name, description, parameters}`) and `tool_choice`.
fn tools(
    value: Option<Value>,
    choice: Option<Value>,
    parallel: bool,
) -> Result<Option<Tools>, OpenAiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(OpenAiError::invalid("tools", "`tools` must be a list").code("invalid_type"))
        }
    };
    let mut functions = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("tools[{i}]");
        let invalid =
            |message: &str| OpenAiError::invalid(&param, message.to_owned()).code("invalid_value");
        if item.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(
                "only function tools are supported (no built-in tools: web search, file search, \
                 computer use)",
            ));
        }
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .ok_or_else(|| {
                invalid("a function needs a `name` of 1 to 64 letters, digits, `_`, `-`")
            })?;
        let parameters = match item.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(_) => return Err(invalid("`parameters` must be a JSON schema object")),
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
    let invalid = |message: &str| {
        OpenAiError::invalid("tool_choice", message.to_owned()).code("invalid_value")
    };
    let choice = match &choice {
        None | Some(Value::Null) => Some(ToolChoice::Auto),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Required),
            "none" => None,
            _ => {
                return Err(invalid(
                    "`tool_choice` must be auto, required, none or a function",
                ))
            }
        },
        Some(named) => {
            let name = named
                .get("name")
                .or_else(|| named.pointer("/function/name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !functions.iter().any(|f| f.name == name) {
                return Err(invalid(
                    "`tool_choice` names a function that is not in `tools`",
                ));
            }
            Some(ToolChoice::Function(name.to_owned()))
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

/// `text.format`: `text`, `json_object`, or `json_schema` (`{type, name, schema, strict}`); the
/// constraint it asks for, and `text` as the response echoes it.
fn format(value: Option<Value>) -> Result<(Option<OutputConstraint>, Value), OpenAiError> {
    let default = json!({"format": {"type": "text"}});
    let Some(text) = value.filter(|v| !v.is_null()) else {
        return Ok((None, default));
    };
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok((None, default));
    };
    let constraint = match format.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(OutputConstraint::JsonSchema(r#"{"type": "object"}"#.into())),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => {
                Some(OutputConstraint::JsonSchema(schema.to_string()))
            }
            _ => {
                return Err(OpenAiError::invalid(
                    "text.format.schema",
                    "`text.format.schema` must be a JSON schema object",
                )
                .code("invalid_type"))
            }
        },
        _ => {
            return Err(OpenAiError::invalid(
                "text.format.type",
                "`text.format.type` must be text, json_object or json_schema",
            )
            .code("invalid_value"))
        }
    };
    Ok((constraint, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(body: Value) -> Result<ValidResponses, OpenAiError> {
        serde_json::from_value::<ResponsesRequest>(body)
            .unwrap()
            .validate()
    }

    #[test]
    fn items_become_messages_calls_and_results() {
        let valid = validate(json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "서울 날씨?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"서울\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "맑음"},
            {"type": "message", "role": "user", "content": "고마워"}
        ]}))
        .unwrap();
        let roles: Vec<Role> = valid.input.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);
        assert_eq!(valid.input[1].tool_calls[0].name, "weather");
        assert_eq!(valid.input[2].tool_call_id.as_deref(), Some("call_1"));
        assert!(valid.store);
    }

    #[test]
    fn tools_formats_and_what_is_refused() {
        let valid = validate(json!({"model": "m", "input": "hi",
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}}))
        .unwrap();
        assert_eq!(
            valid.tools.unwrap().choice,
            ToolChoice::Function("f".into())
        );
        assert!(valid.format.is_some());
        for (body, param) in [
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "a", "tools": [{"type": "web_search"}]}),
                "tools[0]",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input[0].content",
            ),
            (
                json!({"model": "m", "input": "a", "text": {"format": {"type": "yaml"}}}),
                "text.format.type",
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
