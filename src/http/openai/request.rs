//! `/v1/chat/completions` requests: the wire shape (lenient: unknown fields are ignored, numbers
//! arrive as JSON numbers of any kind) and its validation into a [`ValidChatRequest`] whose
//! every value is in range. Each error names the field, the bound and the value given.

use serde::Deserialize;
use serde_json::Value;

use super::messages::messages;
use super::tools;
use crate::engine::{ChatMessage, OutputConstraint, SamplingParams, Tools};
use crate::http::error::OpenAiError;

/// Most stop strings, as OpenAI allows.
const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string (bytes): longer ones are never useful and cost work on every token.
const MAX_STOP_LEN: usize = 256;
/// Most choices (`n`) of one request: each takes a slot (those beyond `--parallel` wait).
pub const MAX_CHOICES: i64 = 16;
/// Most alternatives per token (`top_logprobs`), as OpenAI allows.
pub const MAX_TOP_LOGPROBS: i64 = 20;

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
    pub stop: Option<Value>,
    pub response_format: Option<Value>,
    pub n: Option<Value>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub temperature: Option<Value>,
    pub top_p: Option<Value>,
    pub top_k: Option<Value>,
    pub min_p: Option<Value>,
    pub repeat_penalty: Option<Value>,
    pub presence_penalty: Option<Value>,
    pub frequency_penalty: Option<Value>,
    pub seed: Option<Value>,
    pub logit_bias: Option<Value>,
    pub parallel_tool_calls: Option<Value>,
    pub chat_template_kwargs: Option<Value>,
    pub reasoning_effort: Option<Value>,
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

impl OutputFormat {
    /// The constraint the engine enforces for it (`None`: free text).
    pub fn constraint(&self) -> Option<OutputConstraint> {
        let schema = match self {
            OutputFormat::Text => return None,
            OutputFormat::JsonObject => r#"{"type": "object"}"#.to_owned(),
            OutputFormat::JsonSchema(schema) => schema.to_string(),
        };
        Some(OutputConstraint::JsonSchema(schema))
    }
}

/// The sampling fields chat and text completions share, as sent (each request type reads them
/// as its own fields: serde's `flatten` would buffer the whole body and refuse bytes an ignored
/// field may hold).
#[derive(Debug, Default)]
pub struct SamplingFields {
    pub temperature: Option<Value>,
    pub top_p: Option<Value>,
    pub top_k: Option<Value>,
    pub min_p: Option<Value>,
    pub repeat_penalty: Option<Value>,
    pub presence_penalty: Option<Value>,
    pub frequency_penalty: Option<Value>,
    pub seed: Option<Value>,
    pub logit_bias: Option<Value>,
}

impl SamplingFields {
    /// The settings, each in range; a field left out gets llama.cpp's default, as llama-server
    /// and Ollama do (OpenAI's own defaults, no top-k and top-p 1, would sample over the whole
    /// vocabulary). `logprobs`: validated by the caller (chat and completions ask differently).
    pub fn validate(self, logprobs: Option<usize>) -> Result<SamplingParams, OpenAiError> {
        let defaults = SamplingParams::default();
        let penalty = |name: &str, value: Option<&Value>| {
            Ok::<_, OpenAiError>(number(name, value, -2.0, 2.0)?.unwrap_or(0.0))
        };
        Ok(SamplingParams {
            temperature: number("temperature", self.temperature.as_ref(), 0.0, 2.0)?
                .unwrap_or(defaults.temperature),
            top_p: number("top_p", self.top_p.as_ref(), 0.0, 1.0)?.unwrap_or(defaults.top_p),
            top_k: integer("top_k", self.top_k.as_ref(), 0, 1 << 20)?
                .map_or(defaults.top_k, |k| k as i32),
            min_p: number("min_p", self.min_p.as_ref(), 0.0, 1.0)?.unwrap_or(defaults.min_p),
            repeat_penalty: number("repeat_penalty", self.repeat_penalty.as_ref(), 0.01, 10.0)?
                .unwrap_or(defaults.repeat_penalty),
            presence_penalty: penalty("presence_penalty", self.presence_penalty.as_ref())?,
            frequency_penalty: penalty("frequency_penalty", self.frequency_penalty.as_ref())?,
            // llama.cpp takes a 32-bit seed; keep the low bits of whatever was sent.
            seed: integer("seed", self.seed.as_ref(), i64::MIN, i64::MAX)?.map(|s| s as u32),
            logit_bias: logit_bias(self.logit_bias)?,
            logprobs,
        })
    }
}

/// A request whose every value is present and in range.
#[derive(Debug, Clone)]
pub struct ValidChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    /// The sampling settings, `logprobs` included.
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub format: OutputFormat,
    /// Functions the model may or must call (`None`: none, or `tool_choice` `"none"`).
    pub tools: Option<Tools>,
    /// Choices to generate.
    pub n: usize,
    /// Arguments for the chat template (`chat_template_kwargs`, `reasoning_effort`).
    pub template_args: serde_json::Map<String, Value>,
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
        let n = integer("n", self.n.as_ref(), 1, MAX_CHOICES)?.unwrap_or(1) as usize;
        let logprobs = chat_logprobs(self.logprobs.as_ref(), self.top_logprobs.as_ref())?;
        let max_tokens = match integer(
            "max_completion_tokens",
            self.max_completion_tokens.as_ref(),
            1,
            1 << 20,
        )? {
            Some(n) => Some(n),
            None => integer("max_tokens", self.max_tokens.as_ref(), 1, 1 << 20)?,
        };
        Ok(ValidChatRequest {
            model,
            messages,
            stream: boolean("stream", self.stream.as_ref())?.unwrap_or(false),
            include_usage: include_usage(self.stream_options.as_ref())?,
            max_tokens: max_tokens.map(|n| n as usize),
            sampling: SamplingFields {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
                logit_bias: self.logit_bias,
            }
            .validate(logprobs)?,
            stop: stop(self.stop)?,
            format: format(self.response_format)?,
            tools: tools::offered(self.tools, self.tool_choice, self.parallel_tool_calls)?,
            n,
            template_args: template_args(self.chat_template_kwargs, self.reasoning_effort)?,
        })
    }
}

/// `chat_template_kwargs` (an object, as vLLM and llama-server take it: `{"enable_thinking":
/// false}` turns Qwen3's thinking off) and `reasoning_effort` (gpt-oss's template reads it).
pub fn template_args(
    kwargs: Option<Value>,
    effort: Option<Value>,
) -> Result<serde_json::Map<String, Value>, OpenAiError> {
    let mut args = match kwargs {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(args)) => args,
        Some(other) => {
            return Err(OpenAiError::invalid(
                "chat_template_kwargs",
                format!(
                    "`chat_template_kwargs` must be an object, not {}",
                    described(&other)
                ),
            )
            .code("invalid_type"))
        }
    };
    // What the template is given besides them is not the client's to replace.
    for reserved in [
        "messages",
        "tools",
        "add_generation_prompt",
        "bos_token",
        "eos_token",
    ] {
        args.remove(reserved);
    }
    match effort {
        None | Some(Value::Null) => {}
        Some(Value::String(effort)) if ["low", "medium", "high"].contains(&effort.as_str()) => {
            args.insert("reasoning_effort".into(), Value::String(effort));
        }
        Some(other) => {
            return Err(OpenAiError::invalid(
                "reasoning_effort",
                format!(
                    "`reasoning_effort` must be \"low\", \"medium\" or \"high\", not {}",
                    described(&other)
                ),
            )
            .code("invalid_value"))
        }
    }
    Ok(args)
}

/// `logprobs` (true or false) and `top_logprobs` (0-20, which needs `logprobs: true`): how many
/// alternatives each token comes with, or `None` for no log probabilities.
fn chat_logprobs(
    logprobs: Option<&Value>,
    top: Option<&Value>,
) -> Result<Option<usize>, OpenAiError> {
    let wanted = boolean("logprobs", logprobs)?.unwrap_or(false);
    let top = integer("top_logprobs", top, 0, MAX_TOP_LOGPROBS)?;
    match (wanted, top) {
        (false, Some(_)) => Err(OpenAiError::invalid(
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        )
        .code("invalid_value")),
        (false, None) => Ok(None),
        (true, top) => Ok(Some(top.unwrap_or(0) as usize)),
    }
}

/// What an error message says of a value the client sent: numbers and booleans as they are,
/// anything else by its JSON type. Client text is never repeated back: it could be anything,
/// of any length (issue 7; the `openai` fuzz target found the echo).
pub(super) fn described(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Most entries in `logit_bias`, as OpenAI allows.
const MAX_LOGIT_BIASES: usize = 300;

/// `logit_bias`: token ids (as strings) to a bias in -100..=100.
pub(super) fn logit_bias(value: Option<Value>) -> Result<Vec<(i32, f32)>, OpenAiError> {
    let invalid = |message: &str, code| OpenAiError::invalid("logit_bias", message).code(code);
    let entries = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(entries)) => entries,
        Some(_) => {
            return Err(invalid(
                "`logit_bias` must be an object of token ids to biases",
                "invalid_type",
            ))
        }
    };
    if entries.len() > MAX_LOGIT_BIASES {
        return Err(invalid(
            "`logit_bias` may hold at most 300 tokens",
            "array_above_max_length",
        ));
    }
    entries
        .iter()
        .map(|(token, bias)| {
            let token = token
                .parse::<u32>()
                .map_err(|_| invalid("`logit_bias` keys must be token ids", "invalid_value"))?;
            let bias = bias
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    invalid(
                        "`logit_bias` values must be numbers from -100 to 100",
                        "invalid_value",
                    )
                })?;
            Ok((token.min(i32::MAX as u32) as i32, bias as f32))
        })
        .collect()
}

/// A whole number in `min..=max`; `null` counts as absent.
pub(crate) fn integer(
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
pub(crate) fn number(
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

pub(crate) fn boolean(param: &str, value: Option<&Value>) -> Result<Option<bool>, OpenAiError> {
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

pub(super) fn include_usage(options: Option<&Value>) -> Result<bool, OpenAiError> {
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

pub(super) fn stop(value: Option<Value>) -> Result<Vec<String>, OpenAiError> {
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

pub(crate) fn format(value: Option<Value>) -> Result<OutputFormat, OpenAiError> {
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
