//! Request parameters -> a llama.cpp sampler chain, with an optional grammar constraint.
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
use super::EngineError;

/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// Sampling settings of one request, already validated by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    /// 0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables it.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// `None` picks a fresh seed.
    pub seed: Option<u32>,
    /// A GBNF grammar (root rule `root`) the output must match.
    pub grammar: Option<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            grammar: None,
        }
    }
}

/// The sampler of one sequence.
pub struct TokenSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl TokenSampler {
    pub fn new(model: &Model, params: &SamplingParams) -> Result<Self, EngineError> {
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
        let grammar = params
            .grammar
            .as_deref()
            .map(|g| {
                LlamaSampler::grammar(llama, g, "root").map_err(|e| {
                    EngineError::Sampling(format!("the grammar does not compile: {e}"))
                })
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
