//! The candidates a step samples from, read straight from the logits.
//!
//! llama.cpp's samplers take an array of every token (262,144 on Gemma: 3 MB written per step),
//! and its top-k stage then partially sorts all of it. When the chain begins by keeping only the
//! k most likely tokens (top-k; greedy keeps one), one pass over the logits finds them, and the
//! chain runs on those k: the same candidates in the same order, so the same token for the same
//! seed. The logit bias and penalties ([`LogitAdjustments`]) and the constraint's mask are applied
//! on the way.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::toktrie::{SimpleVob, TokenId};

use crate::llama::penalties::LogitAdjustments;

/// Every token, adjusted and masked (a masked token gets minus infinity, as llama.cpp's grammar
/// sampler does): for a chain that needs the whole distribution (top-p without top-k).
pub fn all(
    logits: &[f32],
    adjustments: Option<&LogitAdjustments>,
    mask: Option<&SimpleVob>,
) -> LlamaTokenDataArray {
    let mut candidates = LlamaTokenDataArray::from_iter(
        logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| LlamaTokenData::new(LlamaToken(id as i32), logit, 0.0)),
        false,
    );
    if let Some(adjustments) = adjustments {
        adjustments.apply(&mut candidates);
    }
    if let Some(mask) = mask {
        for candidate in candidates.data.iter_mut() {
            if !mask.is_allowed(candidate.id().0 as TokenId) {
                candidate.set_logit(f32::NEG_INFINITY);
            }
        }
    }
    candidates
}

/// The `k` most likely tokens the mask allows, adjusted, most likely first (ties: lower id first,
/// as a stable sort of the id-ordered array leaves them).
pub fn top(
    logits: &[f32],
    adjustments: Option<&LogitAdjustments>,
    mask: Option<&SimpleVob>,
    k: usize,
) -> LlamaTokenDataArray {
    let allowed = |id: usize| mask.is_none_or(|m| m.is_allowed(id as TokenId));
    let touched = adjustments
        .map(LogitAdjustments::touched)
        .unwrap_or_default();
    // The k best untouched tokens are among the k + |touched| best by raw logit.
    let room = k + touched.len();
    let mut best: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(room + 1);
    // The lowest logit kept once `room` are kept: most blocks of the vocabulary hold nothing
    // above it and are passed over after one vectorized look.
    let mut floor = f32::NEG_INFINITY;
    for (block, logits) in logits.chunks(BLOCK).enumerate() {
        if best.len() == room && peak(logits) <= floor {
            continue;
        }
        for (offset, &logit) in logits.iter().enumerate() {
            let id = block * BLOCK + offset;
            // `>` and not `>=`: a later token with the floor's logit ranks below it (higher id).
            if (logit > floor || best.len() < room) && allowed(id) {
                best.push(Reverse(Ranked { logit, id }));
                if best.len() > room {
                    best.pop();
                }
                if best.len() == room {
                    floor = best.peek().map_or(floor, |r| r.0.logit);
                }
            }
        }
    }
    let mut ranked: Vec<Ranked> = best
        .into_iter()
        .map(|r| r.0)
        .filter(|r| touched.binary_search(&LlamaToken(r.id as i32)).is_err())
        .collect();
    if let Some(adjustments) = adjustments {
        ranked.extend(touched.iter().filter_map(|&token| {
            let id = usize::try_from(token.0).ok()?;
            let raw = *logits.get(id)?;
            allowed(id).then(|| Ranked {
                logit: adjustments.adjusted(token, raw),
                id,
            })
        }));
    }
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.truncate(k);
    LlamaTokenDataArray::new(
        ranked
            .into_iter()
            .map(|r| LlamaTokenData::new(LlamaToken(r.id as i32), r.logit, 0.0))
            .collect(),
        true,
    )
}

/// Logits looked at together: a block whose peak is under the floor is skipped.
const BLOCK: usize = 64;

/// The largest of `logits` (NaN counts as nothing), in eight lanes the compiler vectorizes.
fn peak(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut rows = logits.chunks_exact(8);
    for row in &mut rows {
        for (lane, &logit) in lanes.iter_mut().zip(row) {
            *lane = if logit > *lane { logit } else { *lane };
        }
    }
    rows.remainder().iter().chain(&lanes).fold(
        f32::NEG_INFINITY,
        |peak, &l| if l > peak { l } else { peak },
    )
}

/// A token ranked by logit, the lower id first among equal logits.
#[derive(Clone, Copy)]
struct Ranked {
    logit: f32,
    id: usize,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.logit
            .total_cmp(&other.logit)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}
