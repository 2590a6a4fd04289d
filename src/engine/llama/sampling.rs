//! Sampling settings -> a llama.cpp sampler chain, with an optional grammar constraint.
//!
//! The grammar is not placed first in the chain: checking every candidate of a 32k vocabulary
//! against a grammar costs milliseconds per token. Like llama.cpp's own sampler we sample without
//! it, ask the grammar about the one chosen token, and only when it is rejected sample again with
//! the grammar applied to every candidate.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use super::model::Model;
use crate::engine::{EngineError, SamplingParams};

/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// llama.cpp could not compile a grammar (its message).
#[derive(Debug, thiserror::Error)]
#[error("the grammar does not compile: {0}")]
pub struct GrammarRejected(pub String);

/// The sampler of one sequence.
pub struct TokenSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl TokenSampler {
    /// The chain `params` describe, constrained by `grammar` (GBNF, root rule `root`) if given.
    /// Compiling a grammar takes milliseconds to seconds: never call this on the engine thread.
    pub fn new(
        model: &Model,
        params: &SamplingParams,
        grammar: Option<&str>,
    ) -> Result<Self, GrammarRejected> {
        let llama = model.llama();
        let mut stages = vec![LlamaSampler::penalties(
            llama.n_vocab(),
            PENALTY_LAST_N,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        )];
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
        let grammar = grammar
            .map(|g| {
                LlamaSampler::grammar(llama, g, "root").map_err(|e| GrammarRejected(e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            chain: LlamaSampler::chain_simple(stages),
            grammar,
        })
    }

    /// Picks the next token from the logits at batch index `idx` and records it in the
    /// samplers' state (penalty history, grammar position).
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> Result<LlamaToken, EngineError> {
        let Some(grammar) = self.grammar.as_mut() else {
            // `sample` applies the chain and accepts the token in one call.
            return Ok(self.chain.sample(ctx, idx));
        };
        let mut candidates = ctx.token_data_array_ith(idx);
        candidates.apply_sampler(&mut self.chain);
        let mut token = candidates
            .selected_token()
            .ok_or(EngineError::NoTokenSampled)?;
        if !grammar_allows(grammar, token) {
            let mut candidates = ctx.token_data_array_ith(idx);
            candidates.apply_sampler(grammar);
            candidates.apply_sampler(&mut self.chain);
            token = candidates
                .selected_token()
                .ok_or(EngineError::NoTokenSampled)?;
        }
        grammar
            .try_accept(token)
            .map_err(|e| EngineError::Sampling(format!("the grammar rejected a token: {e}")))?;
        self.chain.accept(token);
        Ok(token)
    }
}

fn grammar_allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut single = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
    single.apply_sampler(grammar);
    single.data[0].logit().is_finite()
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
