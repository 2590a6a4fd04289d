//! Sampling settings -> a llama.cpp sampler chain, with an optional constraint (an llguidance
//! [`Matcher`], see [`super::guidance`]). The logit bias and the repetition penalties, which
//! come first, are applied here to the candidates they touch ([`super::penalties`]) instead of by
//! llama.cpp's samplers, which visit the whole vocabulary on every step; when the chain begins
//! with top-k (or is greedy) the chain runs on the k candidates [`select`] reads from the logits.
//!
//! The constraint is not applied to every candidate first: like llama.cpp's own sampler we
//! sample without it, ask the constraint about the one chosen token, and only when it is refused
//! sample again with the mask applied. The mask depends only on the tokens already chosen, so the
//! scheduler may compute it while the model computes the logits ([`Constraint::prepare_mask`]);
//! the tokens chosen are the same either way.

mod select;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llguidance::toktrie::{SimpleVob, TokenId};
use llguidance::Matcher;

use super::guidance;
use super::model::Model;
use super::penalties::LogitAdjustments;
use crate::llama::LlamaError;
use crate::{EngineError, SamplingParams};

/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
const PENALTY_LAST_N: usize = 64;

/// The sampler of one sequence.
pub struct TokenSampler {
    /// Bias and penalties, before the chain (`None`: neutral).
    adjustments: Option<LogitAdjustments>,
    chain: LlamaSampler,
    /// How many candidates the chain's first stage keeps (top-k; 1 for greedy), read from the
    /// logits directly; `None`: it needs every token.
    keep: Option<usize>,
    constraint: Option<Constraint>,
    end_of_generation: LlamaToken,
}

/// An output constraint and, when computed ahead, the mask of its next token.
pub struct Constraint {
    matcher: Matcher,
    /// The allowed next tokens in the matcher's present state.
    mask: Option<SimpleVob>,
}

impl Constraint {
    fn new(matcher: Matcher) -> Self {
        Self {
            matcher,
            mask: None,
        }
    }

    /// Computes the next token's mask now (on a thread beside `llama_decode`), so that a refused
    /// token costs one more pass over the logits, not the mask's computation on the step's
    /// critical path. A failure is left for [`TokenSampler::sample`] to report.
    pub fn prepare_mask(&mut self) {
        if self.mask.is_none() && !self.matcher.is_stopped() {
            self.mask = self.matcher.compute_mask().ok();
        }
    }

    fn allows(&mut self, token: LlamaToken) -> bool {
        match &self.mask {
            Some(mask) => mask.is_allowed(token.0 as TokenId),
            None => guidance::allows(&mut self.matcher, token),
        }
    }

    fn mask(&mut self) -> Result<SimpleVob, EngineError> {
        match self.mask.take() {
            Some(mask) => Ok(mask),
            None => self.matcher.compute_mask().map_err(constraint_failed),
        }
    }

    fn consume(&mut self, token: LlamaToken) -> Result<(), EngineError> {
        self.mask = None;
        self.matcher
            .consume_token(token.0 as TokenId)
            .map_err(constraint_failed)
    }
}

impl TokenSampler {
    /// The chain `params` describe, constrained by `constraint` if given (compiled on a prepare
    /// thread: never on the engine thread).
    pub fn new(model: &Model, params: &SamplingParams, constraint: Option<Matcher>) -> Self {
        let llama = model.llama();
        Self::for_vocabulary(llama.n_vocab(), llama.vocab().eos(), params, constraint)
    }

    fn for_vocabulary(
        n_vocab: i32,
        end_of_generation: LlamaToken,
        params: &SamplingParams,
        constraint: Option<Matcher>,
    ) -> Self {
        let mut stages = Vec::new();
        // Token ids beyond the vocabulary are left out: the request was checked before it was
        // known which model answers it.
        let biases: Vec<(LlamaToken, f32)> = params
            .logit_bias
            .iter()
            .filter(|(token, _)| (0..n_vocab).contains(token))
            .map(|&(token, bias)| (LlamaToken(token), bias))
            .collect();
        let adjustments = LogitAdjustments::new(
            biases,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
            PENALTY_LAST_N,
        );
        let keep;
        if params.temperature <= 0.0 {
            stages.push(LlamaSampler::greedy());
            keep = Some(1);
        } else {
            keep = (params.top_k > 0).then(|| (params.top_k as usize).min(n_vocab as usize));
            if params.top_k > 0 {
                stages.push(LlamaSampler::top_k(params.top_k));
            }
            if params.top_p < 1.0 {
                stages.push(LlamaSampler::top_p(params.top_p, 1));
            }
            if params.min_p > 0.0 {
                stages.push(LlamaSampler::min_p(params.min_p, 1));
            }
            stages.push(LlamaSampler::temp(params.temperature));
            stages.push(LlamaSampler::dist(params.seed.unwrap_or_else(fresh_seed)));
        }
        Self {
            adjustments,
            chain: LlamaSampler::chain_simple(stages),
            keep,
            constraint: constraint.map(Constraint::new),
            end_of_generation,
        }
    }

    /// Picks the next token from one position's `logits` and records it in the samplers' state
    /// (penalty history, position in the constraint).
    pub fn sample(&mut self, logits: &[f32]) -> Result<LlamaToken, EngineError> {
        if self
            .constraint
            .as_ref()
            .is_some_and(|c| c.matcher.is_stopped())
        {
            // Complete (the last token finished it): the end of generation is all that is left.
            return Ok(self.end_of_generation);
        }
        let mut token = self.pick(logits, None)?;
        if let Some(mut constraint) = self.constraint.take() {
            let checked = if constraint.allows(token) {
                Ok(())
            } else {
                constraint.mask().and_then(|mask| {
                    token = self.pick(logits, Some(&mask))?;
                    Ok(())
                })
            };
            let consumed = checked.and_then(|()| constraint.consume(token));
            self.constraint = Some(constraint);
            consumed?;
        }
        self.accept(token);
        Ok(token)
    }

    /// Runs the chain on the candidates of `logits` (adjusted, masked) and returns its choice.
    fn pick(
        &mut self,
        logits: &[f32],
        mask: Option<&SimpleVob>,
    ) -> Result<LlamaToken, EngineError> {
        let adjustments = self.adjustments.as_ref();
        let mut candidates = match self.keep {
            Some(k) => select::top(logits, adjustments, mask, k),
            None => select::all(logits, adjustments, mask),
        };
        candidates.apply_sampler(&mut self.chain);
        candidates
            .selected_token()
            .ok_or(LlamaError::NoTokenSampled.into())
    }

    /// Records `token` in the samplers' state (the chain's, the penalty window).
    fn accept(&mut self, token: LlamaToken) {
        self.chain.accept(token);
        if let Some(adjustments) = self.adjustments.as_mut() {
            adjustments.accept(token);
        }
    }

    /// Whether a constraint still decides the next token.
    pub fn is_constrained(&self) -> bool {
        self.constraint
            .as_ref()
            .is_some_and(|c| !c.matcher.is_stopped())
    }

    /// The constraint, for computing its next mask ahead (`None`: unconstrained).
    pub fn constraint_mut(&mut self) -> Option<&mut Constraint> {
        self.constraint.as_mut()
    }

    /// Constrains the rest of the answer with `matcher` (a grammar that applies from a trigger
    /// token on).
    pub fn constrain(&mut self, matcher: Matcher) {
        self.constraint = Some(Constraint::new(matcher));
    }

    /// The tokens the constraint admits as the only continuation from here (grammar
    /// fast-forward), recorded as accepted; none without a constraint.
    pub fn forced(&mut self) -> Vec<LlamaToken> {
        let Some(constraint) = self.constraint.as_mut() else {
            return Vec::new();
        };
        if constraint.matcher.is_stopped() {
            // Complete: asking a stopped matcher anything puts it in an error state.
            return Vec::new();
        }
        constraint.mask = None;
        let forced: Vec<LlamaToken> = constraint
            .matcher
            .consume_ff_tokens()
            .into_iter()
            .map(|t| LlamaToken(t as i32))
            .collect();
        for &token in &forced {
            self.accept(token);
        }
        forced
    }

    /// Whether the constraint admits nothing more: the answer is complete, and the end of
    /// generation is the only token left to sample.
    pub fn constraint_complete(&self) -> bool {
        self.constraint
            .as_ref()
            .is_some_and(|c| c.matcher.is_stopped() && !c.matcher.is_error())
    }
}

fn constraint_failed(e: impl std::fmt::Display) -> EngineError {
    LlamaError::Sampling(format!("the output constraint failed: {e}")).into()
}

fn fresh_seed() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    // Mix so that close timestamps give unrelated seeds.
    nanos.wrapping_mul(0x9E37_79B9).rotate_left(13)
}

#[cfg(test)]
mod tests;
