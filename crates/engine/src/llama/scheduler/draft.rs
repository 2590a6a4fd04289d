//! Drafts for self-speculation: where the last few tokens occurred before in the sequence's own
//! prompt and answer, the tokens that followed them then are proposed as the next ones. An edit
//! repeats its prompt, a summary or a tool call quotes it, a follow-up quotes the previous turn,
//! an answer repeats its own structure: there the draft is right, and checking it costs one
//! decode step for several tokens, since a CPU step is bound by reading the weights, not by the
//! number of positions. The scheduler decodes the drafts with the step's token and keeps those
//! the sampler itself chooses ([`super::sequence`]).
//!
//! A draft depends on nothing but the sequence's own tokens and how many sequences share its
//! steps, never on timing or on earlier requests: llama.cpp's logits for a position computed
//! among several differ from a position alone in the last bits, which can move a sampled token,
//! so a request must meet the same drafts each time for a seed to give the same answer.

use std::collections::HashMap;

use llama_cpp_2::token::LlamaToken;

/// Tokens matched to find a draft: long enough to be specific, short enough to recur.
const NGRAM: usize = 3;
/// Most tokens drafted at once.
const MAX_DRAFT: usize = 64;
/// What a sequence is believed to keep before its first draft: as if 3 draft tokens had been
/// kept for 1 refused (a draft of 3 on a small model on a CPU, fewer where several sequences
/// share the step).
const PRIOR_KEPT: f64 = 1.5;
const PRIOR_REFUSED: f64 = 0.5;
/// Weight of the drafts so far against the next one: the estimate follows the last few drafts
/// (a passage copied, then free text).
const DECAY: f64 = 0.8;
/// Weight kept at each step a sequence does not draft because drafts do not pay: it drifts back
/// to the prior and tries a one-token draft again some 20 steps later (a refused token costs its
/// position, 0.4 of a step: under 3% on prose where nothing repeats).
const FORGET: f64 = 0.995;

/// What a position with logits costs against the fixed part of a decode step (reading the
/// weights). Measured on 2 cores: Gemma 3 270M, whose output layer over 262,144 tokens is most of
/// a position, about 0.4; a 7B model with a 32,768-token vocabulary, far less. A constant, not a
/// measurement of this machine: drafts must not depend on timing (see above).
const POSITION_COST: f64 = 0.4;

/// How often a draft token must be kept to be worth checking, with `sequences` sampling in a
/// step: checking it costs a position; keeping it saves its own position in a later step and
/// its share of that step's fixed part.
pub fn threshold(sequences: usize) -> f64 {
    POSITION_COST / (POSITION_COST + 1.0 / sequences.max(1) as f64)
}

/// One sequence's drafter: its tokens so far and where each n-gram of them was last followed.
#[derive(Debug)]
pub struct Drafter {
    history: Vec<LlamaToken>,
    /// Each n-gram of `history` (but the last) and the position of the token after it, latest
    /// occurrence.
    next_after: HashMap<[LlamaToken; NGRAM], usize>,
    /// Positions of `history` whose n-gram ending there is indexed.
    indexed: usize,
    acceptance: Acceptance,
    /// Most tokens the next draft may have, whatever the acceptance: doubled while drafts are
    /// kept whole, twice what was kept after a refusal (a copied passage ends at once, not as
    /// the rate learns it).
    length: usize,
    /// The passage the last draft copied: where it started in `history`, and the length of
    /// `history` then. While the sequence goes on as the passage did, the next draft continues
    /// the same passage, not the latest occurrence of its last few tokens (a passage of
    /// repeated lines, like six functions alike but for a name, has many).
    copied: Option<(usize, usize)>,
    /// Tokens drafted and accepted over the sequence, for its log line and the metrics.
    pub drafted: usize,
    pub accepted: usize,
}

impl Drafter {
    /// A drafter that knows the prompt.
    pub fn new(prompt: &[LlamaToken]) -> Self {
        let mut drafter = Self {
            history: Vec::with_capacity(prompt.len() + 256),
            next_after: HashMap::with_capacity(prompt.len()),
            indexed: 0,
            acceptance: Acceptance::default(),
            length: MAX_DRAFT,
            copied: None,
            drafted: 0,
            accepted: 0,
        };
        drafter.extend(prompt);
        drafter
    }

    /// Tokens of the answer, as they are chosen.
    pub fn extend(&mut self, tokens: &[LlamaToken]) {
        self.history.extend_from_slice(tokens);
    }

    /// Up to `max` tokens that may come next, as many as are worth checking where a draft
    /// token must be kept at least `threshold` of the time to pay for its position
    /// ([`threshold`]), or none: what followed the last few tokens where they occurred before in
    /// the sequence's own text, looked up again after the draft's own last tokens until it is
    /// long enough.
    pub fn draft(&mut self, max: usize, threshold: f64) -> Vec<LlamaToken> {
        let worth = self.acceptance.worth(threshold);
        if worth == 0 {
            self.acceptance.forget();
        }
        let max = max.min(worth).min(self.length);
        if max == 0 || self.history.len() <= NGRAM {
            return Vec::new();
        }
        // Index every n-gram that has a token after it: all but the one ending the history.
        let end = self.history.len();
        while self.indexed + NGRAM < end {
            let start = self.indexed;
            let key: [LlamaToken; NGRAM] = self.history[start..start + NGRAM]
                .try_into()
                .expect("NGRAM tokens");
            self.next_after.insert(key, start + NGRAM);
            self.indexed += 1;
        }
        let mut draft = Vec::new();
        // Where in the history the draft's first tokens come from.
        let mut source = None;
        if let Some(next) = self.passage_continues() {
            draft.extend_from_slice(&self.history[next..(next + max).min(end)]);
            source = Some(next);
        }
        while draft.len() < max {
            let key = last_ngram(&self.history, &draft);
            let want = max - draft.len();
            let Some(&next) = self.next_after.get(&key) else {
                break;
            };
            source = source.or(Some(next));
            draft.extend_from_slice(&self.history[next..(next + want).min(end)]);
        }
        self.copied = source.map(|from| (from, end));
        draft
    }

    /// Where the passage the last draft copied goes on, if the sequence has followed it since.
    fn passage_continues(&self) -> Option<usize> {
        let (from, at) = self.copied?;
        let followed = &self.history[at..];
        let next = from + followed.len();
        (next < self.history.len() && self.history[from..next] == *followed).then_some(next)
    }

    /// How a draft of `drafted` tokens fared: `accepted` of them kept.
    pub fn report(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.drafted += drafted;
        self.accepted += accepted;
        self.acceptance.record(drafted, accepted);
        self.length = if accepted == drafted {
            (self.length * 2).min(MAX_DRAFT)
        } else {
            (accepted * 2).max(1)
        };
    }
}

/// How often a sequence's draft tokens are kept: a draft token is kept with probability `p` if
/// the one before it was (kept tokens are the successes, a draft ending on a refused token the
/// failure), estimated over its last drafts.
#[derive(Debug, Default)]
struct Acceptance {
    kept: f64,
    refused: f64,
}

impl Acceptance {
    fn rate(&self) -> f64 {
        (self.kept + PRIOR_KEPT) / (self.kept + self.refused + PRIOR_KEPT + PRIOR_REFUSED)
    }

    /// How many draft tokens are worth checking: the n-th is kept with probability p^n, and
    /// pays where that is above `threshold`.
    fn worth(&self, threshold: f64) -> usize {
        let p = self.rate();
        let threshold = threshold.clamp(1e-3, 1.0 - 1e-3);
        if p <= threshold {
            return 0;
        }
        let n = threshold.ln() / p.ln();
        (n.floor() as usize).min(MAX_DRAFT)
    }

    fn record(&mut self, drafted: usize, accepted: usize) {
        self.kept = self.kept * DECAY + accepted as f64;
        self.refused = self.refused * DECAY + f64::from(u8::from(accepted < drafted));
    }

    fn forget(&mut self) {
        self.kept *= FORGET;
        self.refused *= FORGET;
    }
}

/// The last [`NGRAM`] tokens of `history` followed by `draft`.
fn last_ngram(history: &[LlamaToken], draft: &[LlamaToken]) -> [LlamaToken; NGRAM] {
    let from_draft = draft.len().min(NGRAM);
    let mut key = [LlamaToken(0); NGRAM];
    let from_history = NGRAM - from_draft;
    key[..from_history].copy_from_slice(&history[history.len() - from_history..]);
    key[from_history..].copy_from_slice(&draft[draft.len() - from_draft..]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A threshold every draft the tests ask for passes.
    const EASY: f64 = 0.01;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    #[test]
    fn a_repeated_passage_is_drafted_from_its_last_occurrence() {
        let mut drafter = Drafter::new(&tokens(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        assert!(drafter.draft(8, EASY).is_empty(), "nothing repeats yet");
        drafter.extend(&tokens(&[2, 3, 4]));
        // What followed 2 3 4, up to the present: the repetition goes on.
        assert_eq!(drafter.draft(8, EASY), tokens(&[5, 6, 7, 8, 9, 2, 3, 4]));
        assert_eq!(drafter.draft(2, EASY), tokens(&[5, 6]));
        drafter.extend(&tokens(&[5, 6, 7, 1, 2, 3]));
        // The latest occurrence of 1 2 3 wins: what followed it most recently.
        assert_eq!(drafter.draft(3, EASY), tokens(&[4, 5, 6]));
    }

    #[test]
    fn a_copied_passage_is_followed_where_its_lines_repeat() {
        // Two lines alike but for their last token: 1 2 3 4 5 10 / 1 2 3 4 5 20.
        let mut drafter = Drafter::new(&tokens(&[1, 2, 3, 4, 5, 10, 1, 2, 3, 4, 5, 20, 9]));
        // Copying the first line: its start matches the second line latest, whose text is the
        // same up to the last token...
        drafter.extend(&tokens(&[1, 2, 3]));
        assert_eq!(drafter.draft(3, EASY), tokens(&[4, 5, 20]));
        // ...which the model refuses for the first line's 10: the lookup finds the first line.
        drafter.report(3, 2);
        drafter.extend(&tokens(&[4, 5, 10]));
        assert_eq!(drafter.draft(2, EASY), tokens(&[1, 2]));
        // Followed, the same passage goes on (the second line), though 1 2 3 last occurred in
        // the answer, followed by 4 5 10.
        drafter.report(2, 2);
        drafter.extend(&tokens(&[1, 2, 3]));
        assert_eq!(drafter.draft(3, EASY), tokens(&[4, 5, 20]));
    }

    #[test]
    fn drafts_grow_while_they_are_kept_and_shrink_when_refused() {
        let passage: Vec<i32> = (100..400).collect();
        let mut drafter = Drafter::new(&tokens(&passage));
        drafter.extend(&tokens(&passage[..NGRAM]));
        let threshold = threshold(1);
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let draft = drafter.draft(usize::MAX, threshold);
            lengths.push(draft.len());
            drafter.report(draft.len(), draft.len());
            drafter.extend(&draft);
        }
        assert_eq!(lengths, [4, 14, 47, 64, 64, 64]);
        // Refused early: short drafts again, at once.
        drafter.report(64, 2);
        assert_eq!(drafter.draft(usize::MAX, threshold).len(), 4);
    }

    #[test]
    fn the_more_sequences_share_a_step_the_surer_a_draft_must_be() {
        let mut acceptance = Acceptance::default();
        acceptance.record(10, 9);
        let alone = acceptance.worth(threshold(1));
        let eight = acceptance.worth(threshold(8));
        assert!(eight >= 1 && eight * 3 < alone, "{eight} / {alone}");
    }

    #[test]
    fn a_sequence_whose_drafts_fail_stops_drafting_then_tries_again() {
        let mut drafter = Drafter::new(&tokens(&[1, 2, 3, 4, 1, 2, 3]));
        let pause = |drafter: &mut Drafter| {
            let mut steps = 0;
            loop {
                let draft = drafter.draft(8, threshold(1));
                if !draft.is_empty() {
                    drafter.report(draft.len(), 0);
                    return (steps, draft.len());
                }
                steps += 1;
            }
        };
        let mut refused = 0;
        while pause(&mut drafter).0 == 0 {
            refused += 1;
        }
        assert!(
            (3..8).contains(&refused),
            "{refused} drafts refused before a pause"
        );
        // In the long run: a one-token draft every 20 steps or more (a refused token costs 0.4
        // of a step: 2%).
        for _ in 0..3 {
            let (steps, length) = pause(&mut drafter);
            assert!(
                (20..64).contains(&steps) && length == 1,
                "{steps} steps, then {length}"
            );
        }
    }
}
