//! The OpenAI response shapes: `chat.completion`, `chat.completion.chunk` and the model list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{GenerationSummary, ToolCall};

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A unique completion id: start time and a counter (ids only need to differ, not be secret).
fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "chatcmpl-{nanos:x}{:04x}",
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
    fn of(summary: &GenerationSummary, messages_dropped: usize, tools_dropped: usize) -> Self {
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

/// A whole (non-streamed) answer.
#[derive(Debug, Serialize)]
pub struct Completion {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: [Value; 1],
    usage: Usage,
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
            id: completion_id(),
            created: unix_seconds(),
            model,
            messages_dropped,
            tools_dropped,
        }
    }

    /// The whole answer: its text (`null` when it only called tools) and its tool calls.
    pub fn completion(
        &self,
        text: String,
        calls: Vec<ToolCall>,
        summary: &GenerationSummary,
    ) -> Completion {
        let mut message = json!({"role": "assistant", "content": text});
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
            if text.is_empty() {
                message["content"] = Value::Null;
            }
        }
        Completion {
            id: self.id.clone(),
            object: "chat.completion",
            created: self.created,
            model: self.model.clone(),
            choices: [json!({
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": summary.finish_reason.as_str(),
            })],
            usage: Usage::of(summary, self.messages_dropped, self.tools_dropped),
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The first chunk: the assistant's role.
    pub fn role_chunk(&self) -> Value {
        self.chunk(json!([{
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": null,
            "finish_reason": null,
        }]))
    }

    pub fn content_chunk(&self, text: String) -> Value {
        self.chunk(json!([{
            "index": 0,
            "delta": {"content": text},
            "logprobs": null,
            "finish_reason": null,
        }]))
    }

    /// A tool call begins: its index, id and function name, arguments to follow.
    pub fn tool_call_chunk(&self, index: usize, id: &str, name: &str) -> Value {
        self.tool_calls_delta(json!({
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }))
    }

    /// More of tool call `index`'s arguments.
    pub fn arguments_chunk(&self, index: usize, fragment: String) -> Value {
        self.tool_calls_delta(json!({"index": index, "function": {"arguments": fragment}}))
    }

    fn tool_calls_delta(&self, call: Value) -> Value {
        self.chunk(json!([{
            "index": 0,
            "delta": {"tool_calls": [call]},
            "logprobs": null,
            "finish_reason": null,
        }]))
    }

    pub fn finish_chunk(&self, summary: &GenerationSummary) -> Value {
        self.chunk(json!([{
            "index": 0,
            "delta": {},
            "logprobs": null,
            "finish_reason": summary.finish_reason.as_str(),
        }]))
    }

    /// With `stream_options.include_usage`: the last chunk, no choices, the usage.
    pub fn usage_chunk(&self, summary: &GenerationSummary) -> Value {
        let mut chunk = self.chunk(json!([]));
        chunk["usage"] = serde_json::to_value(Usage::of(
            summary,
            self.messages_dropped,
            self.tools_dropped,
        ))
        .unwrap_or(Value::Null);
        chunk
    }
}
