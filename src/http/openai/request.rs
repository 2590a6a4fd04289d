//! `/v1/chat/completions` requests: the wire shape (lenient: unknown fields are ignored, numbers
//! arrive as JSON numbers of any kind) and its validation into a [`ValidChatRequest`] whose
//! every value is in range. Each error names the field, the bound and the value given.

use serde::Deserialize;
use serde_json::Value;

use crate::engine::{ChatMessage, Role};
use crate::http::error::OpenAiError;

/// Most stop strings, as OpenAI allows.
const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string (bytes): longer ones are never useful and cost work on every token.
const MAX_STOP_LEN: usize = 256;

/// The request as sent. Everything is optional here so that validation, not serde, says what is
/// missing or wrong.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<Value>,
    pub messages: Option<Value>,
    pub stream: Option<Value>,
    pub stream_options: Option<Value>,
    pub max_tokens: Option<Value>,
    pub max_completion_tokens: Option<Value>,
    pub temperature: Option<Value>,
    pub top_p: Option<Value>,
    pub seed: Option<Value>,
    pub stop: Option<Value>,
    pub presence_penalty: Option<Value>,
    pub frequency_penalty: Option<Value>,
    pub response_format: Option<Value>,
    pub n: Option<Value>,
    pub top_k: Option<Value>,
    pub min_p: Option<Value>,
    pub repeat_penalty: Option<Value>,
}

/// What the answer must look like.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    JsonSchema(Value),
}

/// A request whose every value is present and in range.
#[derive(Debug, Clone)]
pub struct ValidChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    pub format: OutputFormat,
}

impl ChatRequest {
    pub fn validate(self) -> Result<ValidChatRequest, OpenAiError> {
        let model = match self.model {
            Some(Value::String(model)) if !model.trim().is_empty() => model,
            Some(other) if !other.is_null() => {
                return Err(
                    OpenAiError::invalid("model", "`model` must be a string").code("invalid_type")
                )
            }
            _ => {
                return Err(OpenAiError::invalid("model", "`model` is required")
                    .code("missing_required_parameter"))
            }
        };
        let messages = messages(self.messages)?;
        if let Some(n) = integer("n", self.n.as_ref(), 1, 128)? {
            if n != 1 {
                return Err(OpenAiError::invalid(
                    "n",
                    format!("`n` must be 1 (one choice per request); got {n}"),
                )
                .code("invalid_value"));
            }
        }
        let max_tokens = match integer(
            "max_completion_tokens",
            self.max_completion_tokens.as_ref(),
            1,
            1 << 20,
        )? {
            Some(n) => Some(n),
            None => integer("max_tokens", self.max_tokens.as_ref(), 1, 1 << 20)?,
        };
        let seed = integer("seed", self.seed.as_ref(), i64::MIN, i64::MAX)?
            // llama.cpp takes a 32-bit seed; keep the low bits of whatever was sent.
            .map(|s| s as u32);
        Ok(ValidChatRequest {
            model,
            messages,
            stream: boolean("stream", self.stream.as_ref())?.unwrap_or(false),
            include_usage: include_usage(self.stream_options.as_ref())?,
            max_tokens: max_tokens.map(|n| n as usize),
            temperature: number("temperature", self.temperature.as_ref(), 0.0, 2.0)?.unwrap_or(1.0),
            top_p: number("top_p", self.top_p.as_ref(), 0.0, 1.0)?.unwrap_or(1.0),
            top_k: integer("top_k", self.top_k.as_ref(), 0, 1 << 20)?.unwrap_or(0) as i32,
            min_p: number("min_p", self.min_p.as_ref(), 0.0, 1.0)?.unwrap_or(0.0),
            repeat_penalty: number("repeat_penalty", self.repeat_penalty.as_ref(), 0.01, 10.0)?
                .unwrap_or(1.0),
            presence_penalty: number(
                "presence_penalty",
                self.presence_penalty.as_ref(),
                -2.0,
                2.0,
            )?
            .unwrap_or(0.0),
            frequency_penalty: number(
                "frequency_penalty",
                self.frequency_penalty.as_ref(),
                -2.0,
                2.0,
            )?
            .unwrap_or(0.0),
            seed,
            stop: stop(self.stop)?,
            format: format(self.response_format)?,
        })
    }
}

fn messages(value: Option<Value>) -> Result<Vec<ChatMessage>, OpenAiError> {
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
        Some(other) => {
            return Err(OpenAiError::invalid(
                format!("{param}.role"),
                format!(
                    "`{param}.role` must be system, user or assistant; got {}",
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
    Ok(ChatMessage::new(role, content))
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

/// What an error message says of a value the client sent: numbers and booleans as they are,
/// anything else by its JSON type. Client text is never repeated back: it could be anything,
/// of any length (issue 7; the `openai` fuzz target found the echo).
fn described(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The messages of a `/tokenize` body (`{"messages": [...]}`; other fields are ignored).
pub fn tokenize_messages(body: &[u8]) -> Result<Vec<ChatMessage>, OpenAiError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| OpenAiError::from_json(&e))?;
    if !value.is_object() {
        return Err(OpenAiError::invalid(
            "body",
            "The body must be a JSON object with `messages`.",
        )
        .code("invalid_type"));
    }
    messages(value.get_mut("messages").map(Value::take))
}

/// Names of the OpenAI API we do not serve (roles, content part types): quoted in an error when
/// the client sent one of them, which says what is unsupported without repeating client text.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "tool",
    "function",
    "image_url",
    "input_audio",
    "file",
    "refusal",
];

/// `text` quoted when it is one of [`KNOWN_UNSUPPORTED`], else "another value".
fn quoted_if_a_name(text: &str) -> String {
    if KNOWN_UNSUPPORTED.contains(&text) {
        format!("{text:?}")
    } else {
        "another value".into()
    }
}

/// A whole number in `min..=max`; `null` counts as absent.
fn integer(
    param: &str,
    value: Option<&Value>,
    min: i64,
    max: i64,
) -> Result<Option<i64>, OpenAiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let whole = value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
            .map(|f| f as i64)
    });
    match whole {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Some(n) => Err(OpenAiError::invalid(
            param,
            format!("`{param}` must be between {min} and {max}; got {n}"),
        )
        .code(if n < min {
            "integer_below_min_value"
        } else {
            "integer_above_max_value"
        })),
        None => Err(OpenAiError::invalid(
            param,
            format!("`{param}` must be a whole number; got {}", described(value)),
        )
        .code("invalid_type")),
    }
}

/// A finite number in `min..=max`; `null` counts as absent.
fn number(
    param: &str,
    value: Option<&Value>,
    min: f32,
    max: f32,
) -> Result<Option<f32>, OpenAiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match value.as_f64() {
        Some(x) if x.is_finite() && (min as f64..=max as f64).contains(&x) => Ok(Some(x as f32)),
        number => Err(OpenAiError::invalid(
            param,
            format!(
                "`{param}` must be a number between {min} and {max}; got {}",
                described(value)
            ),
        )
        .code(match number {
            Some(x) if x < min as f64 => "decimal_below_min_value",
            Some(x) if x > max as f64 => "decimal_above_max_value",
            _ => "invalid_type",
        })),
    }
}

fn boolean(param: &str, value: Option<&Value>) -> Result<Option<bool>, OpenAiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(OpenAiError::invalid(
            param,
            format!("`{param}` must be true or false; got {}", described(other)),
        )
        .code("invalid_type")),
    }
}

fn include_usage(options: Option<&Value>) -> Result<bool, OpenAiError> {
    match options {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(fields)) => Ok(boolean(
            "stream_options.include_usage",
            fields.get("include_usage"),
        )?
        .unwrap_or(false)),
        Some(_) => Err(OpenAiError::invalid(
            "stream_options",
            "`stream_options` must be an object",
        )
        .code("invalid_type")),
    }
}

fn stop(value: Option<Value>) -> Result<Vec<String>, OpenAiError> {
    let stops = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(
                    OpenAiError::invalid("stop", "`stop` must hold strings only")
                        .code("invalid_type"),
                ),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "stop",
                "`stop` must be a string or an array of strings",
            )
            .code("invalid_type"))
        }
    };
    if stops.len() > MAX_STOP_STRINGS {
        return Err(OpenAiError::invalid(
            "stop",
            format!(
                "`stop` may hold at most {MAX_STOP_STRINGS} strings; got {}",
                stops.len()
            ),
        )
        .code("array_above_max_length"));
    }
    if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_LEN) {
        return Err(OpenAiError::invalid(
            "stop",
            format!(
                "a stop string may be at most {MAX_STOP_LEN} bytes; got {}",
                long.len()
            ),
        )
        .code("string_above_max_length"));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

fn format(value: Option<Value>) -> Result<OutputFormat, OpenAiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(OutputFormat::Text);
    };
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(OutputFormat::Text),
        Some("json_object") => Ok(OutputFormat::JsonObject),
        Some("json_schema") => {
            let schema = value
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        "response_format.json_schema.schema",
                        "`response_format.json_schema.schema` must be a JSON schema object",
                    )
                    .code("invalid_type")
                })?;
            Ok(OutputFormat::JsonSchema(schema))
        }
        _ => Err(OpenAiError::invalid(
            "response_format.type",
            "`response_format.type` must be text, json_object or json_schema",
        )
        .code("invalid_value")),
    }
}

#[cfg(test)]
mod tests;
