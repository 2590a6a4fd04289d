//! The tokens of recent answers, so that a conversation's next prompt begins with exactly the
//! cells the previous turn left in its slot: the previous prompt's tokens, then the answer's tokens
//! as they were generated.
//!
//! Re-rendering a conversation does not give those tokens by itself: the template writes the
//! answer after its own whitespace (Mistral's `[/INST] answer`), the answer's text tokenizes
//! differently from how it was sampled, and the text before it merges into tokens differently
//! when more text follows. So prompts are built by construction instead (see
//! [`Replays::splices`]): where a rendered conversation begins with the exact text of an earlier
//! prompt (checked by a keyed hash and its length) and goes on with the answer generated after
//! it, the earlier prompt's text is tokenized on its own, as it was then, and the answer's text
//! is replaced by its generated tokens. The same rule applied to every earlier answer makes turn
//! N+1's prompt start with turn N's prompt and answer, token for token.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::Mutex;

use llama_cpp_2::token::LlamaToken;

/// Answers remembered at most; the oldest are forgotten first.
const CAPACITY: usize = 512;
/// Tokens remembered at most over all answers (2 MiB of token ids).
const TOKEN_CAPACITY: usize = 1 << 19;
/// Generations remembered for one answer text: short answers ("네") recur across conversations.
const PER_TEXT: usize = 8;

/// Which prompt an answer was generated after: the length of its rendered text and a keyed hash
/// of it (SipHash with this process's random key, so no client can make two texts collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptKey {
    bytes: usize,
    hash: u64,
}

/// Where a rendered prompt takes generated tokens in place of text: the bytes `replace` (the
/// template's whitespace before an answer, and the answer) become `tokens`; the text before
/// `replace.start` is the earlier prompt, tokenized on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub replace: Range<usize>,
    pub tokens: Vec<LlamaToken>,
}

/// Answer text -> the generations that produced it.
#[derive(Debug)]
pub struct Replays {
    keys: RandomState,
    inner: Mutex<Inner>,
}

impl Default for Replays {
    fn default() -> Self {
        Self {
            keys: RandomState::new(),
            inner: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_text: HashMap<String, VecDeque<Generated>>,
    /// serial -> text of every generation held, oldest first, for eviction: a generation leaves
    /// both maps together, so neither outgrows [`CAPACITY`].
    order: BTreeMap<u64, String>,
    /// Tokens held over all generations.
    tokens: usize,
    serial: u64,
}

#[derive(Debug)]
struct Generated {
    serial: u64,
    /// The prompt it followed; `None` when that prompt was not a rendered chat (tool calling).
    after: Option<PromptKey>,
    tokens: Vec<LlamaToken>,
}

impl Replays {
    /// The key of a rendered prompt, to remember with its answer.
    pub fn key(&self, rendered: &str) -> PromptKey {
        let mut hasher = self.keys.build_hasher();
        hasher.write(rendered.as_bytes());
        PromptKey {
            bytes: rendered.len(),
            hash: hasher.finish(),
        }
    }

    /// Remembers that `tokens` were generated as `text` (exactly what was sent) after the prompt
    /// `after`. It is found by its text without surrounding whitespace, which chat templates
    /// trim from answers.
    pub fn remember(&self, text: &str, after: Option<PromptKey>, tokens: Vec<LlamaToken>) {
        let text = text.trim();
        if text.is_empty() || tokens.is_empty() || tokens.len() > TOKEN_CAPACITY {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.serial += 1;
        let serial = inner.serial;
        inner.tokens += tokens.len();
        inner.order.insert(serial, text.to_owned());
        let same_text = inner.by_text.entry(text.to_owned()).or_default();
        same_text.push_back(Generated {
            serial,
            after,
            tokens,
        });
        let oldest = (same_text.len() > PER_TEXT).then(|| same_text[0].serial);
        if let Some(oldest) = oldest {
            inner.forget(text, oldest);
        }
        while inner.order.len() > CAPACITY || inner.tokens > TOKEN_CAPACITY {
            let Some((serial, text)) = inner.order.pop_first() else {
                break;
            };
            inner.forget(&text, serial);
        }
    }

    /// The tokens most recently generated as `text`, whatever prompt they followed (for prompts
    /// laid out without a chat template, where each answer is a piece of its own).
    pub fn tokens_of(&self, text: &str) -> Option<Vec<LlamaToken>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_text.get(text)?.back().map(|g| g.tokens.clone())
    }

    /// The splices that give `rendered` its generated tokens: for each of `answers` (byte ranges
    /// of assistant contents, in order) an answer generated after a prompt whose text `rendered`
    /// begins with, followed by nothing but whitespace up to the answer. Linear in the length of
    /// `rendered`: one hasher walks it once, whatever the number of answers.
    pub fn splices(&self, rendered: &str, answers: &[Range<usize>]) -> Vec<Splice> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // (where its prompt ends, which answer, the generation)
        let mut candidates: Vec<(usize, usize, &Generated)> = Vec::new();
        for (index, range) in answers.iter().enumerate() {
            let Some(generations) = inner.by_text.get(rendered[range.clone()].trim()) else {
                continue;
            };
            for generated in generations.iter().rev() {
                let Some(after) = generated.after else {
                    continue;
                };
                let gap = rendered.get(after.bytes..range.start);
                if gap.is_some_and(|gap| gap.chars().all(char::is_whitespace)) {
                    candidates.push((after.bytes, index, generated));
                }
            }
        }
        candidates.sort_by_key(|&(bytes, index, _)| (bytes, index));
        let mut found: Vec<Option<&Generated>> = vec![None; answers.len()];
        let mut hasher = self.keys.build_hasher();
        let mut hashed = 0;
        for (bytes, index, generated) in candidates {
            hasher.write(&rendered.as_bytes()[hashed..bytes]);
            hashed = bytes;
            if found[index].is_none() && generated.after.map(|k| k.hash) == Some(hasher.finish()) {
                found[index] = Some(generated);
            }
        }
        let mut splices = Vec::new();
        let mut end = 0;
        for (range, generated) in answers.iter().zip(found) {
            let Some(generated) = generated else {
                continue;
            };
            let start = generated.after.map_or(range.start, |k| k.bytes);
            if start < end {
                continue;
            }
            end = range.end;
            splices.push(Splice {
                replace: start..range.end,
                tokens: generated.tokens.clone(),
            });
        }
        splices
    }
}

impl Inner {
    fn forget(&mut self, text: &str, serial: u64) {
        self.order.remove(&serial);
        let Some(same_text) = self.by_text.get_mut(text) else {
            return;
        };
        if let Some(at) = same_text.iter().position(|g| g.serial == serial) {
            if let Some(generated) = same_text.remove(at) {
                self.tokens -= generated.tokens.len();
            }
        }
        if same_text.is_empty() {
            self.by_text.remove(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&id| LlamaToken::new(id)).collect()
    }

    #[test]
    fn an_answer_after_its_own_prompt_is_spliced_with_the_template_whitespace_before_it() {
        let replays = Replays::default();
        let prompt = "<u>질문</u><a>";
        replays.remember(" 답변 ", Some(replays.key(prompt)), tokens(&[7, 8]));
        let rendered = "<u>질문</u><a> 답변</a><u>또</u><a>";
        let answer = rendered.find("답변").unwrap();
        let splices = replays.splices(
            rendered,
            std::slice::from_ref(&(answer..answer + "답변".len())),
        );
        assert_eq!(
            splices,
            vec![Splice {
                replace: prompt.len()..answer + "답변".len(),
                tokens: tokens(&[7, 8])
            }]
        );
    }

    #[test]
    fn the_same_answer_after_another_prompt_is_not_spliced() {
        let replays = Replays::default();
        replays.remember(
            "답변",
            Some(replays.key("<u>다른 질문</u><a>")),
            tokens(&[7]),
        );
        let rendered = "<u>질문</u><a>답변</a>";
        let at = rendered.find("답변").unwrap();
        assert!(replays
            .splices(rendered, std::slice::from_ref(&(at..at + 6)))
            .is_empty());
        // Nor when something other than whitespace stands between the prompt and the answer.
        replays.remember("답변", Some(replays.key("<u>질문</u>")), tokens(&[7]));
        assert!(replays
            .splices(rendered, std::slice::from_ref(&(at..at + 6)))
            .is_empty());
    }

    #[test]
    fn every_answer_of_a_conversation_is_spliced_in_order() {
        let replays = Replays::default();
        let first = "[u1]";
        replays.remember("a1", Some(replays.key(first)), tokens(&[1]));
        let second = "[u1] a1[u2]";
        replays.remember("a2", Some(replays.key(second)), tokens(&[2]));
        let rendered = "[u1] a1[u2] a2[u3]";
        let splices = replays.splices(rendered, &[5..7, 12..14]);
        let replaced: Vec<_> = splices.iter().map(|s| s.replace.clone()).collect();
        assert_eq!(replaced, vec![4..7, 11..14]);
    }

    #[test]
    fn the_oldest_answers_are_forgotten_first() {
        let replays = Replays::default();
        replays.remember("{\"a\": 1}", None, tokens(&[5, 6]));
        assert_eq!(replays.tokens_of("{\"a\": 1}"), Some(tokens(&[5, 6])));
        assert_eq!(replays.tokens_of(" {\"a\": 1}"), None);
        replays.remember(" 가 \n", None, tokens(&[9]));
        assert_eq!(replays.tokens_of("가"), Some(tokens(&[9])));
        for i in 0..CAPACITY {
            replays.remember(&format!("answer {i}"), None, tokens(&[1]));
        }
        assert_eq!(
            replays.tokens_of("{\"a\": 1}"),
            None,
            "the oldest went first"
        );
        assert!(replays
            .tokens_of(&format!("answer {}", CAPACITY - 1))
            .is_some());
        let inner = replays.inner.lock().unwrap();
        assert_eq!(inner.tokens, CAPACITY);
    }

    #[test]
    fn one_text_keeps_a_few_generations() {
        let replays = Replays::default();
        for i in 0..(PER_TEXT as i32 + 3) {
            replays.remember("네", None, tokens(&[i]));
        }
        assert_eq!(
            replays.tokens_of("네"),
            Some(tokens(&[PER_TEXT as i32 + 2]))
        );
        let inner = replays.inner.lock().unwrap();
        assert_eq!(inner.by_text["네"].len(), PER_TEXT);
        assert_eq!(inner.tokens, PER_TEXT);
    }

    #[test]
    fn long_answers_are_forgotten_once_their_tokens_pass_the_token_bound() {
        let replays = Replays::default();
        let long = vec![LlamaToken::new(1); TOKEN_CAPACITY / 3 + 1];
        for i in 0..6 {
            replays.remember(&format!("긴 답 {i}"), None, long.clone());
        }
        let inner = replays.inner.lock().unwrap();
        assert!(inner.tokens <= TOKEN_CAPACITY, "{}", inner.tokens);
        assert_eq!(inner.order.len(), 2, "the two newest stay");
        assert!(inner.by_text.contains_key("긴 답 5") && inner.by_text.contains_key("긴 답 4"));
    }

    #[test]
    fn the_same_few_answers_over_and_over_hold_a_bounded_memory() {
        // Greedy requests give the same answers again and again: each text keeps PER_TEXT
        // generations, and nothing else grows with the number of answers.
        let replays = Replays::default();
        for i in 0..20_000 {
            replays.remember(["네", "아니요", "좋아요"][i % 3], None, tokens(&[1, 2]));
        }
        let inner = replays.inner.lock().unwrap();
        assert_eq!(inner.order.len(), 3 * PER_TEXT);
        assert_eq!(inner.by_text.len(), 3);
        assert_eq!(inner.tokens, 3 * PER_TEXT * 2);
    }
}
