//! What shapes an answer while it is sampled, beyond the sampler: a thinking section first, free
//! of any constraint (the answer's grammar waits for its end), and with functions offered
//! (`auto`), the calls' grammar from the moment the model begins calls in its family's syntax (a
//! lazy grammar: `<tool_call>`, `[TOOL_CALLS]`, Llama 3's opening `{`). Reading the text that
//! results is [`super::stream`]'s work; this only decides when a grammar starts.

use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;

use crate::llama::model::Model;

/// The thinking section's marker tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkTokens {
    pub open: LlamaToken,
    pub close: LlamaToken,
}

/// Where offered calls begin: a token of the family's (`<tool_call>`, `[TOOL_CALLS]`,
/// `<|python_tag|>`), or, for Llama 3 whose calls have no marker, an answer whose first text is a
/// JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStart {
    pub tokens: Vec<LlamaToken>,
    pub json_object: bool,
}

pub struct AnswerGuide {
    think: Option<ThinkTokens>,
    thinking: bool,
    /// The answer's constraint, held until the thinking ends.
    after_thinking: Option<Matcher>,
    /// With a constraint waiting, the thinking is ended at this many answer tokens: an answer
    /// that must be made (a required call, a schema) keeps room for itself.
    thinking_limit: usize,
    /// Calls the model may begin, and their grammar.
    offered: Option<(CallStart, Matcher)>,
    /// A token of the answer (after any thinking) was sampled.
    answered: bool,
    /// The answer's text so far (after any thinking), while it may still begin calls.
    text: String,
    piece: Vec<u8>,
}

impl AnswerGuide {
    /// `thinking`: the prompt opened a thinking section; `after_thinking`: the constraint the
    /// answer gets once it ends (when it does not apply from the first token).
    pub fn new(
        think: Option<ThinkTokens>,
        thinking: bool,
        after_thinking: Option<Matcher>,
        offered: Option<(CallStart, Matcher)>,
        max_new_tokens: usize,
    ) -> Self {
        Self {
            think,
            thinking,
            after_thinking,
            thinking_limit: max_new_tokens / 2,
            offered,
            answered: false,
            text: String::new(),
            piece: Vec::new(),
        }
    }

    /// Whether the guide has nothing left to do.
    pub fn is_idle(&self) -> bool {
        !self.thinking && self.after_thinking.is_none() && self.offered.is_none()
    }

    /// `token`, or the end of the thinking in its place when the thinking has had its share of
    /// the budget (`generated` tokens so far) and a constrained answer is still to come.
    pub fn overrule(&self, token: LlamaToken, generated: usize) -> LlamaToken {
        match self.think {
            Some(think)
                if self.thinking
                    && self.after_thinking.is_some()
                    && generated >= self.thinking_limit =>
            {
                think.close
            }
            _ => token,
        }
    }

    /// The grammar that constrains the rest of the answer from now on, if `token` (just sampled)
    /// starts one: the thinking ended, or the model began calls (the grammar has read the tokens
    /// that began them).
    pub fn sampled(&mut self, token: LlamaToken, model: &Model) -> Option<Matcher> {
        if let Some(think) = self.think {
            if self.thinking {
                if token == think.close {
                    self.thinking = false;
                    return self.after_thinking.take();
                }
                return None;
            }
            if token == think.open && !self.answered {
                self.thinking = true;
                return None;
            }
        }
        self.answered = true;
        let (start, _) = self.offered.as_ref()?;
        let begun = if start.tokens.contains(&token) {
            Some(vec![token])
        } else if start.json_object {
            self.json_object_begun(token, model)
        } else {
            None
        };
        let begun = begun?;
        let (_, mut grammar) = self.offered.take()?;
        let ids: Vec<u32> = begun.iter().map(|t| t.0 as u32).collect();
        // The grammar starts at the marker: it reads the tokens that began the calls. Tokens it
        // refuses (a marker spelled another way) leave the calls unconstrained.
        grammar.consume_tokens(&ids).ok()?;
        Some(grammar)
    }

    /// With calls that begin as a JSON object: the tokens of the answer so far when `token` makes
    /// it begin with `{`; stops watching once the answer begins with anything else.
    fn json_object_begun(&mut self, token: LlamaToken, model: &Model) -> Option<Vec<LlamaToken>> {
        model.tokenizer().token_text(token, &mut self.piece, true);
        self.text.push_str(&String::from_utf8_lossy(&self.piece));
        let begun = self.text.trim_start();
        if begun.is_empty() {
            return None;
        }
        if begun.starts_with('{') {
            return Some(model.tokenizer().tokenize_text(begun.as_bytes()));
        }
        if let Some((start, _)) = &mut self.offered {
            start.json_object = false;
        }
        None
    }
}
