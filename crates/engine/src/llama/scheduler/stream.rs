//! The text side of a sequence: the bytes of the tokens it chose turned into UTF-8 text (a
//! Korean character split across tokens waits for its last byte), stop strings held back and cut,
//! tool calls read, and the events sent. None of it decides the next token: the scheduler does it
//! right after sampling, or with `--step-overlap` while `llama_decode` computes the next step
//! (see `batch`).

use llama_cpp_2::token::LlamaToken;

use super::reader::AnswerReader;
use crate::llama::detok::{StopMatcher, Utf8Assembler};
use crate::llama::model::Model;
use crate::tool_calls::formats::Parsed;
use crate::tool_calls::{new_call_id, ToolCallEvent};
use crate::{EventSender, GenerationEvent, TokenLogprob};

pub struct TextStream {
    pub events: EventSender,
    /// Tokens chosen whose text is not sent yet.
    unsent: Vec<LlamaToken>,
    /// Their log probabilities, when the request asked for them.
    logprobs: Vec<TokenLogprob>,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    /// Reads thinking and calls apart from the answer's text, for a model that writes them.
    reader: Option<AnswerReader>,
    /// Thinking or calls were sent: the answer's text alone is not what the model wrote, so it
    /// is not replayed as such.
    structured: bool,
    /// The text sent, for the answer's replay in the next turn: what the client received is what
    /// it sends back.
    sent: String,
    /// A stop string cut the answer: the tokens hold text the client never got.
    cut: bool,
    /// Scratch buffer for one token's bytes.
    piece: Vec<u8>,
    /// Special tokens are sent as their text.
    special_text: bool,
}

/// Why a stream ends before its sequence decides to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// A stop string was reached.
    Stopped,
    /// The client is gone.
    ClientGone,
}

impl TextStream {
    pub fn new(
        events: EventSender,
        stop: Vec<String>,
        reader: Option<AnswerReader>,
        special_text: bool,
    ) -> Self {
        Self {
            events,
            unsent: Vec::new(),
            logprobs: Vec::new(),
            utf8: Utf8Assembler::new(),
            sent: String::new(),
            cut: false,
            stop: StopMatcher::new(stop),
            reader,
            structured: false,
            piece: Vec::with_capacity(16),
            special_text,
        }
    }

    /// Queues the text of `tokens` (chosen, or forced by the constraint).
    pub fn push(&mut self, tokens: &[LlamaToken]) {
        self.unsent.extend_from_slice(tokens);
    }

    /// Queues a chosen token's log probability, sent before the token's text.
    pub fn push_logprob(&mut self, logprob: TokenLogprob) {
        self.logprobs.push(logprob);
    }

    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Sends the text of the queued tokens. Returns how the stream ends if it does.
    pub fn flush(&mut self, model: &Model) -> Option<StreamEnd> {
        if self.unsent.is_empty() {
            return None;
        }
        if !self.logprobs.is_empty() {
            let logprobs = std::mem::take(&mut self.logprobs);
            if self
                .events
                .send(GenerationEvent::Logprobs(logprobs))
                .is_err()
            {
                return Some(StreamEnd::ClientGone);
            }
        }
        let mut text = String::new();
        // A reader needs the markup the model wrote (`<tool_call>`, `</think>`).
        let special = self.special_text || self.reader.is_some();
        for token in self.unsent.drain(..) {
            model
                .tokenizer()
                .token_text(token, &mut self.piece, special);
            text.push_str(&self.utf8.push(&self.piece));
        }
        let parts = match &mut self.reader {
            Some(reader) => reader.push(&text),
            None => vec![Parsed::Text(text)],
        };
        self.send_parts(parts)
    }

    /// Sends the reasoning, calls and text of the answer; text goes through the stop strings
    /// (calls and thinking are not text: no stop string applies to them).
    fn send_parts(&mut self, parts: Vec<Parsed>) -> Option<StreamEnd> {
        for part in parts {
            let event = match part {
                Parsed::Text(text) => {
                    let (text, stopped) = self.stop.push(text);
                    self.cut |= stopped;
                    self.sent.push_str(&text);
                    if !text.is_empty() && self.events.send(GenerationEvent::Text(text)).is_err() {
                        return Some(StreamEnd::ClientGone);
                    }
                    if stopped {
                        return Some(StreamEnd::Stopped);
                    }
                    continue;
                }
                Parsed::Reasoning(text) => GenerationEvent::Reasoning(text),
                Parsed::Call(ToolCallEvent::Begin { index, name }) => GenerationEvent::ToolCall {
                    index,
                    id: new_call_id(),
                    name,
                },
                Parsed::Call(ToolCallEvent::Arguments { index, fragment }) => {
                    GenerationEvent::ToolArguments { index, fragment }
                }
            };
            self.structured = true;
            if self.events.send(event).is_err() {
                return Some(StreamEnd::ClientGone);
            }
        }
        None
    }

    /// Sends everything still queued or held back: the end of the answer, before its final
    /// event. Returns whether a stop string came in that text.
    pub fn close(&mut self, model: &Model) -> bool {
        let stopped = self.flush(model) == Some(StreamEnd::Stopped);
        let rest = self.utf8.finish();
        if let Some(reader) = &mut self.reader {
            let mut parts = reader.push(&rest);
            parts.extend(reader.finish());
            if self.send_parts(parts) == Some(StreamEnd::Stopped) {
                return true;
            }
            let tail = self.stop.finish();
            self.sent.push_str(&tail);
            if !tail.is_empty() {
                let _ = self.events.send(GenerationEvent::Text(tail));
            }
            return stopped;
        }
        let (mut tail, _) = self.stop.push(rest);
        tail.push_str(&self.stop.finish());
        self.sent.push_str(&tail);
        if !tail.is_empty() {
            let _ = self.events.send(GenerationEvent::Text(tail));
        }
        stopped
    }

    /// What the client received, and tokens that spell exactly that text, for the next turn's
    /// prompt: all of `answer` (the tokens this stream sent), or where a stop string cut it, the
    /// tokens before the cut and tokens that spell the part of the cut token that was sent.
    /// `None` when nothing spells it (text the tokens did not give, bytes that were not UTF-8).
    pub fn received(
        &self,
        answer: &[LlamaToken],
        model: &Model,
    ) -> Option<(&str, Vec<LlamaToken>)> {
        if self.structured {
            return None;
        }
        if !self.cut {
            return Some((&self.sent, answer.to_vec()));
        }
        let tokenizer = model.tokenizer();
        let sent = self.sent.as_bytes();
        let (mut spelled, mut piece) = (Vec::with_capacity(sent.len()), Vec::new());
        let mut whole = 0;
        for &token in answer {
            tokenizer.token_bytes(token, &mut piece);
            if spelled.len() + piece.len() > sent.len() {
                break;
            }
            spelled.extend_from_slice(&piece);
            whole += 1;
        }
        if !sent.starts_with(&spelled) {
            return None;
        }
        let mut tokens = answer[..whole].to_vec();
        // The part of the cut token the client got.
        let rest = &sent[spelled.len()..];
        if !rest.is_empty() {
            tokens.extend(tokenizer.spell_exactly(rest)?);
        }
        Some((&self.sent, tokens))
    }

    /// How many of `answer`'s tokens the answer took up to the end of the stop string that cut
    /// it (`None`: not cut, or text the tokens do not spell byte for byte): a step that kept
    /// several draft tokens may have gone past it.
    pub fn tokens_to_stop(&self, answer: &[LlamaToken], model: &Model) -> Option<usize> {
        if !self.cut || self.structured || self.reader.is_some() {
            return None;
        }
        let end = self.sent.len() + self.stop.matched()?.len();
        let (mut spelled, mut piece) = (0, Vec::new());
        for (i, &token) in answer.iter().enumerate() {
            model.tokenizer().token_bytes(token, &mut piece);
            spelled += piece.len();
            if spelled >= end {
                return Some(i + 1);
            }
        }
        None
    }

    /// The stop string that ended the answer, if one did.
    pub fn stop_sequence(&self) -> Option<String> {
        self.stop.matched().map(str::to_owned)
    }

    /// Whether the answer called a function.
    pub fn called(&self) -> bool {
        self.reader.as_ref().is_some_and(AnswerReader::called)
    }
}
