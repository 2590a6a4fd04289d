//! A request in a slot: sampling its next token from a decoded batch (and the tokens its
//! constraint forces after it), and its final event. Its text goes out through its
//! [`TextStream`], between this step and the next.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;

use super::draft::{threshold, Drafter};
use super::queue::{ChoiceGroup, Job};
use super::stream::{StreamEnd, TextStream};
use super::tool_use::AnswerGuide;
use super::Scheduler;
use crate::llama::logprobs::token_logprob;
use crate::llama::model::Model;
use crate::llama::sampling::TokenSampler;
use crate::tokenizer::replay::{PromptKey, Replays};
use crate::{EngineError, FinishReason, GenerationEvent, GenerationSummary};

/// A request in a slot.
pub struct Sequence {
    pub stream: TextStream,
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
    /// Tokens that may follow `next_input`, decoded with it to be checked (self-speculation).
    pub drafts: Vec<LlamaToken>,
    /// Drafts of the last step the sampler did not choose: the scheduler removes their cells.
    pub rejected: usize,
    /// Proposes the drafts (`None`: speculation off).
    pub drafter: Option<Drafter>,
    pub sampler: TokenSampler,
    /// Starts the answer's grammar where it does not apply from the first token.
    guide: Option<AnswerGuide>,
    /// The answer's tokens as generated, to be replayed in the next turn's prompt.
    answer: Vec<LlamaToken>,
    /// The prompt it is remembered after.
    after: Option<PromptKey>,
    /// Index of this sequence's logits in the batch just decoded.
    pub logits_index: Option<i32>,
    /// Report each token's log probability and this many most likely tokens.
    logprobs: Option<usize>,
    /// The choices it shares its prompt with.
    pub group: Option<ChoiceGroup>,
    submitted: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
}

impl Sequence {
    /// A job admitted with its first `cached` prompt tokens already in the slot's cells.
    pub fn new(job: Job, cached: usize) -> Self {
        let Job { request, events } = job;
        let prompt_len = request.prompt.len() - request.lead;
        let drafter = request
            .speculation
            .then(|| Drafter::new(&request.prompt[..prompt_len]));
        Self {
            stream: TextStream::new(events, request.stop, request.reader, request.special_text),
            guide: request.guide,
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
            drafts: Vec::new(),
            rejected: 0,
            drafter,
            sampler: request.sampler,
            answer: Vec::new(),
            after: request.after,
            logits_index: None,
            logprobs: request.logprobs,
            group: request.group,
            submitted: request.submitted,
            admitted: Instant::now(),
            first_token: None,
        }
    }

    /// Samples the next token (if this step computed its logits) and takes the tokens its
    /// constraint forces after it; their text is queued on the stream. Drafted tokens decoded
    /// with the step are checked in order: each the sampler chooses itself at its place is kept
    /// (it is in the cells already), and the first it does not choose ends the check, the
    /// sampler's own choice taking its place. The sampler draws exactly as it would have without
    /// the drafts, so the answer is the same (for a draft of given tokens this is the standard
    /// acceptance rule: a draft token is kept with the probability the model gives it, and
    /// otherwise the choice comes from the rest), up to the last bits in which llama.cpp's
    /// logits of a position computed among several differ (`tests/integration/speculation.rs`).
    fn advance(
        &mut self,
        ctx: &LlamaContext<'_>,
        model: &Model,
        threshold: f64,
    ) -> Option<Result<FinishReason, EngineError>> {
        let index = self.logits_index?; // None: still processing its prompt.
        if !self.lead.is_empty() {
            let lead = std::mem::take(&mut self.lead);
            self.forced += lead.len();
            self.generated += lead.len();
            self.keep(&lead);
        }
        let drafts = std::mem::take(&mut self.drafts);
        let mut checked = 0;
        let outcome = loop {
            let step = self.sample_at(ctx, model, index + checked as i32);
            let token = match step {
                Ok(Some(token)) => token,
                Ok(None) => break Some(Ok(FinishReason::Stop)),
                Err(e) => break Some(Err(e)),
            };
            if drafts.get(checked) != Some(&token) {
                break self.feed(token);
            }
            // The draft's token, in the cells already; so are the tokens its constraint forces
            // after it, as far as the draft has them.
            checked += 1;
            self.generated += 1;
            self.keep(&[token]);
            let forced = self.forced_after();
            let in_cells = forced
                .iter()
                .zip(&drafts[checked..])
                .take_while(|(forced, drafted)| forced == drafted)
                .count();
            checked += in_cells;
            if in_cells < forced.len() {
                // The draft went another way: the forced tokens it lacks are the next input.
                self.next_input = forced[in_cells..].to_vec();
                break self.fed_end();
            }
            if let Some(end) = self.fed_end() {
                break Some(end);
            }
        };
        // The drafts after the last one kept are not the answer: their cells go.
        self.rejected = drafts.len() - checked;
        if let Some(drafter) = &mut self.drafter {
            drafter.report(drafts.len(), checked);
            if outcome.is_none() {
                let room = self.max_new_tokens.saturating_sub(self.generated);
                self.drafts = drafter.draft(room, threshold);
            }
        }
        outcome
    }

    /// The token the sampler chooses from the logits at batch index `index` (`None`: the end
    /// of generation), its log probability queued, the grammar it begins (if any) set.
    fn sample_at(
        &mut self,
        ctx: &LlamaContext<'_>,
        model: &Model,
        index: i32,
    ) -> Result<Option<LlamaToken>, EngineError> {
        let logits = ctx.get_logits_ith(index);
        let token = self.sampler.sample(logits)?;
        let token = match &self.guide {
            Some(guide) => guide.overrule(token, self.generated),
            None => token,
        };
        self.first_token.get_or_insert_with(Instant::now);
        if model.tokenizer().is_end_of_generation(token) {
            return Ok(None);
        }
        if let Some(top) = self.logprobs {
            let logprob = token_logprob(logits, token, top, model.tokenizer());
            self.stream.push_logprob(logprob);
        }
        if let Some(grammar) = self.guide.as_mut().and_then(|g| g.sampled(token, model)) {
            self.sampler.constrain(grammar);
        }
        Ok(Some(token))
    }

    /// `token` (sampled, not in the cells yet) and the tokens its constraint forces after it
    /// become the next step's input.
    fn feed(&mut self, token: LlamaToken) -> Option<Result<FinishReason, EngineError>> {
        self.generated += 1;
        self.keep(&[token]);
        self.next_input = vec![token];
        let forced = self.forced_after();
        self.next_input.extend(forced);
        self.fed_end()
    }

    /// The tokens the constraint forces after the one just chosen (with grammar fast-forward),
    /// within the budget, counted and queued.
    fn forced_after(&mut self) -> Vec<LlamaToken> {
        if !self.fast_forward || self.generated >= self.max_new_tokens {
            return Vec::new();
        }
        let mut forced = self.sampler.forced();
        forced.truncate(self.max_new_tokens - self.generated);
        self.forced += forced.len();
        self.generated += forced.len();
        self.keep(&forced);
        forced
    }

    /// Whether the answer ends with the tokens chosen so far.
    fn fed_end(&self) -> Option<Result<FinishReason, EngineError>> {
        if self.fast_forward && self.sampler.constraint_complete() {
            // Only the end of generation is left: the client need not wait for a decode step to
            // sample it.
            return Some(Ok(FinishReason::Stop));
        }
        (self.generated >= self.max_new_tokens).then_some(Ok(FinishReason::Length))
    }

    /// Whether this step computes its logits under a constraint: its next mask can be computed
    /// while the step decodes.
    pub fn needs_mask(&self) -> bool {
        self.logits_index.is_some() && self.sampler.is_constrained()
    }

    /// Remembers `tokens` of the answer for replay and queues their text.
    fn keep(&mut self, tokens: &[LlamaToken]) {
        // A special token the model sampled stays in the replay: it is the model's own output
        // (it gave the client no text), and the next turn's cells hold it.
        self.answer.extend_from_slice(tokens);
        if let Some(drafter) = &mut self.drafter {
            drafter.extend(tokens);
        }
        self.stream.push(tokens);
    }

    /// Sends the text not sent yet, then the final event; the answer the client received is
    /// remembered for replay.
    fn finish(
        mut self,
        outcome: Result<FinishReason, EngineError>,
        model: &Model,
        replays: &Replays,
    ) {
        let stopped = self.stream.close(model);
        if outcome.is_ok() {
            if let Some((text, tokens)) = self.stream.received(&self.answer, model) {
                replays.remember(text, self.after, tokens);
            }
        }
        let event = match outcome {
            Ok(finish_reason) => {
                let finish_reason = match finish_reason {
                    FinishReason::Stop if self.stream.called() => FinishReason::ToolCalls,
                    // The answer's last text reached a stop string before its length ran out.
                    FinishReason::Length if stopped => FinishReason::Stop,
                    other => other,
                };
                let now = Instant::now();
                let completion_tokens = self
                    .stream
                    .tokens_to_stop(&self.answer, model)
                    .unwrap_or(self.generated);
                GenerationEvent::Done(GenerationSummary {
                    finish_reason,
                    prompt_tokens: self.prompt_len,
                    cached_tokens: self.cached.min(self.prompt_len),
                    completion_tokens,
                    forced_tokens: self.forced.min(completion_tokens),
                    drafted_tokens: self.drafter.as_ref().map_or(0, |d| d.drafted),
                    accepted_tokens: self.drafter.as_ref().map_or(0, |d| d.accepted),
                    queue_wait: self.admitted - self.submitted,
                    time_to_first_token: self.first_token.unwrap_or(now) - self.submitted,
                    total_time: now - self.submitted,
                    upstream_latency: None,
                    stop_sequence: self.stream.stop_sequence(),
                })
            }
            Err(e) => GenerationEvent::Failed(e),
        };
        let _ = self.stream.events.send(event);
    }
}

impl Scheduler<'_> {
    pub(super) fn sample_all(&mut self) {
        for slot_id in 0..self.slots.len() {
            self.sample(slot_id);
        }
    }

    /// Samples a slot's next token from the batch just decoded.
    pub(super) fn sample(&mut self, slot_id: usize) {
        self.slots[slot_id].staged = None;
        // The sequences that will share the next step: how sure a draft must be to pay.
        let generating = self
            .slots
            .iter()
            .filter(|slot| slot.sequence.is_some())
            .count();
        let threshold = threshold(generating);
        let Some(seq) = self.slots[slot_id].sequence.as_mut() else {
            return;
        };
        let outcome = seq.advance(&self.ctx, self.model, threshold);
        let rejected = std::mem::take(&mut seq.rejected);
        if rejected > 0 {
            let slot = &mut self.slots[slot_id];
            let kept = slot.cells.len() - rejected;
            slot.cells.truncate(kept);
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot_id as u32), Some(kept as u32), None);
        }
        if let Some(outcome) = outcome {
            self.finish(slot_id, outcome);
        }
    }

    /// Ends the sequences whose stream ended while the step was decoded: a stop string reached,
    /// or a client gone.
    pub(super) fn end_streams(&mut self, ends: &[(usize, StreamEnd)]) {
        for &(slot_id, end) in ends {
            match end {
                StreamEnd::Stopped => self.finish(slot_id, Ok(FinishReason::Stop)),
                StreamEnd::ClientGone => self.leave(slot_id),
            }
        }
    }

    /// Frees the slots whose client has gone.
    pub(super) fn drop_abandoned(&mut self) {
        for slot_id in 0..self.slots.len() {
            let gone = self.slots[slot_id]
                .sequence
                .as_ref()
                .is_some_and(|s| s.stream.events.is_closed());
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
            seq.finish(outcome, self.model, self.replays);
        }
    }
}
