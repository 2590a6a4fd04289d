//! The local tokenizer both engines use: a GGUF's vocabulary and chat template, turning
//! conversations into prompt tokens. The embedded engine builds it on the model it loaded; the
//! upstream engine loads a vocabulary alone (`--tokenizer`, no weights) to count prompts and to
//! send them as token ids.
//!
//! Client text is data: only the template's own text can become control tokens (`template`,
//! `markup`); conversations with tools are laid out in Mistral's format by `tools`; `replay`
//! keeps the tokens of recent answers so that a conversation's next prompt begins with exactly
//! what its previous turn left in the cache.

pub mod chat_format;
pub mod chat_template;
mod generic_tools;
pub mod gguf;
pub mod jinja;
mod markup;
mod neutral;
mod pyjson;
pub mod replay;
pub mod template;
mod tool_chat;
pub mod tools;

use std::ops::Range;
use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use serde_json::{Map, Value};

use crate::tool_calls::formats::CallSyntax;
use crate::{ChatMessage, EngineError, RawPrompt, Role, Tools};
use chat_format::ChatFormat;
use chat_template::{ChatTemplate, ChosenTemplate};
use markup::Markup;
use replay::{PromptKey, Replays};
use template::{Fragment, RenderedChat};
use tool_chat::ToolChat;
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
    /// The template's Jinja source, for conversations with tools and for template arguments.
    tool_chat: Option<ToolChat>,
    /// How the model calls functions and whether it thinks first.
    format: ChatFormat,
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
            jinja,
        } = ChatTemplate::choose(&llama, chat_template)?;
        let markup = Markup::find(&llama, &own_text);
        // Mistral's tool tokens serve a template of Mistral's format (one without tools
        // included: many v0.3 GGUFs carry the older template), not any vocabulary that has them.
        let mistral = own_text.contains("[INST]") || own_text.contains("[TOOL_CALLS]");
        let tool_tokens = ToolTokens::find(markup.specials().as_slice()).filter(|_| mistral);
        let markup_texts = || {
            markup
                .specials()
                .as_slice()
                .iter()
                .map(|s| s.text.clone())
                .collect()
        };
        let tool_chat = jinja
            .clone()
            .and_then(|source| ToolChat::new(&llama, source, markup_texts()));
        let native = tool_chat
            .as_ref()
            .is_some_and(|c| c.lists_tools() && c.renders_calls());
        let format = ChatFormat::detect(
            jinja.as_deref().unwrap_or(&own_text),
            tool_tokens.is_some(),
            native,
        );
        let (max_token_bytes, byte_tokens) = token_lengths(&llama);
        Ok(Self {
            llama,
            template,
            template_source,
            markup,
            tool_tokens,
            tool_chat,
            format,
            max_token_bytes,
            byte_tokens,
        })
    }

    /// Mistral's tool-calling tokens, when the vocabulary has them.
    pub fn tool_tokens(&self) -> Option<&ToolTokens> {
        self.tool_tokens.as_ref()
    }

    /// How the model calls functions and whether it thinks first.
    pub fn chat_format(&self) -> &ChatFormat {
        &self.format
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
        self.prompt_with(messages, None, &Map::new(), None)
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
        template_args: &Map<String, Value>,
        replays: Option<&Replays>,
    ) -> Result<Prompt, EngineError> {
        let vocab = self.llama.vocab();
        let mut tokens = Vec::with_capacity(256);
        let mut after = None;
        let uses_tools = tools::uses_tools(messages, tools);
        let own_tools = uses_tools && self.format.calls != CallSyntax::Generic;
        match (&self.tool_tokens, &self.tool_chat) {
            (Some(tool_tokens), _) if uses_tools => {
                if vocab.should_add_bos() {
                    tokens.push(vocab.bos());
                }
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
            (_, Some(chat)) if own_tools || !template_args.is_empty() => {
                // The template's own rendering of tools, calls and results, or of the request's
                // template arguments (`enable_thinking`).
                if vocab.should_add_bos() {
                    tokens.push(vocab.bos());
                }
                let text = chat.render(messages, tools, template_args)?;
                self.tokenize_escaped(chat, text, &mut tokens);
            }
            _ => {
                if vocab.should_add_bos() {
                    tokens.push(vocab.bos());
                }
                let generic;
                let messages = if uses_tools {
                    generic = generic_tools::messages(messages, tools);
                    &generic[..]
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
        let opens_thinking = self.opens_thinking(&tokens);
        Ok(Prompt {
            tokens,
            after,
            opens_thinking,
        })
    }

    /// The tokens of a rendering whose client strings are escaped ([`ToolChat`]): markup where
    /// the template wrote it, the text between it (the client's given back) as plain text.
    fn tokenize_escaped(&self, chat: &ToolChat, text: String, out: &mut Vec<LlamaToken>) {
        let rendered = RenderedChat {
            contents: Vec::new(),
            text,
        };
        let span = 0..rendered.text.len();
        for fragment in template::partition(&rendered, span, self.markup.specials()) {
            match fragment {
                Fragment::Token(token) => out.push(token),
                Fragment::Text(text) => {
                    out.extend(self.tokenize_text(chat.restore(&text).as_bytes()))
                }
            }
        }
    }

    /// The prompt of a Hugging Face chat-template context (`messages` in OpenAI's shape,
    /// `tools`, `add_generation_prompt`, template arguments), rendered by the model's Jinja
    /// template as tool conversations are, client strings kept text: what the tests compare
    /// with Python's jinja2 rendering of the same context. `None` without a Jinja template.
    pub fn template_prompt(
        &self,
        context: Map<String, Value>,
    ) -> Option<Result<Vec<LlamaToken>, EngineError>> {
        let chat = self.tool_chat.as_ref()?;
        let vocab = self.llama.vocab();
        Some(chat.render_context(context).map(|text| {
            let mut tokens = Vec::new();
            if vocab.should_add_bos() {
                tokens.push(vocab.bos());
            }
            self.tokenize_escaped(chat, text, &mut tokens);
            tokens
        }))
    }

    /// [`Tokenizer::prompt`] of a conversation with functions offered and template arguments,
    /// as the engine builds it.
    pub fn chat_prompt(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Tools>,
        template_args: &Map<String, Value>,
    ) -> Result<Prompt, EngineError> {
        self.prompt_with(messages, tools, template_args, None)
    }

    /// Whether `prompt` ends inside a thinking section the template opened (DeepSeek-R1's
    /// generation prompt ends with `<think>\n`): the answer then begins with the thinking.
    fn opens_thinking(&self, prompt: &[LlamaToken]) -> bool {
        let Some(markers) = &self.format.thinking else {
            return false;
        };
        let mut piece = Vec::new();
        let mut text = Vec::new();
        // The last few tokens' text: the marker and the whitespace after it.
        for &token in prompt.iter().rev().take(4) {
            self.token_text(token, &mut piece, true);
            text.splice(0..0, piece.iter().copied());
            let tail = String::from_utf8_lossy(&text);
            let tail = tail.trim_end();
            if tail.ends_with(&markers.close) {
                return false;
            }
            if tail.ends_with(&markers.open) {
                return true;
            }
        }
        false
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
        template_args: &Map<String, Value>,
        context: usize,
        replays: Option<&Replays>,
    ) -> Result<Prompt, EngineError> {
        refuse_text_over_context(messages, tools, self.max_token_bytes, context)?;
        self.prompt_with(messages, tools, template_args, replays)
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
            opens_thinking: false,
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

    /// The one token `text` is with special-token parsing on (a marker: `<tool_call>`,
    /// `</think>`), if it is one.
    pub fn single_token(&self, text: &str) -> Option<LlamaToken> {
        match self.llama.vocab().tokenize(text.as_bytes(), false, true)[..] {
            [token] => Some(token),
            _ => None,
        }
    }

    /// A marker of the model's format as a terminal of an llguidance Lark grammar: a control
    /// token by its id (`<[151657]>`: its text is not text the model can write), anything else as
    /// the string it is.
    pub fn grammar_marker(&self, text: &str) -> String {
        use llama_cpp_2::token_type::LlamaTokenAttr;
        match self.single_token(text) {
            Some(token)
                if self
                    .llama
                    .vocab()
                    .attr(token)
                    .contains(LlamaTokenAttr::Control) =>
            {
                format!("<[{}]>", token.0)
            }
            _ => Value::String(text.to_owned()).to_string(),
        }
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
    /// It ends inside a thinking section: the answer begins with the model's thinking.
    pub(crate) opens_thinking: bool,
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
