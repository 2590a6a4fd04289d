//! The tokens of recent answers, so that a conversation's next prompt carries an earlier answer
//! exactly as it was generated. Rendering the answer again through the chat template gives other
//! tokens (Mistral's template writes `" " + answer`, and the text tokenizes differently from how
//! it was sampled), so without this every follow-up computes the previous answer again instead of
//! reusing the cells its slot still holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use llama_cpp_2::token::LlamaToken;

/// Answers remembered at most; the oldest are forgotten first.
const CAPACITY: usize = 512;

/// Answer text -> the tokens generated for it.
#[derive(Debug, Default)]
pub struct Replays {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tokens: HashMap<String, Vec<LlamaToken>>,
    order: VecDeque<String>,
}

impl Replays {
    /// Remembers that `tokens` were generated as `text` (exactly what was sent). It is found by
    /// its text without surrounding whitespace, which chat templates trim from answers.
    pub fn remember(&self, text: String, tokens: Vec<LlamaToken>) {
        let text = text.trim().to_owned();
        if text.is_empty() || tokens.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.tokens.insert(text.clone(), tokens).is_none() {
            inner.order.push_back(text);
        }
        while inner.order.len() > CAPACITY {
            if let Some(oldest) = inner.order.pop_front() {
                inner.tokens.remove(&oldest);
            }
        }
    }

    /// The tokens generated as `text`, if it is a remembered answer.
    pub fn tokens_of(&self, text: &str) -> Option<Vec<LlamaToken>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tokens.get(text).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_by_their_exact_text_and_the_oldest_are_forgotten() {
        let replays = Replays::default();
        replays.remember(
            "{\"a\": 1}".into(),
            vec![LlamaToken::new(5), LlamaToken::new(6)],
        );
        assert_eq!(
            replays.tokens_of("{\"a\": 1}"),
            Some(vec![LlamaToken::new(5), LlamaToken::new(6)])
        );
        assert_eq!(replays.tokens_of(" {\"a\": 1}"), None);
        replays.remember(" 가 \n".into(), vec![LlamaToken::new(9)]);
        assert_eq!(replays.tokens_of("가"), Some(vec![LlamaToken::new(9)]));
        for i in 0..CAPACITY {
            replays.remember(format!("answer {i}"), vec![LlamaToken::new(1)]);
        }
        assert_eq!(
            replays.tokens_of("{\"a\": 1}"),
            None,
            "the oldest went first"
        );
        assert!(replays
            .tokens_of(&format!("answer {}", CAPACITY - 1))
            .is_some());
    }
}
