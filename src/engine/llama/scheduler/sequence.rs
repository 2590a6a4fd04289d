//! Per-token streaming: a request in a slot, sampling its next token from a decoded batch (and the
//! tokens its constraint forces after it), turning token bytes into UTF-8 text pieces (stop
//! strings held back), and its final event.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::queue::Job;
use super::tool_use::ToolUse;
use super::Scheduler;
use crate::engine::detok::{StopMatcher, Utf8Assembler};
use crate::engine::llama::model::Model;
use crate::engine::llama::replay::{PromptKey, Replays};
use crate::engine::llama::sampling::TokenSampler;
use crate::engine::{EngineError, FinishReason, GenerationEvent, GenerationSummary};

/// A request in a slot.
pub struct Sequence {
    pub events: mpsc::Sender<GenerationEvent>,
    /// The tokens to prefill: the prompt, then the answer's first tokens when its constraint
    /// forces them.
    pub prompt: Vec<LlamaToken>,
    /// How many of `prompt` are the prompt itself.
    prompt_len: usize,
    /// Prompt tokens in the KV cache (cached or computed).
    pub prefilled: usize,
    cached: usize,
    max_new_tokens: usize,
    generated: usize,
    /// Answer tokens fed by fast-forward rather than sampled.
    forced: usize,
    fast_forward: bool,
    /// The forced start of the answer, prefilled with the prompt, its text still to be sent.
    lead: Vec<LlamaToken>,
    /// Tokens still to be fed: the one sampled last, and those its constraint forces after it.
    pub next_input: Vec<LlamaToken>,
    /// Functions the model may or must call.
    tools: Option<ToolUse>,
    sampler: TokenSampler,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    /// The answer as generated: its tokens and the text sent, to be replayed in the next turn's
    /// prompt (`None` once it cannot be: a stop string cut it).
    answer: Option<(Vec<LlamaToken>, String)>,
    /// The prompt it is remembered after.
    after: Option<PromptKey>,
    /// Index of this sequence's logits in the batch just decoded.
    pub logits_index: Option<i32>,
    submitted: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
}

impl Sequence {
    /// A job admitted with its first `cached` prompt tokens already in the slot's cells.
    pub fn new(job: Job, cached: usize) -> Self {
        let Job { request, events } = job;
        let prompt_len = request.prompt.len() - request.lead;
        Self {
            events,
            lead: request.prompt[prompt_len..].to_vec(),
            prompt: request.prompt,
            prompt_len,
            prefilled: cached,
            cached,
            max_new_tokens: request.max_new_tokens,
            generated: 0,
            forced: 0,
            fast_forward: request.fast_forward,
            next_input: Vec::new(),
            tools: request.tools,
            sampler: request.sampler,
            utf8: Utf8Assembler::new(),
            answer: request.stop.is_empty().then(Default::default),
            after: request.after,
            stop: StopMatcher::new(request.stop),
            logits_index: None,
            submitted: request.submitted,
            admitted: Instant::now(),
            first_token: None,
        }
    }

    /// Samples the next token (if this step computed its logits), takes the tokens its constraint
    /// forces after it, and streams their text.
    fn advance(&mut self, ctx: &LlamaContext<'_>, model: &Model, piece: &mut Vec<u8>) -> Step {
        let Some(index) = self.logits_index else {
            return Step::Continue; // Still processing its prompt.
        };
        if !self.lead.is_empty() {
            let lead = std::mem::take(&mut self.lead);
            self.forced += lead.len();
            if let Some(step) = self.emit(&lead, model, piece) {
                return step;
            }
        }
        let token = match self.sampler.sample(ctx, index) {
            Ok(token) => token,
            Err(e) => return Step::Finish(Err(e)),
        };
        self.first_token.get_or_insert_with(Instant::now);
        if model.is_end_of_generation(token) {
            return Step::Finish(Ok(FinishReason::Stop));
        }
        if let Some(grammar) = self.tools.as_mut().and_then(|t| t.begins(token)) {
            self.sampler.constrain(grammar);
        }
        let mut fed = vec![token];
        if self.fast_forward {
            fed.extend(self.sampler.forced());
        }
        fed.truncate(self.max_new_tokens.saturating_sub(self.generated));
        self.forced += fed.len().saturating_sub(1);
        if let Some(step) = self.emit(&fed, model, piece) {
            return step;
        }
        self.next_input = fed;
        if self.fast_forward && self.sampler.constraint_complete() {
            // Only the end of generation is left: the client need not wait for a decode step to
            // sample it.
            return Step::Finish(Ok(FinishReason::Stop));
        }
        if self.generated >= self.max_new_tokens {
            return Step::Finish(Ok(FinishReason::Length));
        }
        Step::Continue
    }

    /// Counts `tokens` as generated, remembers them for replay and sends their text. Returns how
    /// the sequence ends if it does (a stop string, a client gone).
    fn emit(&mut self, tokens: &[LlamaToken], model: &Model, piece: &mut Vec<u8>) -> Option<Step> {
        let mut text = String::new();
        for &token in tokens {
            self.generated += 1;
            model.token_bytes(token, piece);
            text.push_str(&self.utf8.push(piece));
            // A special token the model sampled stays in the replay: it is the model's own output
            // (it gave the client no text), and the next turn's cells hold it.
            if let Some((answer, _)) = self.answer.as_mut() {
                answer.push(token);
            }
        }
        if let Some(tools) = self.tools.as_mut().filter(|t| t.is_calling()) {
            // Calls are not text: no stop string applies to them.
            for event in tools.events(&text) {
                if self.events.try_send(event).is_err() {
                    return Some(Step::ClientGone);
                }
            }
            return None;
        }
        let (text, stopped) = self.stop.push(text);
        if stopped {
            // The tokens hold the stop string, the text the client got does not: they no longer
            // stand for each other.
            self.answer = None;
        }
        if let Some((_, sent)) = self.answer.as_mut() {
            sent.push_str(&text);
        }
        if !text.is_empty() && self.events.try_send(GenerationEvent::Text(text)).is_err() {
            return Some(Step::ClientGone);
        }
        stopped.then_some(Step::Finish(Ok(FinishReason::Stop)))
    }

    /// Sends what the stop matcher and the UTF-8 assembler still hold, then the final event; a
    /// complete answer is remembered for replay.
    fn finish(mut self, outcome: Result<FinishReason, EngineError>, replays: &Replays) {
        let (mut tail, _) = self.stop.push(self.utf8.finish());
        tail.push_str(&self.stop.finish());
        if let Some((_, sent)) = self.answer.as_mut() {
            sent.push_str(&tail);
        }
        if !tail.is_empty() {
            let _ = self.events.try_send(GenerationEvent::Text(tail));
        }
        if let (Ok(_), Some((tokens, text))) = (&outcome, self.answer.take()) {
            replays.remember(&text, self.after, tokens);
        }
        let called = self.tools.as_ref().is_some_and(ToolUse::called);
        let event = match outcome {
            Ok(finish_reason) => {
                let finish_reason = match finish_reason {
                    FinishReason::Stop if called => FinishReason::ToolCalls,
                    other => other,
                };
                let now = Instant::now();
                GenerationEvent::Done(GenerationSummary {
                    finish_reason,
                    prompt_tokens: self.prompt_len,
                    cached_tokens: self.cached.min(self.prompt_len),
                    completion_tokens: self.generated,
                    forced_tokens: self.forced,
                    queue_wait: self.admitted - self.submitted,
                    time_to_first_token: self.first_token.unwrap_or(now) - self.submitted,
                    total_time: now - self.submitted,
                    upstream_latency: None,
                })
            }
            Err(e) => GenerationEvent::Failed(e),
        };
        let _ = self.events.try_send(event);
    }
}

/// What a sequence does after a decode step.
enum Step {
    Continue,
    Finish(Result<FinishReason, EngineError>),
    ClientGone,
}

impl Scheduler<'_> {
    pub(super) fn sample_all(&mut self) {
        for slot_id in 0..self.slots.len() {
            self.sample(slot_id);
        }
    }

    /// Samples a slot's next token from the batch just decoded and streams its text.
    pub(super) fn sample(&mut self, slot_id: usize) {
        self.slots[slot_id].staged = None;
        let Some(seq) = self.slots[slot_id].sequence.as_mut() else {
            return;
        };
        match seq.advance(&self.ctx, self.model, &mut self.piece) {
            Step::Continue => {}
            Step::Finish(outcome) => self.finish(slot_id, outcome),
            Step::ClientGone => self.leave(slot_id),
        }
    }

    /// Frees the slots whose client has gone.
    pub(super) fn drop_abandoned(&mut self) {
        for slot_id in 0..self.slots.len() {
            let gone = self.slots[slot_id]
                .sequence
                .as_ref()
                .is_some_and(|s| s.events.is_closed());
            if gone {
                self.leave(slot_id);
            }
        }
    }

    /// Frees the slot of a sequence whose client has gone, saying how far it had come.
    fn leave(&mut self, slot_id: usize) {
        if let Some(seq) = self.slots[slot_id].sequence.take() {
            tracing::info!(
                slot_id,
                prompt_tokens = seq.prompt_len,
                prefilled = seq.prefilled,
                generated = seq.generated,
                "client left; generation stopped"
            );
        }
    }

    /// Sends the final event and frees the slot (its cells stay cached). The answer's last tokens,
    /// not decoded yet, are decoded after the final event when a step has room, so that the next
    /// turn of the conversation finds the whole answer cached.
    pub(super) fn finish(&mut self, slot_id: usize, outcome: Result<FinishReason, EngineError>) {
        let slot = &mut self.slots[slot_id];
        if let Some(mut seq) = slot.sequence.take() {
            if outcome.is_ok() && seq.next_input.len() <= self.batch_size {
                slot.tail = std::mem::take(&mut seq.next_input);
            }
            seq.finish(outcome, self.replays);
        }
    }
}
