//! The local tokenizer both engines use: a GGUF's vocabulary and chat template, turning
//! conversations into prompt tokens. The embedded engine builds it on the model it loaded; the
//! upstream engine loads a vocabulary alone (`--tokenizer`, no weights) to count prompts and to
//! send them as token ids.
//!
//! Client text is data: only the template's own text can become control tokens (`template`,
//! `markup`); conversations with tools are laid out in Mistral's format by `tools`; `replay`
//! keeps the tokens of recent answers so that a conversation's next prompt begins with exactly
//! what its previous turn left in the cache.

pub mod chat_template;
pub mod gguf;
mod markup;
pub mod replay;
pub mod template;
pub mod tools;

use std::ops::Range;
use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::{ChatMessage, EngineError, RawPrompt, Role, Tools};
use chat_template::{ChatTemplate, ChosenTemplate};
use markup::Markup;
use replay::{PromptKey, Replays};
use template::{Fragment, RenderedChat};
use tools::ToolTokens;

/// A vocabulary with its chat template: turns conversations into prompt tokens.
pub struct Tokenizer {
    llama: LlamaModel,
    template: ChatTemplate,
    /// Which chat template is used and where it came from (`--chat-template`, the GGUF itself,
    /// or the fallback).
    template_source: String,
    /// The template's markup tokens (`[INST]`, `</s>`, gpt-oss's user-defined `<|start|>`, ...):
    /// only the template's own text is searched for them, and client text never becomes one.
    markup: Markup,
    /// Mistral's tool-calling tokens, when the vocabulary has them.
    tool_tokens: Option<ToolTokens>,
    /// The longest token's text in bytes: a text of N bytes needs at least N / this many tokens.
    max_token_bytes: usize,
    /// A token that spells each byte alone (byte-fallback and byte-level vocabularies have one
    /// for every byte), to spell any text exactly.
    byte_tokens: Box<[Option<LlamaToken>; 256]>,
}

impl Tokenizer {
    /// Loads only the vocabulary and the chat template of a GGUF file, no weights (a few MB).
    /// `chat_template`: a name llama.cpp knows or a Jinja file, instead of the file's own.
    pub fn load(path: &Path, chat_template: Option<&str>) -> Result<Self, EngineError> {
        let params = LlamaModelParams::default().with_vocab_only(true);
        Self::new(gguf::open(path, &params)?.llama, chat_template)
    }

    /// The tokenizer of a model llama.cpp loaded (with its weights or without).
    pub(crate) fn new(llama: LlamaModel, chat_template: Option<&str>) -> Result<Self, EngineError> {
        let ChosenTemplate {
            template,
            source: template_source,
            own_text,
        } = ChatTemplate::choose(&llama, chat_template)?;
        let markup = Markup::find(&llama, &own_text);
        let tool_tokens = ToolTokens::find(markup.specials().as_slice());
        let (max_token_bytes, byte_tokens) = token_lengths(&llama);
        Ok(Self {
            llama,
            template,
            template_source,
            markup,
            tool_tokens,
            max_token_bytes,
            byte_tokens,
        })
    }

    /// Mistral's tool-calling tokens, when the vocabulary has them.
    pub fn tool_tokens(&self) -> Option<&ToolTokens> {
        self.tool_tokens.as_ref()
    }

    /// Which chat template is used and where it came from.
    pub fn template_source(&self) -> &str {
        &self.template_source
    }

    pub(crate) fn llama(&self) -> &LlamaModel {
        &self.llama
    }

    /// Renders a conversation with the chat template (ending with the assistant's cue) and
    /// tokenizes it, BOS included. Only the template's own text can become control tokens: the
    /// contents are tokenized as plain text (see [`template`]).
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, EngineError> {
        self.prompt_with(messages, None, None)
    }

    /// [`Tokenizer::prompt`] with the functions offered to the model, and the earlier answers
    /// `replays` knows given the tokens they were generated as (see [`Replays::splices`]): a
    /// conversation's next prompt then begins with exactly the cells its previous turn left.
    /// Replayed tokens are the model's own answer after the same prompt (a special token it
    /// sampled included); client text is never tokenized into markup.
    pub(crate) fn prompt_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Tools>,
        replays: Option<&Replays>,
    ) -> Result<Prompt, EngineError> {
        let vocab = self.llama.vocab();
        let mut tokens = Vec::with_capacity(256);
        if vocab.should_add_bos() {
            tokens.push(vocab.bos());
        }
        let mut after = None;
        match (&self.tool_tokens, tools::uses_tools(messages, tools)) {
            (Some(tool_tokens), true) => {
                // Mistral's tool format: each earlier answer is a text piece of its own.
                let fragments = tools::render(messages, tools, tool_tokens, vocab.eos());
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(text) => {
                            match replays.and_then(|r| r.tokens_of(text.trim_start())) {
                                Some(generated) => tokens.extend(generated),
                                None => tokens.extend(self.tokenize_text(text.as_bytes())),
                            }
                        }
                        Fragment::Token(token) => tokens.push(token),
                    }
                }
            }
            (_, uses_tools) => {
                let plain;
                let messages = if uses_tools {
                    plain = tools::as_plain_messages(messages);
                    &plain[..]
                } else {
                    messages
                };
                let chat = self.render(messages)?;
                let answers: Vec<Range<usize>> = chat
                    .contents
                    .iter()
                    .filter(|c| messages[c.message].role == Role::Assistant)
                    .map(|c| c.range.clone())
                    .collect();
                let splices = replays.map_or_else(Vec::new, |r| r.splices(&chat.text, &answers));
                let mut at = 0;
                for splice in splices {
                    self.tokenize_span(&chat, at..splice.replace.start, &mut tokens);
                    tokens.extend(splice.tokens);
                    at = splice.replace.end;
                }
                self.tokenize_span(&chat, at..chat.text.len(), &mut tokens);
                after = replays.map(|r| r.key(&chat.text));
            }
        }
        if vocab.should_add_eos() {
            tokens.push(vocab.eos());
        }
        Ok(Prompt { tokens, after })
    }

    /// Appends the tokens of `chat.text[span]`, tokenized on its own: control tokens only where
    /// the template wrote them, the rest as plain text.
    fn tokenize_span(&self, chat: &RenderedChat, span: Range<usize>, out: &mut Vec<LlamaToken>) {
        for fragment in template::partition(chat, span, self.markup.specials()) {
            match fragment {
                Fragment::Token(token) => out.push(token),
                Fragment::Text(text) => out.extend(self.tokenize_text(text.as_bytes())),
            }
        }
    }

    /// [`Tokenizer::prompt_with`], refused early when the client's texts alone cannot fit `context`
    /// tokens: a 100,000-character message, or a 2 MB function description, is answered before
    /// it is rendered or tokenized.
    pub(crate) fn prompt_within(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Tools>,
        context: usize,
        replays: Option<&Replays>,
    ) -> Result<Prompt, EngineError> {
        // Without tool tokens the function list is not part of the prompt.
        let tools_in_prompt = tools.filter(|_| self.tool_tokens.is_some());
        refuse_text_over_context(messages, tools_in_prompt, self.max_token_bytes, context)?;
        self.prompt_with(messages, tools, replays)
    }

    /// The chat template applied to `messages`, with the place of every content in the text.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<RenderedChat, EngineError> {
        let text = self.apply_template(messages.iter().map(|m| (m, m.content.clone())))?;
        let skeleton = self.apply_template(
            messages
                .iter()
                .enumerate()
                .map(|(i, m)| (m, template::skeleton_content(i, &m.content))),
        )?;
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        let contents = template::locate_contents(&text, &skeleton, &contents).ok_or_else(|| {
            EngineError::Template(
                "the chat template changes message contents in a way the prompt builder cannot \
                 follow (only trimming is supported)"
                    .into(),
            )
        })?;
        Ok(RenderedChat { text, contents })
    }

    /// The chat template applied to messages whose contents are given separately.
    fn apply_template<'a>(
        &self,
        messages: impl Iterator<Item = (&'a ChatMessage, String)>,
    ) -> Result<String, EngineError> {
        let chat: Vec<(&str, String)> = messages.map(|(m, c)| (m.role.as_str(), c)).collect();
        self.template.apply(&self.llama, &chat, true)
    }

    /// A raw prompt's tokens (`/v1/completions`), refused early as a chat prompt is when its text
    /// alone cannot fit `context`: text with the model's special tokens recognised and BOS added
    /// where the vocabulary asks for it; token ids checked against the vocabulary and taken as
    /// they are; a fill-in-the-middle prompt between the model's FIM tokens
    /// (`<PRE> prefix <SUF> suffix <MID>`, as llama.cpp's infill lays it out).
    pub fn raw_prompt(&self, raw: &RawPrompt, context: usize) -> Result<Prompt, EngineError> {
        let at_least = raw.text_bytes().div_ceil(self.max_token_bytes.max(1));
        if at_least > context {
            return Err(EngineError::PromptOverContext {
                at_least,
                bytes: raw.text_bytes(),
                max_token_bytes: self.max_token_bytes,
                context,
            });
        }
        let vocab = self.llama.vocab();
        let tokens = match raw {
            RawPrompt::Text(text) => vocab.tokenize(text.as_bytes(), vocab.should_add_bos(), true),
            RawPrompt::Tokens(ids) => {
                let size = vocab.n_tokens().max(0) as u32;
                if let Some(bad) = ids.iter().find(|&&id| id >= size) {
                    return Err(EngineError::InvalidPrompt(format!(
                        "token id {bad} is not in the model's vocabulary of {size} tokens"
                    )));
                }
                ids.iter().map(|&id| LlamaToken(id as i32)).collect()
            }
            RawPrompt::Infill { prefix, suffix } => {
                let (pre, suf, mid) = (vocab.fim_pre(), vocab.fim_suf(), vocab.fim_mid());
                if [pre, suf, mid].iter().any(|t| t.0 < 0) {
                    return Err(EngineError::InfillUnsupported);
                }
                let mut tokens = Vec::new();
                if vocab.should_add_bos() {
                    tokens.push(vocab.bos());
                }
                tokens.push(pre);
                tokens.extend(vocab.tokenize(prefix.as_bytes(), false, false));
                tokens.push(suf);
                tokens.extend(vocab.tokenize(suffix.as_bytes(), false, false));
                tokens.push(mid);
                tokens
            }
        };
        Ok(Prompt {
            tokens,
            after: None,
        })
    }

    /// The number of tokens in the vocabulary.
    pub fn vocabulary_size(&self) -> usize {
        self.llama.vocab().n_tokens().max(0) as usize
    }

    /// The bytes of one token as the model spells it (may be part of a UTF-8 character).
    pub(crate) fn token_bytes(&self, token: LlamaToken, out: &mut Vec<u8>) {
        self.token_text(token, out, false);
    }

    /// [`Tokenizer::token_bytes`], with a special token's own text when `special` (`[TOOL_CALLS]`
    /// instead of nothing), for a client that reads the model's markup itself.
    pub(crate) fn token_text(&self, token: LlamaToken, out: &mut Vec<u8>, special: bool) {
        out.clear();
        self.llama
            .vocab()
            .token_to_piece_into(token, out, special, None);
    }

    /// `text` as plain text in the middle of a conversation: no BOS, no markup token (the
    /// tokenizer may still add SentencePiece's leading space).
    pub(crate) fn tokenize_text(&self, text: &[u8]) -> Vec<LlamaToken> {
        self.markup
            .unmark(self.llama.vocab().tokenize(text, false, false))
    }

    /// The longest token's text in bytes.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Tokens that spell exactly `text` as plain text, or `None` when the vocabulary cannot: the
    /// text's own tokenization when it gives back exactly those bytes (SentencePiece may add a
    /// leading space), else one token per byte.
    pub(crate) fn spell_exactly(&self, text: &[u8]) -> Option<Vec<LlamaToken>> {
        let tokens = self.tokenize_text(text);
        let mut spelled = Vec::with_capacity(text.len());
        let mut piece = Vec::new();
        for &token in &tokens {
            self.token_bytes(token, &mut piece);
            spelled.extend_from_slice(&piece);
        }
        if spelled == text {
            return Some(tokens);
        }
        text.iter().map(|&b| self.byte_tokens[b as usize]).collect()
    }

    /// Whether `token` is markup of the chat template (a control token, or a user-defined one the
    /// template writes): only the template's own text produces it in a prompt.
    pub fn is_markup(&self, token: LlamaToken) -> bool {
        self.markup.contains(&self.llama, token)
    }

    pub(crate) fn is_end_of_generation(&self, token: LlamaToken) -> bool {
        self.llama.vocab().is_eog(token)
    }
}

/// Refuses, before anything is rendered or tokenized, a conversation whose client text alone needs
/// more than `context` tokens at `max_token_bytes` bytes per token at most: a 100,000-character
/// message, or a 2 MB function description, is answered at once on every engine.
pub fn refuse_text_over_context(
    messages: &[ChatMessage],
    tools: Option<&Tools>,
    max_token_bytes: usize,
    context: usize,
) -> Result<(), EngineError> {
    let bytes = client_text_bytes(messages, tools);
    let at_least = bytes.div_ceil(max_token_bytes.max(1));
    if at_least > context {
        return Err(EngineError::PromptOverContext {
            at_least,
            bytes,
            max_token_bytes,
            context,
        });
    }
    Ok(())
}

/// The bytes of client text the prompt of `messages` (with `tools`, where the prompt lists them)
/// holds at least: contents, calls in the history, the function list.
fn client_text_bytes(messages: &[ChatMessage], tools: Option<&Tools>) -> usize {
    let history: usize = messages
        .iter()
        .map(|m| {
            let calls = m.tool_calls.iter();
            m.content.len()
                + calls
                    .map(|c| c.name.len() + c.arguments.len())
                    .sum::<usize>()
        })
        .sum();
    let offered: usize = tools.map_or(0, |tools| {
        tools
            .functions
            .iter()
            .map(|f| {
                let description = f.description.as_ref().map_or(0, String::len);
                f.name.len() + description + f.parameters.to_string().len()
            })
            .sum()
    });
    history + offered
}

/// A tokenized prompt, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub(crate) tokens: Vec<LlamaToken>,
    /// What its answer is remembered after, for the conversation's next prompt.
    pub(crate) after: Option<PromptKey>,
}

impl Prompt {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token ids.
    pub fn tokens(&self) -> &[LlamaToken] {
        &self.tokens
    }
}

/// The longest text one token stands for, in bytes (at least 1).
/// The longest token's text in bytes, and a plain token for each byte that has one.
fn token_lengths(llama: &LlamaModel) -> (usize, Box<[Option<LlamaToken>; 256]>) {
    let vocab = llama.vocab();
    let mut piece = Vec::new();
    let mut longest = 1;
    let mut bytes = Box::new([None; 256]);
    for token in vocab.tokens() {
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        longest = longest.max(piece.len());
        if let [byte] = piece[..] {
            use llama_cpp_2::token_type::LlamaTokenAttr;
            let markup =
                LlamaTokenAttr::Control | LlamaTokenAttr::Unknown | LlamaTokenAttr::UserDefined;
            let plain = !vocab.attr(token).intersects(markup);
            if plain && bytes[byte as usize].is_none() {
                bytes[byte as usize] = Some(token);
            }
        }
    }
    (longest, bytes)
}
