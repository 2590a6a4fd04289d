//! The OpenAI response shapes: `chat.completion`, `chat.completion.chunk` and the model list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{GenerationSummary, TokenLogprob};
use crate::http::answers::{total_usage, Answer};

pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A unique id after `prefix` (`chatcmpl-`, `resp_`, ...): start time and a counter (ids only
/// need to differ, not be secret).
pub fn completion_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{prefix}{nanos:x}{:04x}",
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

/// `GET /v1/models`.
/// `max_model_len` is vLLM's field for the context window of one request: a gateway in front of
/// this service (upstream mode) reads it.
/// `/v1/models`: each model with its own context window (`max_model_len`, as vLLM lists it).
pub fn model_list(models: &[(String, usize)]) -> Value {
    let created = unix_seconds();
    json!({
        "object": "list",
        "data": models.iter().map(|(id, context_window)| json!({
            "id": id,
            "object": "model",
            "created": created,
            "owned_by": "leafresh-llm",
            "max_model_len": context_window,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    /// Messages of the conversation left out to fit the context (`--context-overflow trim`);
    /// not in OpenAI's API, absent when none were.
    #[serde(skip_serializing_if = "is_zero")]
    pub messages_dropped: usize,
    /// Tool definitions left out because they did not fit the context with the conversation
    /// (`tool_choice` `auto`); not in OpenAI's API, absent when none were.
    #[serde(skip_serializing_if = "is_zero")]
    pub tools_dropped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn of(summary: &GenerationSummary, messages_dropped: usize, tools_dropped: usize) -> Self {
        Self {
            messages_dropped,
            tools_dropped,
            prompt_tokens: summary.prompt_tokens,
            completion_tokens: summary.completion_tokens,
            total_tokens: summary.prompt_tokens + summary.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: summary.cached_tokens,
            },
        }
    }
}

/// What every object of one completion shares.
#[derive(Debug, Clone)]
pub struct CompletionMeta {
    id: String,
    created: u64,
    model: String,
    /// Messages left out to fit the context.
    pub messages_dropped: usize,
    /// Tool definitions left out to fit the context.
    pub tools_dropped: usize,
}

impl CompletionMeta {
    pub fn new(model: String, messages_dropped: usize, tools_dropped: usize) -> Self {
        Self {
            id: completion_id("chatcmpl-"),
            created: unix_seconds(),
            model,
            messages_dropped,
            tools_dropped,
        }
    }

    /// The whole answer, a choice per answer: its text (`null` when it only called tools), its
    /// tool calls, its log probabilities (when asked for); the usage counts the prompt once.
    pub fn completion(&self, answers: &[(Answer, GenerationSummary)], logprobs: bool) -> Value {
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(index, (answer, summary))| {
                let mut message = json!({"role": "assistant", "content": answer.text});
                if !answer.reasoning.is_empty() {
                    message["reasoning_content"] = json!(answer.reasoning);
                }
                if !answer.calls.is_empty() {
                    message["tool_calls"] = json!(answer.calls);
                    if answer.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": logprobs.then(|| super::logprobs::chat(&answer.logprobs)),
                    "finish_reason": summary.finish_reason.as_str(),
                })
            })
            .collect();
        let summaries: Vec<GenerationSummary> = answers.iter().map(|(_, s)| s.clone()).collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": total_usage(&summaries)
                .map(|total| Usage::of(&total, self.messages_dropped, self.tools_dropped)),
        })
    }

    fn chunk(&self, choice: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The first chunk of choice `index`: the assistant's role.
    pub fn role_chunk(&self, index: usize) -> Value {
        self.chunk(json!({
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": null,
            "finish_reason": null,
        }))
    }

    /// Text of choice `index`, with its tokens' log probabilities when they were asked for.
    pub fn content_chunk(
        &self,
        index: usize,
        text: String,
        logprobs: Option<&[TokenLogprob]>,
    ) -> Value {
        self.chunk(json!({
            "index": index,
            "delta": {"content": text},
            "logprobs": logprobs.map(super::logprobs::chat),
            "finish_reason": null,
        }))
    }

    /// The model's thinking, as `reasoning_content` (DeepSeek's and vLLM's name, which Open
    /// WebUI and LangChain read), never as `content`.
    pub fn reasoning_chunk(&self, index: usize, text: String) -> Value {
        self.chunk(json!({
            "index": index,
            "delta": {"reasoning_content": text},
            "logprobs": null,
            "finish_reason": null,
        }))
    }

    /// A tool call of choice `index` begins: its index, id and function name, arguments to
    /// follow.
    pub fn tool_call_chunk(&self, index: usize, call: usize, id: &str, name: &str) -> Value {
        self.tool_calls_delta(
            index,
            json!({
                "index": call,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }),
        )
    }

    /// More of the arguments of tool call `call` of choice `index`.
    pub fn arguments_chunk(&self, index: usize, call: usize, fragment: String) -> Value {
        self.tool_calls_delta(
            index,
            json!({"index": call, "function": {"arguments": fragment}}),
        )
    }

    fn tool_calls_delta(&self, index: usize, call: Value) -> Value {
        self.chunk(json!({
            "index": index,
            "delta": {"tool_calls": [call]},
            "logprobs": null,
            "finish_reason": null,
        }))
    }

    pub fn finish_chunk(&self, index: usize, summary: &GenerationSummary) -> Value {
        self.chunk(json!({
            "index": index,
            "delta": {},
            "logprobs": null,
            "finish_reason": summary.finish_reason.as_str(),
        }))
    }

    /// With `stream_options.include_usage`: the last chunk, no choices, the usage of all.
    pub fn usage_chunk(&self, total: &GenerationSummary) -> Value {
        let mut chunk = self.chunk(Value::Null);
        chunk["choices"] = json!([]);
        chunk["usage"] =
            serde_json::to_value(Usage::of(total, self.messages_dropped, self.tools_dropped))
                .unwrap_or(Value::Null);
        chunk
    }
}
