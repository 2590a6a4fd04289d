//! The answer's text read as its family writes it: the thinking section apart from the answer,
//! calls apart from text.

use crate::reasoning::ThinkSplitter;
use crate::tool_calls::formats::{CallParser, Parsed};

pub struct AnswerReader {
    think: Option<ThinkSplitter>,
    calls: Option<CallParser>,
}

impl AnswerReader {
    pub fn new(think: Option<ThinkSplitter>, calls: Option<CallParser>) -> Self {
        Self { think, calls }
    }

    /// What `piece` of the answer (special tokens as their text) completes.
    pub fn push(&mut self, piece: &str) -> Vec<Parsed> {
        let split = match &mut self.think {
            Some(think) => think.push(piece),
            None => vec![Parsed::Text(piece.to_owned())],
        };
        self.read_calls(split)
    }

    /// The end of the answer: what was held back.
    pub fn finish(&mut self) -> Vec<Parsed> {
        let split = self
            .think
            .as_mut()
            .map(ThinkSplitter::finish)
            .unwrap_or_default();
        let mut out = self.read_calls(split);
        if let Some(calls) = &mut self.calls {
            out.extend(calls.finish());
        }
        out
    }

    /// Whether the answer called a function.
    pub fn called(&self) -> bool {
        self.calls.as_ref().is_some_and(CallParser::called)
    }

    fn read_calls(&mut self, split: Vec<Parsed>) -> Vec<Parsed> {
        let Some(calls) = &mut self.calls else {
            return split;
        };
        let mut out = Vec::with_capacity(split.len());
        for part in split {
            match part {
                Parsed::Text(text) => out.extend(calls.push(&text)),
                other => out.push(other),
            }
        }
        out
    }
}
