//! How likely the model found a generated token: the log of its probability in the model's
//! distribution at that place (log-softmax of the raw logits, before the sampling settings and
//! any constraint, as vLLM and OpenAI report it), and the most likely tokens there. Computed only
//! for requests that ask (`logprobs`): a pass over the vocabulary for the normaliser and one for
//! the top tokens, about 1.3 ms a token for Gemma's 262,144 (BENCHMARKS.md, issue 32).

use llama_cpp_2::token::LlamaToken;

use crate::tokenizer::Tokenizer;
use crate::{TokenLogprob, TopLogprob};

/// `token`'s log probability under `logits`, with the `top` most likely tokens (most likely
/// first).
pub fn token_logprob(
    logits: &[f32],
    token: LlamaToken,
    top: usize,
    tokenizer: &Tokenizer,
) -> TokenLogprob {
    let normaliser = log_sum_exp(logits);
    let logprob = |id: usize| logits.get(id).map_or(f32::NEG_INFINITY, |l| l - normaliser);
    let bytes = |id: i32| {
        let mut bytes = Vec::new();
        tokenizer.token_bytes(LlamaToken(id), &mut bytes);
        bytes
    };
    TokenLogprob {
        token: token.0,
        bytes: bytes(token.0),
        logprob: logprob(token.0 as usize),
        top: most_likely(logits, top)
            .into_iter()
            .map(|id| TopLogprob {
                token: id as i32,
                bytes: bytes(id as i32),
                logprob: logprob(id),
            })
            .collect(),
    }
}

/// `log(sum(exp(logits)))`, computed stably around the largest logit.
fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    max + sum.ln() as f32
}

/// The ids of the `n` largest logits, largest first (ties: the lower id first).
fn most_likely(logits: &[f32], n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    // A small sorted buffer: n is at most 20, the vocabulary is large.
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(n + 1);
    for (id, &logit) in logits.iter().enumerate() {
        if best.len() == n && logit <= best[n - 1].0 {
            continue;
        }
        let at = best.partition_point(|&(l, _)| l >= logit);
        best.insert(at, (logit, id));
        best.truncate(n);
    }
    best.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_the_softmax_normaliser() {
        let logits = [1.0f32, 2.0, 3.0, -1000.0];
        let direct: f32 = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((log_sum_exp(&logits) - direct).abs() < 1e-5);
        // Large logits do not overflow.
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        let probabilities: f32 = logits
            .iter()
            .map(|l| (l - log_sum_exp(&logits)).exp())
            .sum();
        assert!((probabilities - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_most_likely_are_the_largest_logits_in_order() {
        let logits = [0.5f32, 3.0, -2.0, 3.0, 7.0, 1.0];
        assert_eq!(most_likely(&logits, 3), [4, 1, 3]);
        assert_eq!(most_likely(&logits, 0), Vec::<usize>::new());
        assert_eq!(most_likely(&logits, 10).len(), logits.len());
    }
}
