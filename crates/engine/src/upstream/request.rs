//! What is sent upstream, and what its answer means before the stream begins.

use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

use super::UpstreamError;
use crate::{Generation, OutputConstraint, RawPrompt};

/// The OpenAI chat request body: the messages, the sampling settings (under both llama-server's
/// and vLLM's names where they differ), the budget, and the constraint as `response_format`.
pub fn request_body(generation: &Generation, model: &str, max_tokens: usize) -> Value {
    let mut body = settings(generation, model, max_tokens, Form::Chat);
    body["messages"] = json!(generation.messages);
    if let Some(tools) = &generation.tools {
        if let (Value::Object(body), Value::Object(tools)) = (&mut body, tools.to_openai()) {
            body.extend(tools);
        }
    }
    if let Some(schema) = constraint_schema(generation) {
        body["response_format"] = response_format(schema);
    }
    if !generation.template_args.is_empty() {
        // vLLM's and llama-server's name.
        body["chat_template_kwargs"] = Value::Object(generation.template_args.clone());
    }
    body
}

/// How a prompt of token ids is answered with respect to tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolAnswer {
    /// Text only.
    None,
    /// The model may begin calls with this token (`auto`): the upstream must send it as text.
    Offered { trigger: String },
    /// The answer is calls (the trigger token ends the prompt): a list matching this schema.
    Calling { schema: Value },
}

/// The `/v1/completions` body for a prompt the gateway rendered and tokenized itself: the prompt
/// as token ids, so that no client text can become a control token upstream, whatever its
/// tokenizer does with text. The same settings as a chat request; the constraint under vLLM's
/// name (`response_format`) and llama-server's (`json_schema`, which its completions read).
pub fn completion_body(
    generation: &Generation,
    model: &str,
    max_tokens: usize,
    prompt: &[i32],
    tools: &ToolAnswer,
) -> Value {
    let mut body = settings(generation, model, max_tokens, Form::Completion);
    body["prompt"] = json!(prompt);
    let schema = match tools {
        ToolAnswer::Calling { schema } => Some(schema.clone()),
        _ => constraint_schema(generation),
    };
    if let Some(schema) = schema {
        body["response_format"] = response_format(schema.clone());
        body["json_schema"] = schema;
    }
    if let ToolAnswer::Offered { trigger } = tools {
        // llama-server renders a special token it is told to preserve; vLLM, when asked to.
        body["preserved_tokens"] = json!([trigger]);
        body["skip_special_tokens"] = json!(false);
    }
    body
}

/// The `/v1/completions` body of a raw prompt (`/v1/completions` here): text, token ids, or a
/// fill-in-the-middle prompt as `prompt` and `suffix` (an upstream without infill refuses it).
pub fn raw_completion_body(
    generation: &Generation,
    model: &str,
    max_tokens: usize,
    raw: &RawPrompt,
) -> Value {
    let mut body = settings(generation, model, max_tokens, Form::Completion);
    match raw {
        RawPrompt::Text(text) => body["prompt"] = json!(text),
        RawPrompt::Tokens(ids) => body["prompt"] = json!(ids),
        RawPrompt::Infill { prefix, suffix } => {
            body["prompt"] = json!(prefix);
            body["suffix"] = json!(suffix);
        }
    }
    if let Some(schema) = constraint_schema(generation) {
        body["response_format"] = response_format(schema.clone());
        body["json_schema"] = schema;
    }
    if generation.special_text {
        body["skip_special_tokens"] = json!(false);
    }
    body
}

/// Which endpoint a body is for: where the two spell a setting differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Chat,
    Completion,
}

/// What a chat and a completion request share: the model, streaming with usage, the budget, the
/// sampling settings and the stop strings.
fn settings(generation: &Generation, model: &str, max_tokens: usize, form: Form) -> Value {
    let sampling = &generation.sampling;
    let mut body = json!({
        "model": model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
        "repetition_penalty": sampling.repeat_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "presence_penalty": sampling.presence_penalty,
    });
    if let Some(seed) = sampling.seed {
        body["seed"] = json!(seed);
    }
    if let Some(top) = sampling.logprobs {
        // The completions form reads `logprobs` as the number of top tokens, the chat form has
        // `top_logprobs`; at least 1 (llama-server reports nothing for 0; the relay trims).
        if form == Form::Completion {
            body["logprobs"] = json!(top.max(1));
        } else {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(top.max(1));
        }
    }
    if !sampling.logit_bias.is_empty() {
        let biases: serde_json::Map<String, Value> = sampling
            .logit_bias
            .iter()
            .map(|(token, bias)| (token.to_string(), json!(bias)))
            .collect();
        body["logit_bias"] = Value::Object(biases);
    }
    if !generation.stop.is_empty() {
        body["stop"] = json!(generation.stop);
    }
    body
}

/// The JSON schema the answer must match, if any.
fn constraint_schema(generation: &Generation) -> Option<Value> {
    let schema = match &generation.constraint {
        None => return None,
        Some(OutputConstraint::JsonSchema(schema)) => schema,
        Some(OutputConstraint::Grammar { json_schema, .. }) => json_schema,
    };
    serde_json::from_str(schema).ok()
}

fn response_format(schema: Value) -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": true},
    })
}

/// A connection that failed before any answer.
pub fn unreachable(error: &reqwest::Error) -> UpstreamError {
    UpstreamError::Unavailable(describe(error))
}

/// What went wrong, without the upstream's address: error messages reach clients.
pub fn describe(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connection refused or unreachable".into()
    } else if error.is_timeout() {
        "timed out".into()
    } else if error.is_body() || error.is_decode() {
        "its answer broke off or could not be read".into()
    } else {
        "the request failed".into()
    }
}

/// The response, if it is a stream of chat completion chunks; else the error it stands for.
pub async fn check_response(
    response: reqwest::Response,
) -> Result<reqwest::Response, UpstreamError> {
    let status = response.status();
    if status.is_success() {
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(UpstreamError::Failed(
                "the answer is not an event stream".into(),
            ));
        }
        return Ok(response);
    }
    let code = status.as_u16();
    let message = response
        .json::<Value>()
        .await
        .ok()
        .and_then(|body| {
            body.pointer("/error/message")
                .or_else(|| body.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("status {code}"));
    Err(match code {
        429 | 503 => UpstreamError::Unavailable(message),
        // The key or the model is wrong: this service's configuration, not the client's request.
        401 | 403 | 404 => UpstreamError::Failed(format!("{code}: {message}")),
        400..=499 => UpstreamError::Rejected {
            status: code,
            message,
        },
        _ => UpstreamError::Failed(format!("{code}: {message}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, SamplingParams};

    fn generation(constraint: Option<OutputConstraint>) -> Generation {
        Generation {
            counted: None,
            messages: vec![ChatMessage::user("안녕")],
            sampling: SamplingParams {
                seed: Some(7),
                ..SamplingParams::default()
            },
            constraint,
            max_tokens: Some(99),
            stop: vec!["끝".into()],
            session: Some("s".into()),
            ..Generation::default()
        }
    }

    #[test]
    fn the_body_streams_with_usage_and_carries_the_budget_and_settings() {
        let body = request_body(&generation(None), "m", 42);
        assert_eq!(body["model"], "m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 42);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["stop"], json!(["끝"]));
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "안녕"}])
        );
        assert_eq!(body["repeat_penalty"], body["repetition_penalty"]);
        assert!(body.get("response_format").is_none());
    }

    #[test]
    fn a_grammar_goes_as_the_json_schema_it_implements() {
        let schema = r#"{"type":"object","required":["a"]}"#;
        for constraint in [
            OutputConstraint::JsonSchema(schema.into()),
            OutputConstraint::Grammar {
                lark: "start: \"x\"".into(),
                json_schema: schema.into(),
            },
        ] {
            let body = request_body(&generation(Some(constraint)), "m", 1);
            assert_eq!(body["response_format"]["type"], "json_schema");
            assert_eq!(
                body["response_format"]["json_schema"]["schema"],
                serde_json::from_str::<Value>(schema).unwrap()
            );
        }
    }

    #[test]
    fn a_token_prompt_goes_to_completions_with_the_constraint_under_both_names() {
        let schema = r#"{"type":"object"}"#;
        let generation = generation(Some(OutputConstraint::JsonSchema(schema.into())));
        let body = completion_body(&generation, "m", 9, &[1, 3, 500, 4], &ToolAnswer::None);
        assert_eq!(body["prompt"], json!([1, 3, 500, 4]));
        assert!(body.get("messages").is_none());
        assert_eq!(body["max_tokens"], 9);
        assert_eq!(body["stop"], json!(["끝"]));
        assert_eq!(body["json_schema"], json!({"type": "object"}));
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            body["json_schema"]
        );

        let offered = ToolAnswer::Offered {
            trigger: "[TOOL_CALLS]".into(),
        };
        let body = completion_body(&generation, "m", 9, &[1], &offered);
        assert_eq!(body["preserved_tokens"], json!(["[TOOL_CALLS]"]));
        assert_eq!(body["skip_special_tokens"], false);
        let calling = ToolAnswer::Calling {
            schema: json!({"type": "array"}),
        };
        let body = completion_body(&generation, "m", 9, &[1], &calling);
        assert_eq!(body["json_schema"], json!({"type": "array"}));
    }
}
