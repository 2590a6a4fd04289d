//! Anthropic Messages responses: the whole `message` (content blocks of text and `tool_use`,
//! `stop_reason`, usage) and its event stream, block by block.

use actix_web_lab::sse;
use serde_json::{json, Value};

use crate::engine::{FinishReason, GenerationEvent, GenerationSummary};
use crate::http::answers::Answer;
use crate::http::error::OpenAiError;
use crate::http::openai::response::completion_id;

/// What the message and every event of its stream share.
pub struct Message {
    id: String,
    model: String,
    input_tokens: usize,
}

impl Message {
    pub fn new(model: String, input_tokens: usize) -> Self {
        Self {
            id: completion_id("msg_"),
            model,
            input_tokens,
        }
    }

    /// The whole message: a text block (when there is text), a `tool_use` block per call.
    pub fn whole(&self, answer: &Answer, summary: &GenerationSummary) -> Value {
        let mut content = Vec::new();
        if !answer.reasoning.is_empty() {
            content.push(json!({"type": "thinking", "thinking": answer.reasoning,
                                "signature": ""}));
        }
        if !answer.text.is_empty() || answer.calls.is_empty() {
            content.push(json!({"type": "text", "text": answer.text}));
        }
        for call in &answer.calls {
            content.push(json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": input_of(&call.arguments),
            }));
        }
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason(summary),
            "stop_sequence": summary.stop_sequence,
            "usage": usage(self.input_tokens, summary),
        })
    }
}

/// A call's arguments as the object Anthropic's `input` is (the grammar makes them JSON).
fn input_of(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| json!({}))
}

/// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`.
fn stop_reason(summary: &GenerationSummary) -> &'static str {
    match summary.finish_reason {
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Stop if summary.stop_sequence.is_some() => "stop_sequence",
        FinishReason::Stop => "end_turn",
    }
}

fn usage(input_tokens: usize, summary: &GenerationSummary) -> Value {
    json!({
        "input_tokens": summary.prompt_tokens.max(input_tokens),
        "output_tokens": summary.completion_tokens,
        "cache_read_input_tokens": summary.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// A named SSE event with its JSON data, as Anthropic streams them.
fn event(name: &str, data: Value) -> sse::Event {
    sse::Data::new(data.to_string()).event(name).into()
}

/// The open content block of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// The model's thinking (Anthropic's extended-thinking block).
    Thinking,
    Text,
    /// The block of tool call `call` (the engine's index).
    ToolUse {
        call: usize,
    },
}

/// Turns the engine's events into Anthropic's: opens a text block at the first text, a
/// `tool_use` block at each call, closing the one before.
pub struct StreamWriter {
    message: Message,
    /// The block open now, and its index in the message.
    open: Option<(Block, usize)>,
    next_index: usize,
}

impl StreamWriter {
    pub fn new(message: Message) -> Self {
        Self {
            message,
            open: None,
            next_index: 0,
        }
    }

    /// `message_start` (with the prompt's tokens as `input_tokens`) and a `ping`.
    pub fn open(&self) -> Vec<sse::Event> {
        let m = &self.message;
        vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": m.id, "type": "message", "role": "assistant", "model": m.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": m.input_tokens, "output_tokens": 0},
                }}),
            ),
            event("ping", json!({"type": "ping"})),
        ]
    }

    /// The frames of one engine event (none for the final ones: see [`StreamWriter::close`]).
    pub fn frames(&mut self, generation_event: &GenerationEvent) -> Vec<sse::Event> {
        let mut frames = Vec::new();
        match generation_event {
            GenerationEvent::Text(text) if !text.is_empty() => {
                let index = self.enter(
                    Block::Text,
                    &mut frames,
                    || json!({"type": "text", "text": ""}),
                );
                frames.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            GenerationEvent::Reasoning(text) if !text.is_empty() => {
                let index = self.enter(
                    Block::Thinking,
                    &mut frames,
                    || json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
                frames.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": text}}),
                ));
            }
            GenerationEvent::ToolCall {
                index: call,
                id,
                name,
            } => {
                self.enter(
                    Block::ToolUse { call: *call },
                    &mut frames,
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
            }
            GenerationEvent::ToolArguments {
                index: call,
                fragment,
            } => {
                if let Some((Block::ToolUse { call: open }, index)) = self.open {
                    if open == *call {
                        frames.push(event(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                        ));
                    }
                }
            }
            _ => {}
        }
        frames
    }

    /// Makes `block` the open one (closing the one before, starting it); its index.
    fn enter(
        &mut self,
        block: Block,
        frames: &mut Vec<sse::Event>,
        start: impl FnOnce() -> Value,
    ) -> usize {
        if let Some((open, index)) = self.open {
            if open == block {
                return index;
            }
            frames.push(stop(index));
        }
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start()}),
        ));
        index
    }

    /// The end: the open block closed (an empty text block when there was none), then
    /// `message_delta` and `message_stop`.
    pub fn close(&mut self, summary: &GenerationSummary) -> Vec<sse::Event> {
        let mut frames = Vec::new();
        if self.open.is_none() {
            self.enter(
                Block::Text,
                &mut frames,
                || json!({"type": "text", "text": ""}),
            );
        }
        if let Some((_, index)) = self.open.take() {
            frames.push(stop(index));
        }
        frames.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(summary),
                             "stop_sequence": summary.stop_sequence},
                   "usage": usage(self.message.input_tokens, summary)}),
        ));
        frames.push(event("message_stop", json!({"type": "message_stop"})));
        frames
    }

    /// A failure after the stream began: Anthropic's `error` event.
    pub fn error(&self, error: &OpenAiError) -> sse::Event {
        let kind = if error.status.as_u16() == 503 {
            "overloaded_error"
        } else if error.status.is_client_error() {
            "invalid_request_error"
        } else {
            "api_error"
        };
        event(
            "error",
            json!({"type": "error", "error": {"type": kind, "message": error.message}}),
        )
    }
}

fn stop(index: usize) -> sse::Event {
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ToolCall;
    use std::time::Duration;

    fn summary(finish_reason: FinishReason, stop_sequence: Option<&str>) -> GenerationSummary {
        GenerationSummary {
            finish_reason,
            prompt_tokens: 12,
            cached_tokens: 4,
            completion_tokens: 7,
            forced_tokens: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
            queue_wait: Duration::ZERO,
            time_to_first_token: Duration::ZERO,
            total_time: Duration::ZERO,
            upstream_latency: None,
            stop_sequence: stop_sequence.map(str::to_owned),
        }
    }

    #[test]
    fn a_whole_message_has_its_blocks_and_why_it_stopped() {
        let answer = Answer {
            text: "찾아볼게요".into(),
            calls: vec![ToolCall {
                id: "call_1".into(),
                name: "weather".into(),
                arguments: r#"{"city": "서울"}"#.into(),
            }],
            ..Answer::default()
        };
        let message = Message::new("m".into(), 12);
        let whole = message.whole(&answer, &summary(FinishReason::ToolCalls, None));
        assert_eq!(whole["content"][0]["text"], "찾아볼게요");
        assert_eq!(whole["content"][1]["input"]["city"], "서울");
        assert_eq!(whole["stop_reason"], "tool_use");
        assert_eq!(whole["usage"]["output_tokens"], 7);
        let cut = message.whole(&Answer::default(), &summary(FinishReason::Stop, Some("끝")));
        assert_eq!(
            (cut["stop_reason"].as_str(), cut["stop_sequence"].as_str()),
            (Some("stop_sequence"), Some("끝"))
        );
        assert_eq!(cut["content"][0]["type"], "text");
    }

    #[test]
    fn blocks_open_and_close_in_order() {
        let mut writer = StreamWriter::new(Message::new("m".into(), 3));
        assert_eq!(writer.open().len(), 2);
        assert_eq!(writer.frames(&GenerationEvent::Text("가".into())).len(), 2);
        assert_eq!(writer.frames(&GenerationEvent::Text("나".into())).len(), 1);
        let call = GenerationEvent::ToolCall {
            index: 0,
            id: "c".into(),
            name: "f".into(),
        };
        // The text block stops, the tool_use block starts.
        assert_eq!(writer.frames(&call).len(), 2);
        let arguments = GenerationEvent::ToolArguments {
            index: 0,
            fragment: "{}".into(),
        };
        assert_eq!(writer.frames(&arguments).len(), 1);
        assert_eq!(writer.open, Some((Block::ToolUse { call: 0 }, 1)));
        assert_eq!(
            writer.close(&summary(FinishReason::ToolCalls, None)).len(),
            3
        );
    }
}
