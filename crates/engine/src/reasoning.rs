//! A model's thinking, split from its answer as it streams. Reasoning models write their thoughts
//! between markers (`<think>` ... `</think>`: Qwen3, the DeepSeek-R1 distills) before the answer;
//! clients want them apart (`reasoning_content`), and the answer's parser (tool calls) must not
//! read the thoughts, which may well mention the call syntax.

use crate::tool_calls::formats::{first_marker, held_back, Parsed};

/// Splits an answer into its thinking ([`Parsed::Reasoning`]) and the rest ([`Parsed::Text`]).
/// A `<think>` at the start (after optional whitespace) opens the thinking, the first `</think>`
/// closes it, and what follows, less its leading whitespace, is the answer. A `<think>` anywhere
/// else is text. The whitespace models put around their thoughts is dropped. Markers cut across
/// pieces are held back, never sent as text.
#[derive(Debug)]
pub struct ThinkSplitter {
    open: String,
    close: String,
    state: Think,
    /// Text received and not sent yet: a tail that may begin a marker, or whitespace that may end
    /// the thinking.
    pending: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Think {
    /// Nothing but whitespace yet: thinking may still open.
    Start,
    /// Inside the thinking; `begun` once some of it is sent.
    Thinking { begun: bool },
    /// The thinking closed: whitespace before the answer is dropped.
    Closed,
    /// The answer.
    Answer,
}

impl ThinkSplitter {
    /// `starts_open`: the prompt opened the thinking already (DeepSeek-R1's generation prompt
    /// ends with `<think>\n`), so the answer begins inside it.
    pub fn new(open: &str, close: &str, starts_open: bool) -> Self {
        Self {
            open: open.to_owned(),
            close: close.to_owned(),
            state: if starts_open {
                Think::Thinking { begun: false }
            } else {
                Think::Start
            },
            pending: String::new(),
        }
    }

    /// Whether the model is thinking (what comes next is reasoning).
    pub fn thinking(&self) -> bool {
        matches!(self.state, Think::Thinking { .. })
    }

    /// What `piece` completes.
    pub fn push(&mut self, piece: &str) -> Vec<Parsed> {
        self.pending.push_str(piece);
        let mut out = Vec::new();
        while self.step(&mut out) {}
        out
    }

    /// The end of the answer: what was held back. Thinking cut off by the token budget is still
    /// reasoning.
    pub fn finish(&mut self) -> Vec<Parsed> {
        let rest = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        match self.state {
            Think::Thinking { begun } => {
                let rest = if begun { rest.trim_end() } else { rest.trim() };
                if !rest.is_empty() {
                    out.push(Parsed::Reasoning(rest.to_owned()));
                }
            }
            Think::Start | Think::Answer if !rest.is_empty() => out.push(Parsed::Text(rest)),
            _ => {}
        }
        self.state = Think::Answer;
        out
    }

    /// Reads what it can of `pending`; false when it needs more text.
    fn step(&mut self, out: &mut Vec<Parsed>) -> bool {
        match self.state {
            Think::Start => {
                let rest = self.pending.trim_start();
                if rest.starts_with(self.open.as_str()) {
                    self.pending = rest[self.open.len()..].to_owned();
                    self.state = Think::Thinking { begun: false };
                    true
                } else if self.open.starts_with(rest) {
                    // Empty, or the marker's beginning.
                    false
                } else {
                    self.state = Think::Answer;
                    true
                }
            }
            Think::Thinking { begun } => {
                if !begun {
                    self.pending = self.pending.trim_start().to_owned();
                }
                let close = [self.close.as_str()];
                let found = first_marker(&self.pending, &close);
                let upto = match found {
                    Some((at, _)) => at,
                    None => {
                        // Whitespace before the close is dropped with it: held back too.
                        let marker = self.pending.len() - held_back(&self.pending, &close);
                        self.pending[..marker].trim_end().len()
                    }
                };
                let thought = self.pending[..upto].trim_end();
                if !thought.is_empty() {
                    out.push(Parsed::Reasoning(thought.to_owned()));
                    self.state = Think::Thinking { begun: true };
                }
                match found {
                    Some((at, marker)) => {
                        self.pending.drain(..at + marker.len());
                        self.state = Think::Closed;
                        true
                    }
                    None => {
                        self.pending.drain(..upto);
                        false
                    }
                }
            }
            Think::Closed => {
                let rest = self.pending.trim_start();
                if rest.is_empty() {
                    self.pending.clear();
                    return false;
                }
                self.pending = rest.to_owned();
                self.state = Think::Answer;
                true
            }
            Think::Answer => {
                if !self.pending.is_empty() {
                    out.push(Parsed::Text(std::mem::take(&mut self.pending)));
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
