//! Responses API objects: the `response` (its output items: a `reasoning` item with the model's
//! thinking, a `message` with `output_text`, a `function_call` per call), and its event stream
//! (`response.created` ... `response.reasoning_text.delta` ... `response.output_text.delta` ...
//! `response.function_call_arguments.delta` ... `response.completed`), each event numbered.

use actix_web_lab::sse;
use serde_json::{json, Value};

use super::request::ValidResponses;
use crate::engine::{FinishReason, GenerationEvent, GenerationSummary, ToolCall};
use crate::http::answers::Answer;
use crate::http::error::OpenAiError;
use crate::http::openai::response::{completion_id, unix_seconds};

/// What the response and every event of its stream share.
pub struct ResponseMeta {
    pub id: String,
    created_at: u64,
    /// The request's settings, echoed in the response object.
    echo: Value,
}

impl ResponseMeta {
    pub fn new(valid: &ValidResponses) -> Self {
        Self {
            id: completion_id("resp_"),
            created_at: unix_seconds(),
            echo: json!({
                "model": valid.model,
                "instructions": valid.instructions,
                "tools": valid.tools_echo,
                "tool_choice": valid.tool_choice_echo,
                "parallel_tool_calls": valid.parallel_tool_calls,
                "temperature": valid.sampling.temperature,
                "top_p": valid.sampling.top_p,
                "max_output_tokens": valid.max_output_tokens,
                "previous_response_id": valid.previous_response_id,
                "store": valid.store,
                "text": valid.text_echo,
                "metadata": valid.metadata,
                "truncation": "disabled",
                "reasoning": {"effort": null, "summary": null},
                "user": null,
            }),
        }
    }

    /// The response object with `status`, `output` and (when it ended) its usage.
    fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        summary: Option<&GenerationSummary>,
    ) -> Value {
        let mut object = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "output": output,
            "usage": summary.map(usage),
        });
        if let (Value::Object(object), Value::Object(echo)) = (&mut object, &self.echo) {
            object.extend(echo.clone());
        }
        if summary.is_some_and(|s| s.finish_reason == FinishReason::Length) {
            object["status"] = json!("incomplete");
            object["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        object
    }

    /// The whole response: a message item (when there is text, or nothing else), a
    /// `function_call` item per call.
    pub fn whole(&self, answer: &Answer, summary: &GenerationSummary) -> Value {
        let mut output = Vec::new();
        if !answer.reasoning.is_empty() {
            output.push(reasoning_item(&item_id("rs_"), &answer.reasoning));
        }
        if !answer.text.is_empty() || answer.calls.is_empty() {
            output.push(message_item(&item_id("msg_"), &answer.text, "completed"));
        }
        for call in &answer.calls {
            output.push(call_item(&item_id("fc_"), call, "completed"));
        }
        self.object("completed", output, Some(summary))
    }
}

fn item_id(prefix: &str) -> String {
    completion_id(prefix)
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([text_part(text)])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

/// The model's thinking, as OpenAI's reasoning models give it (`reasoning_text` content).
fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
           "content": [{"type": "reasoning_text", "text": text}]})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    })
}

fn usage(summary: &GenerationSummary) -> Value {
    json!({
        "input_tokens": summary.prompt_tokens,
        "input_tokens_details": {"cached_tokens": summary.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": summary.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": summary.prompt_tokens + summary.completion_tokens,
    })
}

/// The output item being streamed.
enum Open {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
    Call { id: String, call: ToolCall },
}

/// Turns the engine's events into the Responses event stream.
pub struct StreamWriter<'a> {
    meta: &'a ResponseMeta,
    sequence: u64,
    open: Option<(Open, usize)>,
    /// Items done so far, in order.
    done: Vec<Value>,
}

impl<'a> StreamWriter<'a> {
    pub fn new(meta: &'a ResponseMeta) -> Self {
        Self {
            meta,
            sequence: 0,
            open: None,
            done: Vec::new(),
        }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> sse::Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        sse::Data::new(data.to_string()).event(kind).into()
    }

    /// `response.created`, `response.in_progress`.
    pub fn open(&mut self) -> Vec<sse::Event> {
        let response = self.meta.object("in_progress", Vec::new(), None);
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// The events of one engine event (none for the final ones).
    pub fn frames(&mut self, generation_event: &GenerationEvent) -> Vec<sse::Event> {
        let mut frames = Vec::new();
        match generation_event {
            GenerationEvent::Text(text) if !text.is_empty() => {
                if !matches!(self.open, Some((Open::Message { .. }, _))) {
                    self.finish_open(&mut frames);
                    self.start_message(&mut frames);
                }
                if let Some((Open::Message { id, text: sent }, index)) = &mut self.open {
                    sent.push_str(text);
                    let data = json!({"item_id": id, "output_index": index, "content_index": 0,
                                      "delta": text, "logprobs": []});
                    frames.push(self.event("response.output_text.delta", data));
                }
            }
            GenerationEvent::Reasoning(text) if !text.is_empty() => {
                if !matches!(self.open, Some((Open::Reasoning { .. }, _))) {
                    self.finish_open(&mut frames);
                    let id = item_id("rs_");
                    let index = self.done.len();
                    let mut item = reasoning_item(&id, "");
                    item["content"] = json!([]);
                    frames.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    let open = Open::Reasoning {
                        id,
                        text: String::new(),
                    };
                    self.open = Some((open, index));
                }
                if let Some((Open::Reasoning { id, text: sent }, index)) = &mut self.open {
                    sent.push_str(text);
                    let data = json!({"item_id": id, "output_index": index, "content_index": 0,
                                      "delta": text});
                    frames.push(self.event("response.reasoning_text.delta", data));
                }
            }
            GenerationEvent::ToolCall {
                id: call_id, name, ..
            } => {
                self.finish_open(&mut frames);
                let id = item_id("fc_");
                let index = self.done.len();
                let call = ToolCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                };
                frames.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": call_item(&id, &call, "in_progress")}),
                ));
                self.open = Some((Open::Call { id, call }, index));
            }
            GenerationEvent::ToolArguments { fragment, .. } => {
                if let Some((Open::Call { id, call }, index)) = &mut self.open {
                    call.arguments.push_str(fragment);
                    let data = json!({"item_id": id, "output_index": index, "delta": fragment});
                    frames.push(self.event("response.function_call_arguments.delta", data));
                }
            }
            _ => {}
        }
        frames
    }

    /// Opens a message item: `response.output_item.added`, `response.content_part.added`.
    fn start_message(&mut self, frames: &mut Vec<sse::Event>) {
        let id = item_id("msg_");
        let index = self.done.len();
        let item = message_item(&id, "", "in_progress");
        frames.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        frames.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": text_part("")}),
        ));
        self.open = Some((
            Open::Message {
                id,
                text: String::new(),
            },
            index,
        ));
    }

    /// Closes the open item: its `done` events.
    fn finish_open(&mut self, frames: &mut Vec<sse::Event>) {
        let Some((open, index)) = self.open.take() else {
            return;
        };
        let item = match open {
            Open::Reasoning { id, text } => {
                let data = json!({"item_id": id, "output_index": index, "content_index": 0,
                                  "text": text});
                frames.push(self.event("response.reasoning_text.done", data));
                reasoning_item(&id, &text)
            }
            Open::Message { id, text } => {
                let base = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = base.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                frames.push(self.event("response.output_text.done", done));
                let mut part = base;
                part["part"] = text_part(&text);
                frames.push(self.event("response.content_part.done", part));
                message_item(&id, &text, "completed")
            }
            Open::Call { id, call } => {
                let data = json!({"item_id": id, "output_index": index,
                                  "name": call.name, "arguments": call.arguments});
                frames.push(self.event("response.function_call_arguments.done", data));
                call_item(&id, &call, "completed")
            }
        };
        frames.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.done.push(item);
    }

    /// The end: the open item done, then `response.completed` (or `response.incomplete` when
    /// the budget ran out) with the whole response. Returns the events and the response.
    pub fn close(&mut self, summary: &GenerationSummary) -> (Vec<sse::Event>, Value) {
        let mut frames = Vec::new();
        let answered = self.done.iter().any(|item| item["type"] != "reasoning");
        if !answered
            && !matches!(
                self.open,
                Some((Open::Message { .. } | Open::Call { .. }, _))
            )
        {
            // No text and no call: an empty message, as a whole response has.
            self.finish_open(&mut frames);
            self.start_message(&mut frames);
        }
        self.finish_open(&mut frames);
        let response = self
            .meta
            .object("completed", self.done.clone(), Some(summary));
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        frames.push(self.event(kind, json!({"response": response})));
        (frames, response)
    }

    /// A failure after the stream began: `response.failed` with the error.
    pub fn fail(&mut self, error: &OpenAiError) -> sse::Event {
        let mut response = self.meta.object("failed", self.done.clone(), None);
        response["error"] =
            json!({"code": error.code.unwrap_or("server_error"), "message": error.message});
        self.event("response.failed", json!({"response": response}))
    }
}

/// The conversation a response ends: its output as an assistant message (text and calls).
pub fn output_message(answer: &Answer) -> crate::engine::ChatMessage {
    let mut message = crate::engine::ChatMessage::assistant(answer.text.clone());
    message.tool_calls = answer.calls.clone();
    message
}
