//! Sampling settings -> a llama.cpp sampler chain, with an optional constraint (an llguidance
//! [`Matcher`], see [`super::guidance`]). The logit bias and the repetition penalties, which
//! come first, are applied here to the candidates they touch ([`super::penalties`]) instead of by
//! llama.cpp's samplers, which visit the whole vocabulary on every step.
//!
//! The constraint is not applied to every candidate first: masking a 32k vocabulary costs more
//! than sampling. Like llama.cpp's own sampler we sample without it, ask the constraint about the
//! one chosen token, and only when it is refused sample again with the mask applied.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::toktrie::TokenId;
use llguidance::Matcher;

use super::guidance;
use super::model::Model;
use super::penalties::LogitAdjustments;
use crate::engine::{EngineError, SamplingParams};

/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
const PENALTY_LAST_N: usize = 64;

/// The sampler of one sequence.
pub struct TokenSampler {
    /// Bias and penalties, before the chain (`None`: neutral).
    adjustments: Option<LogitAdjustments>,
    chain: LlamaSampler,
    constraint: Option<Matcher>,
    end_of_generation: LlamaToken,
}

impl TokenSampler {
    /// The chain `params` describe, constrained by `constraint` if given (compiled on a prepare
    /// thread: never on the engine thread).
    pub fn new(model: &Model, params: &SamplingParams, constraint: Option<Matcher>) -> Self {
        let llama = model.llama();
        let mut stages = Vec::new();
        // Token ids beyond the vocabulary are left out: the request was checked before it was
        // known which model answers it.
        let biases: Vec<(LlamaToken, f32)> = params
            .logit_bias
            .iter()
            .filter(|(token, _)| (0..llama.n_vocab()).contains(token))
            .map(|&(token, bias)| (LlamaToken(token), bias))
            .collect();
        let adjustments = LogitAdjustments::new(
            biases,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
            PENALTY_LAST_N,
        );
        if params.temperature <= 0.0 {
            stages.push(LlamaSampler::greedy());
        } else {
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
            constraint,
            end_of_generation: llama.vocab().eos(),
        }
    }

    /// Picks the next token from the logits at batch index `idx` and records it in the
    /// samplers' state (penalty history, position in the constraint).
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> Result<LlamaToken, EngineError> {
        if self.constraint.is_none() && self.adjustments.is_none() {
            // `sample` applies the chain and accepts the token in one call.
            return Ok(self.chain.sample(ctx, idx));
        }
        if self.constraint.as_ref().is_some_and(Matcher::is_stopped) {
            // Complete (the last token finished it): the end of generation is all that is left.
            return Ok(self.end_of_generation);
        }
        let mut candidates = self.candidates(ctx, idx);
        candidates.apply_sampler(&mut self.chain);
        let mut token = candidates
            .selected_token()
            .ok_or(EngineError::NoTokenSampled)?;
        let Some(matcher) = self.constraint.as_mut() else {
            self.accept(token);
            return Ok(token);
        };
        if !guidance::allows(matcher, token) {
            let mask = matcher.compute_mask().map_err(constraint_failed)?;
            let mut candidates = ctx.token_data_array_ith(idx);
            if let Some(adjustments) = &self.adjustments {
                adjustments.apply(&mut candidates);
            }
            for candidate in candidates.data.iter_mut() {
                if !mask.is_allowed(candidate.id().0 as TokenId) {
                    candidate.set_logit(f32::NEG_INFINITY);
                }
            }
            candidates.apply_sampler(&mut self.chain);
            token = candidates
                .selected_token()
                .ok_or(EngineError::NoTokenSampled)?;
        }
        matcher
            .consume_token(token.0 as TokenId)
            .map_err(constraint_failed)?;
        self.accept(token);
        Ok(token)
    }

    /// The candidates at batch index `idx`, biased and penalized.
    fn candidates(&self, ctx: &LlamaContext<'_>, idx: i32) -> LlamaTokenDataArray {
        let mut candidates = ctx.token_data_array_ith(idx);
        if let Some(adjustments) = &self.adjustments {
            adjustments.apply(&mut candidates);
        }
        candidates
    }

    /// Records `token` in the samplers' state (the chain's, the penalty window).
    fn accept(&mut self, token: LlamaToken) {
        self.chain.accept(token);
        if let Some(adjustments) = self.adjustments.as_mut() {
            adjustments.accept(token);
        }
    }

    /// Constrains the rest of the answer with `matcher` (a grammar that applies from a trigger
    /// token on).
    pub fn constrain(&mut self, matcher: Matcher) {
        self.constraint = Some(matcher);
    }

    /// The tokens the constraint admits as the only continuation from here (grammar
    /// fast-forward), recorded as accepted; none without a constraint.
    pub fn forced(&mut self) -> Vec<LlamaToken> {
        let Some(matcher) = self.constraint.as_mut() else {
            return Vec::new();
        };
        if matcher.is_stopped() {
            // Complete: asking a stopped matcher anything puts it in an error state.
            return Vec::new();
        }
        let forced: Vec<LlamaToken> = matcher
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
            .is_some_and(|m| m.is_stopped() && !m.is_error())
    }
}

fn constraint_failed(e: impl std::fmt::Display) -> EngineError {
    EngineError::Sampling(format!("the output constraint failed: {e}"))
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
