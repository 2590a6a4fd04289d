//! Relaying one upstream stream to a request's events channel, as it arrives: text pieces, then
//! `Done` with the upstream's counts, or `Failed` when the stream breaks, stalls, or is not a
//! chat completion stream. A client that leaves ends the relay, which closes the connection.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use super::request::describe;
use super::sse::{self, Chunk, EventReader};
use super::tool_text::ToolText;
use super::Upstream;
use super::UpstreamError;
use crate::{EventSender, FinishReason, GenerationEvent, GenerationSummary};

/// Relays one upstream stream to the events channel.
pub struct Relay {
    pub upstream: Arc<Upstream>,
    pub events: EventSender,
    pub prompt_tokens: usize,
    pub summary: GenerationSummary,
    pub submitted: Instant,
    /// Calls to read from the answer's text (a prompt the gateway rendered, with tools).
    pub tool_text: Option<ToolText>,
    /// Alternatives per token asked for: an upstream may send more (the completions form asks
    /// for at least one).
    pub top_logprobs: usize,
}

impl Relay {
    pub async fn run(mut self, response: reqwest::Response) {
        let idle = self.upstream.settings.idle_timeout;
        let mut body = response.bytes_stream();
        let mut reader = EventReader::default();
        let mut abort = self.upstream.abort.subscribe();
        // A stop that came before this relay subscribed is not a change it would see.
        let aborted = abort.borrow_and_update().clone();
        if let Some(error) = aborted {
            let _ = self.events.send(GenerationEvent::Failed(error));
            return;
        }
        let outcome = loop {
            let next = tokio::select! {
                // The client left: dropping the body closes the upstream connection.
                () = self.events.closed() => return,
                Ok(()) = abort.changed() => {
                    let aborted = abort.borrow().clone();
                    if let Some(error) = aborted {
                        let _ = self.events.send(GenerationEvent::Failed(error));
                        return;
                    }
                    continue;
                }
                next = tokio::time::timeout(idle, body.next()) => next,
            };
            let bytes = match next {
                Err(_) => break Err(format!("no data for {} s", idle.as_secs())),
                Ok(None) => break Err("the stream ended before [DONE]".into()),
                Ok(Some(Err(e))) => break Err(format!("the stream broke: {}", describe(&e))),
                Ok(Some(Ok(bytes))) => bytes,
            };
            match reader.push(&bytes) {
                Ok(events) => match self.take(events) {
                    Some(outcome) => break outcome,
                    None => continue,
                },
                Err(garbage) => break Err(garbage),
            }
        };
        let event = match outcome {
            Ok(()) => {
                if let Some(tool_text) = self.tool_text.as_mut() {
                    for event in tool_text.finish() {
                        let _ = self.events.send(event);
                    }
                    if tool_text.called()
                        && matches!(self.summary.finish_reason, FinishReason::Stop)
                    {
                        self.summary.finish_reason = FinishReason::ToolCalls;
                    }
                }
                let now = Instant::now();
                self.summary.total_time = now - self.submitted;
                if self.summary.time_to_first_token.is_zero() {
                    self.summary.time_to_first_token = self.summary.total_time;
                }
                GenerationEvent::Done(self.summary)
            }
            Err(why) => GenerationEvent::Failed(self.upstream.fault(UpstreamError::Failed(why))),
        };
        let _ = self.events.send(event);
    }

    /// Handles the events of one read: `Some` once the stream is over.
    fn take(&mut self, events: Vec<String>) -> Option<Result<(), String>> {
        for data in events {
            match sse::parse(&data) {
                Ok(Chunk::Delta {
                    text,
                    reasoning,
                    tool_calls,
                    finish_reason,
                    logprobs,
                }) => {
                    if !reasoning.is_empty() {
                        let _ = self.events.send(GenerationEvent::Reasoning(reasoning));
                    }
                    if !logprobs.is_empty() {
                        let mut logprobs = logprobs;
                        for token in &mut logprobs {
                            token.top.truncate(self.top_logprobs);
                        }
                        let _ = self.events.send(GenerationEvent::Logprobs(logprobs));
                    }
                    for call in tool_calls {
                        for event in tool_call_events(call) {
                            let _ = self.events.send(event);
                        }
                    }
                    if !text.is_empty() {
                        if self.summary.time_to_first_token.is_zero() {
                            self.summary.time_to_first_token = self.submitted.elapsed();
                        }
                        self.summary.completion_tokens += 1;
                        let events = match self.tool_text.as_mut() {
                            Some(tool_text) => tool_text.push(&text),
                            None => vec![GenerationEvent::Text(text)],
                        };
                        for event in events {
                            // A closed channel is seen at the next select.
                            let _ = self.events.send(event);
                        }
                    }
                    match finish_reason.as_deref() {
                        Some("length") => self.summary.finish_reason = FinishReason::Length,
                        Some("tool_calls") => self.summary.finish_reason = FinishReason::ToolCalls,
                        _ => {}
                    }
                }
                Ok(Chunk::Usage {
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                }) => {
                    self.summary.prompt_tokens = if prompt_tokens > 0 {
                        prompt_tokens
                    } else {
                        self.prompt_tokens
                    };
                    self.summary.completion_tokens = completion_tokens;
                    self.summary.cached_tokens = cached_tokens;
                }
                Ok(Chunk::Done) => return Some(Ok(())),
                Ok(Chunk::Error(message)) => return Some(Err(format!("error event: {message}"))),
                Err(garbage) => return Some(Err(garbage)),
            }
        }
        None
    }
}

/// The events a streamed tool-call piece stands for: the call's start when it names the
/// function, then its arguments.
fn tool_call_events(call: sse::ToolCallDelta) -> Vec<GenerationEvent> {
    let mut events = Vec::new();
    if let Some(name) = call.name {
        events.push(GenerationEvent::ToolCall {
            index: call.index,
            id: call.id.unwrap_or_else(crate::tool_calls::new_call_id),
            name,
        });
    }
    if !call.arguments.is_empty() {
        events.push(GenerationEvent::ToolArguments {
            index: call.index,
            fragment: call.arguments,
        });
    }
    events
}
