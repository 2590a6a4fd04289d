//! llama.cpp's logit bias and repetition penalties, applied to the few candidates they touch.
//!
//! llama.cpp's penalties sampler looks every candidate up in its history map on every step: on
//! Gemma's 262,144-token vocabulary that is about a millisecond of a 19 ms step on 2 cores (the
//! Leafresh endpoints sample with `repeat_penalty` 1.1), time the hardware waits. The candidates
//! of a fresh step are the whole vocabulary in id order, so the token a penalty or a bias is for
//! sits at its own index: the same arithmetic on only those entries gives the same logits.

use std::collections::{HashMap, VecDeque};

use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// The logit changes that come before the sampler chain: a fixed bias per token, then the
/// penalties of the tokens in the last `window`.
pub struct LogitAdjustments {
    biases: Vec<(LlamaToken, f32)>,
    repeat: f32,
    frequency: f32,
    presence: f32,
    window: usize,
    last: VecDeque<LlamaToken>,
    counts: HashMap<LlamaToken, u32>,
}

impl LogitAdjustments {
    /// `None` when they change nothing (no bias, neutral penalties): the chain alone samples.
    pub fn new(
        biases: Vec<(LlamaToken, f32)>,
        repeat: f32,
        frequency: f32,
        presence: f32,
        window: usize,
    ) -> Option<Self> {
        let penalizes = window > 0 && (repeat != 1.0 || frequency != 0.0 || presence != 0.0);
        (penalizes || !biases.is_empty()).then(|| Self {
            biases,
            repeat,
            frequency,
            presence,
            window: if penalizes { window } else { 0 },
            last: VecDeque::with_capacity(window),
            counts: HashMap::new(),
        })
    }

    /// Applies the biases, then the penalties, as llama.cpp's `logit_bias` and `penalties`
    /// samplers do, to the candidates of the tokens they touch.
    pub fn apply(&self, candidates: &mut LlamaTokenDataArray) {
        for token in self.touched() {
            if let Some(candidate) = find(candidates, token) {
                candidate.set_logit(self.adjusted(token, candidate.logit()));
            }
        }
        candidates.sorted = false;
    }

    /// The tokens whose logit changes: biased, or in the penalty window. Sorted by id.
    pub fn touched(&self) -> Vec<LlamaToken> {
        let mut tokens: Vec<LlamaToken> = self
            .biases
            .iter()
            .map(|&(token, _)| token)
            .chain(self.counts.keys().copied())
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }

    /// `token`'s logit after the bias, then the penalties (a positive logit is divided by the
    /// repeat penalty, a negative one multiplied).
    pub fn adjusted(&self, token: LlamaToken, logit: f32) -> f32 {
        let mut logit = self
            .biases
            .iter()
            .filter(|&&(biased, _)| biased == token)
            .fold(logit, |logit, &(_, bias)| logit + bias);
        if let Some(&count) = self.counts.get(&token) {
            if logit <= 0.0 {
                logit *= self.repeat;
            } else {
                logit /= self.repeat;
            }
            logit -= count as f32 * self.frequency + self.presence;
        }
        logit
    }

    /// Records a token of the answer (sampled or forced) in the penalty window.
    pub fn accept(&mut self, token: LlamaToken) {
        if self.window == 0 {
            return;
        }
        if self.last.len() >= self.window {
            if let Some(old) = self.last.pop_front() {
                if let Some(count) = self.counts.get_mut(&old) {
                    *count -= 1;
                    if *count == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        *self.counts.entry(token).or_insert(0) += 1;
        self.last.push_back(token);
    }
}

/// The candidate for `token`: at its own index in a fresh, id-ordered array, else searched.
fn find(
    candidates: &mut LlamaTokenDataArray,
    token: LlamaToken,
) -> Option<&mut llama_cpp_2::token::data::LlamaTokenData> {
    let index = usize::try_from(token.0).ok()?;
    if candidates.data.get(index).is_some_and(|c| c.id() == token) {
        return candidates.data.get_mut(index);
    }
    candidates.data.iter_mut().find(|c| c.id() == token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llama_cpp_2::sampling::LlamaSampler;
    use llama_cpp_2::token::data::LlamaTokenData;
    use llama_cpp_2::token::logit_bias::LlamaLogitBias;

    fn candidates() -> LlamaTokenDataArray {
        let logits = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0);
        LlamaTokenDataArray::from_iter(
            logits
                .enumerate()
                .map(|(i, l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
            false,
        )
    }

    #[test]
    fn the_logits_are_llama_cpps_for_every_setting_and_history() {
        let history: Vec<LlamaToken> = [3, 5, 3, 60, 7, 3, 9, 5, 11, 12, 13, 3]
            .map(LlamaToken)
            .to_vec();
        let biases = vec![(LlamaToken(3), 2.5), (LlamaToken(20), -100.0)];
        for (repeat, frequency, presence, window) in [
            (1.1, 0.0, 0.0, 64),
            (1.3, 0.2, 0.5, 4),
            (0.9, 0.0, 0.3, 1),
            (1.0, 0.0, 0.0, 64),
        ] {
            let mut ours =
                LogitAdjustments::new(biases.clone(), repeat, frequency, presence, window)
                    .expect("a bias is set");
            let lb: Vec<LlamaLogitBias> = biases
                .iter()
                .map(|&(t, b)| LlamaLogitBias::new(t, b))
                .collect();
            let mut theirs = LlamaSampler::chain_simple([
                LlamaSampler::logit_bias(64, &lb),
                LlamaSampler::penalties(64, window as i32, repeat, frequency, presence),
            ]);
            for (step, &token) in history.iter().enumerate() {
                let mut expected = candidates();
                expected.apply_sampler(&mut theirs);
                let mut got = candidates();
                ours.apply(&mut got);
                let logits = |a: &LlamaTokenDataArray| -> Vec<f32> {
                    a.data.iter().map(LlamaTokenData::logit).collect()
                };
                assert_eq!(logits(&got), logits(&expected), "step {step}, {repeat}");
                theirs.accept(token);
                ours.accept(token);
            }
        }
    }

    #[test]
    fn neutral_settings_change_nothing() {
        assert!(LogitAdjustments::new(Vec::new(), 1.0, 0.0, 0.0, 64).is_none());
        assert!(LogitAdjustments::new(Vec::new(), 1.1, 0.0, 0.0, 0).is_none());
    }
}
