//! Opening a GGUF model: checks before llama.cpp sees the file, loading, the chat template and
//! tokenizer helpers. The model is shared (read-only, `Sync`); contexts are not (see `scheduler`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;

use super::template::{self, Fragment, RenderedChat, SpecialText};
use super::tools::{self, ToolTokens};
use crate::engine::{ChatMessage, EngineError, Tools};

/// Mistral's `[INST]` format, used when the GGUF carries no chat template (or one llama.cpp does not
/// recognise). v3 is the format of Mistral-7B-Instruct v0.3, the default model.
const FALLBACK_TEMPLATE: &str = "mistral-v3";

/// The smallest file that can hold a GGUF header (magic, version, tensor and metadata counts).
const GGUF_HEADER_LEN: u64 = 24;

/// `LlamaBackend::init` succeeds once per process; everything shares this one. `get_or_init`
/// makes concurrent first callers wait for the one initialisation instead of racing to a second.
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// How to load the weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub path: PathBuf,
    pub n_gpu_layers: u32,
    /// Lock the weights in RAM.
    pub mlock: bool,
    /// Map the file (the default) or read it into memory.
    pub mmap: bool,
    /// Load only the vocabulary and the chat template, no weights (a few MB): enough to count
    /// prompt tokens for an upstream engine.
    pub vocab_only: bool,
}

/// What was loaded, for the start-up log and `/v1/models`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub file_size: u64,
    pub n_layer: u32,
    pub n_params: u64,
    /// Where the chat template came from: the GGUF itself or the built-in fallback.
    pub template_source: &'static str,
    /// The GPU that holds the offloaded layers, when any are.
    pub gpu_device: Option<String>,
}

/// A loaded model with its chat template: turns conversations into prompt tokens.
pub struct Model {
    llama: LlamaModel,
    template: LlamaChatTemplate,
    /// The control tokens (`[INST]`, `</s>`, ...) as the template's text spells them, longest
    /// first: only the template's own text is searched for them.
    specials: Vec<SpecialText<LlamaToken>>,
    /// Mistral's tool-calling tokens, when the vocabulary has them.
    tool_tokens: Option<ToolTokens>,
    /// The longest token's text in bytes: a text of N bytes needs at least N / this many tokens.
    max_token_bytes: usize,
    info: ModelInfo,
}

impl Model {
    /// Checks the file, then loads it through llama.cpp. Every failure is a typed error that says
    /// what to do; nothing here aborts the process.
    pub fn load(options: &LoadOptions) -> Result<Self, EngineError> {
        let path = absolute(&options.path);
        let file_size = check_gguf_file(&path)?;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(options.n_gpu_layers)
            .with_use_mlock(options.mlock)
            .with_use_mmap(options.mmap)
            .with_vocab_only(options.vocab_only);
        let llama = LlamaModel::load_from_file(backend()?, &path, &params)
            .map_err(|_| EngineError::ModelRejected { path: path.clone() })?;
        let (template, template_source) = pick_template(&llama);
        let info = ModelInfo {
            path,
            file_size,
            n_layer: llama.n_layer(),
            n_params: llama.n_params(),
            template_source,
            gpu_device: (options.n_gpu_layers > 0).then(gpu_device).flatten(),
        };
        let specials = special_texts(&llama);
        let tool_tokens = ToolTokens::find(&specials);
        let max_token_bytes = longest_token_bytes(&llama);
        Ok(Self {
            llama,
            template,
            specials,
            tool_tokens,
            max_token_bytes,
            info,
        })
    }

    /// Mistral's tool-calling tokens, when the vocabulary has them.
    pub fn tool_tokens(&self) -> Option<&ToolTokens> {
        self.tool_tokens.as_ref()
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub(crate) fn llama(&self) -> &LlamaModel {
        &self.llama
    }

    /// Renders a conversation with the chat template (ending with the assistant's cue) and
    /// tokenizes it, BOS included. Only the template's own text can become control tokens: the
    /// contents are tokenized as plain text (see [`template`]).
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, EngineError> {
        self.prompt_replaying(messages, None, &|_| None)
    }

    /// [`Model::prompt`], where a content that is an answer generated earlier (as `replay` knows
    /// it) is given the tokens it was generated as, in place of the template's text around it
    /// (the whitespace after the generation prompt) and its own tokenization: the prompt then
    /// begins with exactly the cells the answer's slot holds. Generated tokens are never control
    /// tokens (such answers are not remembered), so this adds no control token.
    pub fn prompt_replaying(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Tools>,
        replay: &dyn Fn(&str) -> Option<Vec<LlamaToken>>,
    ) -> Result<Prompt, EngineError> {
        let vocab = self.llama.vocab();
        let fragments = match (&self.tool_tokens, tools::uses_tools(messages, tools)) {
            (Some(tokens), true) => tools::render(messages, tools, tokens, vocab.eos()),
            (None, true) => {
                let chat = self.render(&tools::as_plain_messages(messages))?;
                template::partition(&chat, &self.specials)
            }
            (_, false) => template::partition(&self.render(messages)?, &self.specials),
        };
        let mut tokens = Vec::with_capacity(256);
        if vocab.should_add_bos() {
            tokens.push(vocab.bos());
        }
        for fragment in fragments {
            match fragment {
                Fragment::Token(token) => tokens.push(token),
                Fragment::Text(text) => match replay(text.trim_start()) {
                    Some(generated) => tokens.extend(generated),
                    None => tokens.extend(vocab.tokenize(text.as_bytes(), false, false)),
                },
            }
        }
        if vocab.should_add_eos() {
            tokens.push(vocab.eos());
        }
        Ok(Prompt { tokens })
    }

    /// [`Model::prompt_replaying`], refused early when the contents alone cannot fit `context` tokens:
    /// a 100,000-character message is answered before it is rendered or tokenized.
    pub fn prompt_within(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Tools>,
        context: usize,
        replay: &dyn Fn(&str) -> Option<Vec<LlamaToken>>,
    ) -> Result<Prompt, EngineError> {
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        let at_least = bytes.div_ceil(self.max_token_bytes);
        if at_least > context {
            return Err(EngineError::PromptOverContext {
                at_least,
                bytes,
                max_token_bytes: self.max_token_bytes,
                context,
            });
        }
        self.prompt_replaying(messages, tools, replay)
    }

    /// The chat template applied to `messages`, with the place of every content in the text.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<RenderedChat, EngineError> {
        let text = self.apply_template(messages.iter().map(|m| (m, m.content.clone())))?;
        let skeleton = self.apply_template(
            messages
                .iter()
                .enumerate()
                .map(|(i, m)| (m, template::placeholder(i))),
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
        let chat = messages
            .map(|(m, content)| LlamaChatMessage::new(m.role.as_str().to_owned(), content))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| EngineError::InvalidPrompt("a message contains a NUL character".into()))?;
        self.llama
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| EngineError::Template(format!("chat template failed: {e}")))
    }

    /// The bytes of one token as the model spells it (may be part of a UTF-8 character).
    pub(crate) fn token_bytes(&self, token: LlamaToken, out: &mut Vec<u8>) {
        out.clear();
        self.llama
            .vocab()
            .token_to_piece_into(token, out, false, None);
    }

    /// `text` as plain text in the middle of a conversation: no BOS, no control tokens (the
    /// tokenizer may still add SentencePiece's leading space).
    pub(crate) fn tokenize_text(&self, text: &[u8]) -> Vec<LlamaToken> {
        self.llama.vocab().tokenize(text, false, false)
    }

    /// Whether `token` is one that only special-token parsing produces (control or unknown).
    pub fn is_special(&self, token: LlamaToken) -> bool {
        self.llama
            .vocab()
            .attr(token)
            .intersects(LlamaTokenAttr::Control | LlamaTokenAttr::Unknown)
    }

    pub(crate) fn is_end_of_generation(&self, token: LlamaToken) -> bool {
        self.llama.vocab().is_eog(token)
    }
}

/// A tokenized prompt, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub(crate) tokens: Vec<LlamaToken>,
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

/// Every token llama.cpp's tokenizer matches only with special parsing on (control and unknown
/// tokens), as it matches them: by their text, longest first.
fn special_texts(llama: &LlamaModel) -> Vec<SpecialText<LlamaToken>> {
    let vocab = llama.vocab();
    let mut specials: Vec<_> = vocab
        .tokens()
        .filter_map(|token| {
            let attr = vocab.attr(token);
            if !attr.intersects(LlamaTokenAttr::Control | LlamaTokenAttr::Unknown) {
                return None;
            }
            let text = vocab.text(token)?.to_str().ok()?.to_owned();
            Some(SpecialText {
                text,
                token,
                lstrip: attr.contains(LlamaTokenAttr::LStrip),
                rstrip: attr.contains(LlamaTokenAttr::RStrip),
            })
        })
        .collect();
    specials.sort_by_key(|s| std::cmp::Reverse(s.text.len()));
    specials
}

/// The longest text one token stands for, in bytes (at least 1).
fn longest_token_bytes(llama: &LlamaModel) -> usize {
    let vocab = llama.vocab();
    let mut piece = Vec::new();
    vocab
        .tokens()
        .map(|t| {
            piece.clear();
            vocab.token_to_piece_into(t, &mut piece, false, None);
            piece.len()
        })
        .max()
        .unwrap_or(1)
        .max(1)
}

/// The first GPU llama.cpp sees, as "name (description)".
fn gpu_device() -> Option<String> {
    use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};
    list_llama_ggml_backend_devices()
        .into_iter()
        .find(|d| matches!(d.device_type, LlamaBackendDeviceType::Gpu))
        .map(|d| format!("{} ({})", d.name, d.description))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Rejects what llama.cpp would fail on with a less helpful message (or worse): a missing path, a
/// directory, an empty or short file, a file that is not GGUF.
fn check_gguf_file(path: &Path) -> Result<u64, EngineError> {
    let meta = std::fs::metadata(path).map_err(|_| EngineError::ModelMissing {
        path: path.to_path_buf(),
    })?;
    if !meta.is_file() {
        return Err(EngineError::ModelNotGguf {
            path: path.to_path_buf(),
            why: "it is not a regular file".into(),
        });
    }
    if meta.len() < GGUF_HEADER_LEN {
        return Err(EngineError::ModelNotGguf {
            path: path.to_path_buf(),
            why: format!("it is {} bytes long, too short to be a model", meta.len()),
        });
    }
    let mut header = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| EngineError::ModelNotGguf {
            path: path.to_path_buf(),
            why: format!("it cannot be read: {e}"),
        })?;
    if &header[..4] != b"GGUF" {
        return Err(EngineError::ModelNotGguf {
            path: path.to_path_buf(),
            why: "it does not start with the GGUF magic bytes".into(),
        });
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(EngineError::ModelNotGguf {
            path: path.to_path_buf(),
            why: format!("GGUF version {version} is not supported (2 or 3 expected)"),
        });
    }
    Ok(meta.len())
}

/// The GGUF's own template when llama.cpp can apply it, else Mistral's format.
fn pick_template(llama: &LlamaModel) -> (LlamaChatTemplate, &'static str) {
    let probe = [
        LlamaChatMessage::new("user".into(), "hi".into()).expect("no NUL in literal"),
        LlamaChatMessage::new("assistant".into(), "hello".into()).expect("no NUL in literal"),
        LlamaChatMessage::new("user".into(), "bye".into()).expect("no NUL in literal"),
    ];
    match llama.chat_template(None) {
        Ok(template) if llama.apply_chat_template(&template, &probe, true).is_ok() => {
            (template, "gguf")
        }
        Ok(_) => {
            tracing::warn!("the model's chat template is not one llama.cpp can apply; using Mistral's [INST] format");
            (fallback_template(), "fallback: mistral [INST]")
        }
        Err(_) => (fallback_template(), "fallback: mistral [INST]"),
    }
}

fn fallback_template() -> LlamaChatTemplate {
    LlamaChatTemplate::new(FALLBACK_TEMPLATE).expect("no NUL in literal")
}
