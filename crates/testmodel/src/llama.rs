//! Tiny llama-architecture models: Mistral-7B-Instruct-v0.3's metadata and tokenizer layout,
//! small shapes, random weights. The engine runs them exactly like the real model, only fast.
//!
//! The same writer makes full-size synthetic models for benchmarks ([`TinyModelSpec::mistral_7b`],
//! [`TinyModelSpec::llama_1b`]): real shapes, a 32,768-token vocabulary and 4-bit Q4_0 weights,
//! so llama.cpp reads as many bytes per token as with the real file. Decoding speed does not
//! depend on the weight values, only the text does (random weights write gibberish).
//!
//! Models of other families ([`FAMILIES`], [`TinyModelSpec::family`]) keep the architecture and
//! the SentencePiece vocabulary but carry the family's real chat template, its special tokens
//! (with the token types the real GGUF gives them) and its BOS/EOS/add-BOS settings: what the
//! engine's tool-calling and reasoning code looks at. The weights stay random; only the
//! tokenizer side is the family's.

use std::io::{self, Write};
use std::path::Path;

use super::gguf::{GgufWriter, TensorData, TensorInfo, TensorType};
use super::quant::{random_q4_0_block, Q4_0_BLOCK_BYTES};
use super::rng::SplitMix64;
use super::vocab::{self, sized_vocab, TokenType, MISTRAL_VOCAB_LEN, TINY_VOCAB_LEN};

/// The chat template of Mistral-7B-Instruct-v0.3 as its `tokenizer_config.json` ships it (the
/// "v3" template with tool calling; the same text llama.cpp's `tests/test-chat-template.cpp`
/// carries). llama.cpp recognises it by `[INST]` and `[AVAILABLE_TOOLS]` as its built-in
/// `mistral-v3` format, which folds the system message into the first `[INST]`; real Jinja
/// would fold it into the last.
pub const MISTRAL_V03_CHAT_TEMPLATE: &str = include_str!("templates/mistral-v0.3.jinja");

/// Mistral v0.3's RoPE base (`rope_theta`).
const ROPE_FREQ_BASE: f32 = 1e6;
/// Mistral v0.3's RMSNorm epsilon.
const RMS_NORM_EPS: f32 = 1e-5;
/// Values per write while streaming a tensor: bounds memory for 7B-sized tensors.
const CHUNK: usize = 1 << 16;
/// The names [`TinyModelSpec::preset`] knows, for help texts.
pub const PRESETS: &[&str] = &["tiny", "1b", "mistral-7b"];
/// The model families [`TinyModelSpec::family`] knows, for help texts and for tests that go
/// through all of them.
pub const FAMILIES: &[&str] = &[
    "qwen2.5",
    "qwen3",
    "llama3.1",
    "hermes2pro",
    "mistral-v0.3",
    "deepseek-r1",
    "gpt-oss",
    "gemma3",
];

/// What a family changes in a model: its tokenizer's special tokens and settings and its chat
/// template. Everything else (architecture, vocabulary, weights) is the tiny llama's.
struct Family {
    name: &'static str,
    /// The real `tokenizer.chat_template`, byte for byte (`templates/SOURCES.md` says where each
    /// came from).
    template: &'static str,
    /// Every special string the template writes or the model emits, in the real vocabulary's id
    /// order, with the type the real GGUF gives it: control for the tokens that are
    /// `"special": true` in the Hugging Face tokenizer, user-defined for the added tokens that are
    /// not (Qwen's `<tool_call>` and `<think>`).
    tokens: &'static [(&'static str, TokenType)],
    bos: &'static str,
    eos: &'static str,
    add_bos: bool,
    /// SentencePiece's add_dummy_prefix: Mistral's tokenizer has it; the byte-level BPE families
    /// and Gemma's SentencePiece model do not, so text after a marker starts without a space.
    add_space_prefix: bool,
}

const C: TokenType = TokenType::Control;
const U: TokenType = TokenType::UserDefined;

/// The families, in [`FAMILIES`] order. Real ids differ (the real vocabularies have 128k to 262k
/// tokens); the tests look tokens up by text.
const FAMILY_TABLE: &[Family] = &[
    Family {
        name: "qwen2.5",
        template: include_str!("templates/qwen2.5.jinja"),
        tokens: &[
            ("<|endoftext|>", C),
            ("<|im_start|>", C),
            ("<|im_end|>", C),
            ("<tool_call>", U),
            ("</tool_call>", U),
        ],
        // The GGUF conversion sets BOS to <|endoftext|> but never adds it.
        bos: "<|endoftext|>",
        eos: "<|im_end|>",
        add_bos: false,
        add_space_prefix: false,
    },
    Family {
        name: "qwen3",
        template: include_str!("templates/qwen3.jinja"),
        tokens: &[
            ("<|endoftext|>", C),
            ("<|im_start|>", C),
            ("<|im_end|>", C),
            ("<tool_call>", U),
            ("</tool_call>", U),
            ("<tool_response>", U),
            ("</tool_response>", U),
            ("<think>", U),
            ("</think>", U),
        ],
        bos: "<|endoftext|>",
        eos: "<|im_end|>",
        add_bos: false,
        add_space_prefix: false,
    },
    Family {
        name: "llama3.1",
        template: include_str!("templates/llama3.1.jinja"),
        tokens: &[
            ("<|begin_of_text|>", C),
            ("<|end_of_text|>", C),
            ("<|start_header_id|>", C),
            ("<|end_header_id|>", C),
            ("<|eom_id|>", C),
            ("<|eot_id|>", C),
            ("<|python_tag|>", C),
        ],
        bos: "<|begin_of_text|>",
        eos: "<|eot_id|>",
        add_bos: true,
        add_space_prefix: false,
    },
    Family {
        // Llama 3's vocabulary with <|im_start|>/<|im_end|> in place of reserved tokens and the
        // tool markup as added tokens.
        name: "hermes2pro",
        template: include_str!("templates/hermes2pro.jinja"),
        tokens: &[
            ("<|begin_of_text|>", C),
            ("<|end_of_text|>", C),
            ("<|im_start|>", C),
            ("<|im_end|>", C),
            ("<tools>", U),
            ("</tools>", U),
            ("<tool_call>", U),
            ("</tool_call>", U),
            ("<tool_response>", U),
            ("</tool_response>", U),
            ("<|eot_id|>", C),
        ],
        bos: "<|begin_of_text|>",
        eos: "<|im_end|>",
        add_bos: true,
        add_space_prefix: false,
    },
    Family {
        // The default model: the base vocabulary has Mistral v0.3's tokens already.
        name: "mistral-v0.3",
        template: MISTRAL_V03_CHAT_TEMPLATE,
        tokens: &[],
        bos: "<s>",
        eos: "</s>",
        add_bos: true,
        add_space_prefix: true,
    },
    Family {
        // DeepSeek-R1-Distill-Qwen: Qwen's vocabulary with DeepSeek's fullwidth-bar markers;
        // <think> stays a non-special added token as in Qwen. The tool markers are single control
        // tokens as in DeepSeek-V3/R1, whose template this is (the distills, never trained on
        // tools, spell them in assorted ways).
        name: "deepseek-r1",
        template: include_str!("templates/deepseek-r1.jinja"),
        tokens: &[
            ("<｜end▁of▁sentence｜>", C),
            ("<｜User｜>", C),
            ("<｜Assistant｜>", C),
            ("<｜begin▁of▁sentence｜>", C),
            ("<think>", U),
            ("</think>", U),
            ("<｜tool▁calls▁begin｜>", C),
            ("<｜tool▁calls▁end｜>", C),
            ("<｜tool▁call▁begin｜>", C),
            ("<｜tool▁call▁end｜>", C),
            ("<｜tool▁outputs▁begin｜>", C),
            ("<｜tool▁outputs▁end｜>", C),
            ("<｜tool▁output▁begin｜>", C),
            ("<｜tool▁output▁end｜>", C),
            ("<｜tool▁sep｜>", C),
        ],
        bos: "<｜begin▁of▁sentence｜>",
        eos: "<｜end▁of▁sentence｜>",
        add_bos: true,
        add_space_prefix: false,
    },
    Family {
        // Harmony (o200k_harmony). All control in the file; llama.cpp's loader turns <|start|>,
        // <|message|>, <|channel|> and <|constrain|> into user-defined tokens, and <|end|> too
        // (dropping it from the end-of-generation set) because <|return|> and <|call|> exist.
        name: "gpt-oss",
        template: include_str!("templates/gpt-oss.jinja"),
        tokens: &[
            ("<|startoftext|>", C),
            ("<|endoftext|>", C),
            ("<|return|>", C),
            ("<|constrain|>", C),
            ("<|channel|>", C),
            ("<|start|>", C),
            ("<|end|>", C),
            ("<|message|>", C),
            ("<|call|>", C),
        ],
        bos: "<|startoftext|>",
        eos: "<|return|>",
        add_bos: false,
        add_space_prefix: false,
    },
    Family {
        name: "gemma3",
        template: include_str!("templates/gemma3.jinja"),
        tokens: &[
            ("<eos>", C),
            ("<bos>", C),
            ("<start_of_turn>", C),
            ("<end_of_turn>", C),
            ("<start_of_image>", C),
        ],
        bos: "<bos>",
        eos: "<eos>",
        add_bos: true,
        add_space_prefix: false,
    },
];

/// The shape of a llama-architecture model with random weights: tiny by default, real-sized with
/// the presets. The vocabulary is [`vocab::tiny_vocab`] grown to `n_vocab` by
/// [`vocab::sized_vocab`].
#[derive(Debug, Clone, PartialEq)]
pub struct TinyModelSpec {
    /// `general.name`, shown in llama.cpp's load log.
    pub name: String,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Hidden size.
    pub n_embd: u32,
    /// Feed-forward (SwiGLU) inner size.
    pub n_ff: u32,
    /// Attention heads; `n_embd / n_head` is the head size and must be even (RoPE rotates pairs).
    pub n_head: u32,
    /// Key/value heads (grouped-query attention); must divide `n_head`.
    pub n_head_kv: u32,
    /// Training context length (`llama.context_length`), the engine's upper bound for `n_ctx`.
    pub context_length: u32,
    /// Vocabulary size, from [`vocab::TINY_VOCAB_LEN`] (the default) to
    /// [`vocab::max_vocab_len`]; the sampler's cost per token grows with it.
    pub n_vocab: u32,
    /// Seed of the random weights; the same spec always gives the same bytes.
    pub seed: u64,
    /// Element type of the weight matrices, the token embeddings and the output included (llama.cpp
    /// reads Q4_0 embeddings through `get_rows`); norms are always F32, as in converted models.
    /// Q4_0 needs `n_embd` and `n_ff` to be multiples of 32.
    pub weight_type: TensorType,
    /// `tokenizer.chat_template`; `None` writes no template key (to test the fallback).
    pub chat_template: Option<String>,
    /// A model family's special tokens with their types ([`vocab::Vocab::with_extra_tokens`]):
    /// appended after the `n_vocab` tokens, or retyped where the text is a token already.
    pub extra_tokens: Vec<(String, TokenType)>,
    /// Text of the `tokenizer.ggml.bos_token_id` token; `None` is `<s>`.
    pub bos: Option<String>,
    /// Text of the `tokenizer.ggml.eos_token_id` token; `None` is `</s>`.
    pub eos: Option<String>,
    /// `tokenizer.ggml.add_bos_token`: whether llama.cpp prepends BOS when tokenizing.
    pub add_bos: bool,
    /// `tokenizer.ggml.add_space_prefix`: whether the first word (and each word after a special
    /// token) gets SentencePiece's `▁`.
    pub add_space_prefix: bool,
}

impl Default for TinyModelSpec {
    /// Generates in milliseconds and decodes in well under a millisecond per token.
    fn default() -> Self {
        Self {
            name: "leafresh-tiny-llama".to_string(),
            n_layer: 2,
            n_embd: 64,
            n_ff: 128,
            n_head: 4,
            n_head_kv: 2,
            context_length: 4096,
            n_vocab: TINY_VOCAB_LEN as u32,
            seed: 0x1eaf_5eed,
            weight_type: TensorType::F32,
            chat_template: Some(MISTRAL_V03_CHAT_TEMPLATE.to_string()),
            extra_tokens: Vec::new(),
            bos: None,
            eos: None,
            add_bos: true,
            add_space_prefix: true,
        }
    }
}

impl TinyModelSpec {
    /// Mistral-7B-Instruct-v0.3's shape with Q4_0 weights: 32 layers, 4096 wide, 14,336 FFN,
    /// 32 query and 8 key/value heads, 32k context and vocabulary. About 4.1 GB, like the real
    /// 4-bit files (Q4_K_M: 4.37 GB).
    pub fn mistral_7b() -> Self {
        Self {
            name: "leafresh-synthetic-mistral-7b".to_string(),
            n_layer: 32,
            n_embd: 4096,
            n_ff: 14_336,
            n_head: 32,
            n_head_kv: 8,
            context_length: 32_768,
            n_vocab: MISTRAL_VOCAB_LEN as u32,
            weight_type: TensorType::Q4_0,
            ..Self::default()
        }
    }

    /// A 1B-class llama shape (Llama-3.2-1B's layers with Mistral's vocabulary) with Q4_0
    /// weights: 16 layers, 2048 wide, 8192 FFN, 32 query and 8 key/value heads. About 0.62 GB;
    /// decodes several times faster than the 7B shape, for quicker benchmarks.
    pub fn llama_1b() -> Self {
        Self {
            name: "leafresh-synthetic-1b".to_string(),
            n_layer: 16,
            n_embd: 2048,
            n_ff: 8192,
            n_head: 32,
            n_head_kv: 8,
            context_length: 32_768,
            n_vocab: MISTRAL_VOCAB_LEN as u32,
            weight_type: TensorType::Q4_0,
            ..Self::default()
        }
    }

    /// The spec named `name` (one of [`PRESETS`]: `tiny` is the default).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::default()),
            "1b" => Some(Self::llama_1b()),
            "mistral-7b" => Some(Self::mistral_7b()),
            _ => None,
        }
    }

    /// The tiny model of the family `name` (one of [`FAMILIES`]): the default shape and seed with
    /// the family's chat template and tokenizer ([`Self::with_family`]). `mistral-v0.3` is the
    /// default model.
    pub fn family(name: &str) -> Option<Self> {
        Self::default().with_family(name)
    }

    /// This shape with the tokenizer and chat template of the family `name` (one of
    /// [`FAMILIES`]), so that a preset can take a family's tokenizer too.
    pub fn with_family(self, name: &str) -> Option<Self> {
        let family = FAMILY_TABLE.iter().find(|f| f.name == name)?;
        let special = |text: &str| (text != "<s>" && text != "</s>").then(|| text.to_string());
        Some(Self {
            chat_template: Some(family.template.to_string()),
            extra_tokens: family
                .tokens
                .iter()
                .map(|(text, ty)| (text.to_string(), *ty))
                .collect(),
            bos: special(family.bos),
            eos: special(family.eos),
            add_bos: family.add_bos,
            add_space_prefix: family.add_space_prefix,
            ..self
        })
    }

    /// Checks the constraints llama.cpp's llama architecture puts on the shape.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the field and the value.
    pub fn validate(&self) -> io::Result<()> {
        let fail = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        for (name, value) in [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_ff", self.n_ff),
            ("n_head", self.n_head),
            ("n_head_kv", self.n_head_kv),
            ("context_length", self.context_length),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head)
            || !(self.n_embd / self.n_head).is_multiple_of(2)
        {
            return fail(format!(
                "n_embd ({}) must be n_head ({}) times an even head size",
                self.n_embd, self.n_head
            ));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return fail(format!(
                "n_head_kv ({}) must divide n_head ({})",
                self.n_head_kv, self.n_head
            ));
        }
        // Every matrix row is n_embd or n_ff long and must be whole blocks.
        let block = self.weight_type.block_len();
        for (name, value) in [("n_embd", self.n_embd), ("n_ff", self.n_ff)] {
            if !u64::from(value).is_multiple_of(block) {
                return fail(format!(
                    "{name} ({value}) must be a multiple of {block} for {:?} weights",
                    self.weight_type
                ));
            }
        }
        let max_vocab = vocab::max_vocab_len();
        if !(TINY_VOCAB_LEN..=max_vocab).contains(&(self.n_vocab as usize)) {
            return fail(format!(
                "n_vocab ({}) must be between {TINY_VOCAB_LEN} and {max_vocab}",
                self.n_vocab
            ));
        }
        Ok(())
    }

    fn head_dim(&self) -> u32 {
        self.n_embd / self.n_head
    }

    /// Describes the whole file: metadata and tensor shapes, no data yet.
    fn describe(&self) -> io::Result<GgufWriter> {
        self.validate()?;
        let vocab = sized_vocab(self.n_vocab as usize)?.with_extra_tokens(&self.extra_tokens)?;
        let id = |text: &Option<String>, default: u32| match text {
            None => Ok(default),
            Some(text) => vocab.id_of(text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("special token {text:?} is not in the vocabulary"),
                )
            }),
        };
        let (bos_id, eos_id) = (id(&self.bos, vocab::BOS_ID)?, id(&self.eos, vocab::EOS_ID)?);
        let n_vocab = vocab.len() as u64;
        let (embd, ff) = (u64::from(self.n_embd), u64::from(self.n_ff));
        let kv = u64::from(self.head_dim() * self.n_head_kv);
        let file_type = match self.weight_type {
            TensorType::F32 => 0,  // LLAMA_FTYPE_ALL_F32
            TensorType::F16 => 1,  // LLAMA_FTYPE_MOSTLY_F16
            TensorType::Q4_0 => 2, // LLAMA_FTYPE_MOSTLY_Q4_0
        };

        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama")
            .add_string("general.name", self.name.as_str())
            .add_u32("general.file_type", file_type)
            .add_u32("llama.context_length", self.context_length)
            .add_u32("llama.embedding_length", self.n_embd)
            .add_u32("llama.block_count", self.n_layer)
            .add_u32("llama.feed_forward_length", self.n_ff)
            .add_u32("llama.attention.head_count", self.n_head)
            .add_u32("llama.attention.head_count_kv", self.n_head_kv)
            .add_u32("llama.rope.dimension_count", self.head_dim())
            .add_f32("llama.rope.freq_base", ROPE_FREQ_BASE)
            .add_f32("llama.attention.layer_norm_rms_epsilon", RMS_NORM_EPS)
            .add_u32("llama.vocab_size", n_vocab as u32)
            .add_string("tokenizer.ggml.model", "llama")
            .add_string_array("tokenizer.ggml.tokens", vocab.tokens().to_vec())
            .add_f32_array("tokenizer.ggml.scores", vocab.scores().to_vec())
            .add_i32_array("tokenizer.ggml.token_type", vocab.type_codes())
            .add_u32("tokenizer.ggml.bos_token_id", bos_id)
            .add_u32("tokenizer.ggml.eos_token_id", eos_id)
            .add_u32("tokenizer.ggml.unknown_token_id", vocab::UNK_ID)
            .add_bool("tokenizer.ggml.add_bos_token", self.add_bos)
            .add_bool("tokenizer.ggml.add_eos_token", false)
            // SentencePiece's add_dummy_prefix, which Mistral's tokenizer.model sets.
            .add_bool("tokenizer.ggml.add_space_prefix", self.add_space_prefix);
        if let Some(template) = &self.chat_template {
            w.add_string("tokenizer.chat_template", template.as_str());
        }

        let ty = self.weight_type;
        w.add_tensor("token_embd.weight", &[embd, n_vocab], ty);
        for i in 0..self.n_layer {
            let blk = |name: &str| format!("blk.{i}.{name}.weight");
            w.add_tensor(blk("attn_norm"), &[embd], TensorType::F32)
                .add_tensor(blk("attn_q"), &[embd, embd], ty)
                .add_tensor(blk("attn_k"), &[embd, kv], ty)
                .add_tensor(blk("attn_v"), &[embd, kv], ty)
                .add_tensor(blk("attn_output"), &[embd, embd], ty)
                .add_tensor(blk("ffn_norm"), &[embd], TensorType::F32)
                .add_tensor(blk("ffn_gate"), &[embd, ff], ty)
                .add_tensor(blk("ffn_up"), &[embd, ff], ty)
                .add_tensor(blk("ffn_down"), &[ff, embd], ty);
        }
        w.add_tensor("output_norm.weight", &[embd], TensorType::F32)
            .add_tensor("output.weight", &[embd, n_vocab], ty);
        Ok(w)
    }
}

/// Writes the model described by `spec` to `path`.
///
/// # Errors
///
/// `InvalidInput` for a shape llama.cpp would reject (see [`TinyModelSpec::validate`]); I/O
/// errors creating or writing the file (a partly written file is removed).
pub fn write_tiny_llama(path: &Path, spec: &TinyModelSpec) -> io::Result<()> {
    let seed = spec.seed;
    spec.describe()?
        .write_file(path, |tensor, data| fill_tensor(seed, tensor, data))
        .map(drop)
}

/// Writes the model described by `spec` to `out` (e.g. a `Vec<u8>`) and gives `out` back.
///
/// # Errors
///
/// As [`write_tiny_llama`].
pub fn write_tiny_llama_to<W: Write>(out: W, spec: &TinyModelSpec) -> io::Result<W> {
    let seed = spec.seed;
    spec.describe()?
        .write(out, |tensor, data| fill_tensor(seed, tensor, data))
}

/// Norm weights are 1 (RMSNorm passes activations through unchanged); everything else is uniform
/// noise of amplitude 0.4/sqrt(fan_in), i.e. ±0.05 at n_embd 64, so activations keep their scale
/// at any width and logits stay small and finite.
fn fill_tensor(seed: u64, tensor: &TensorInfo, data: &mut TensorData<'_>) -> io::Result<()> {
    let n = tensor.n_elements() as usize;
    if tensor.name.ends_with("norm.weight") {
        return data.write_f32(&vec![1.0; n]);
    }
    let amplitude = 0.4 / (tensor.dims[0] as f32).sqrt();
    let mut rng = SplitMix64::for_stream(seed, &tensor.name);
    if tensor.ty == TensorType::Q4_0 {
        return fill_q4_0(&mut rng, amplitude, data);
    }
    let mut chunk = Vec::with_capacity(CHUNK.min(n));
    let mut left = n;
    while left > 0 {
        chunk.clear();
        chunk.extend((0..CHUNK.min(left)).map(|_| rng.uniform(amplitude)));
        data.write_f32(&chunk)?;
        left -= chunk.len();
    }
    Ok(())
}

/// Random Q4_0 blocks straight into the file: quantizing f32 noise would give the same kind of
/// data at several times the cost, which adds up over 7 billion weights.
fn fill_q4_0(rng: &mut SplitMix64, amplitude: f32, data: &mut TensorData<'_>) -> io::Result<()> {
    const BLOCKS_PER_CHUNK: u64 = 1 << 12;
    let block_len = TensorType::Q4_0.block_len();
    let mut chunk = Vec::with_capacity(BLOCKS_PER_CHUNK as usize * Q4_0_BLOCK_BYTES);
    while data.remaining() > 0 {
        chunk.clear();
        for _ in 0..BLOCKS_PER_CHUNK.min(data.remaining() / block_len) {
            random_q4_0_block(rng, amplitude, &mut chunk);
        }
        data.write_encoded(&chunk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_valid_and_deterministic() {
        let spec = TinyModelSpec::default();
        let a = write_tiny_llama_to(Vec::new(), &spec).unwrap();
        let b = write_tiny_llama_to(Vec::new(), &spec).unwrap();
        assert_eq!(a, b);
        let other_seed = TinyModelSpec {
            seed: 1,
            ..spec.clone()
        };
        assert_ne!(a, write_tiny_llama_to(Vec::new(), &other_seed).unwrap());
        assert_eq!(&a[..4], b"GGUF");
    }

    #[test]
    fn f16_weights_halve_the_matrices() {
        let f32_len = write_tiny_llama_to(Vec::new(), &TinyModelSpec::default())
            .unwrap()
            .len();
        let f16 = TinyModelSpec {
            weight_type: TensorType::F16,
            ..TinyModelSpec::default()
        };
        let f16_len = write_tiny_llama_to(Vec::new(), &f16).unwrap().len();
        assert!(f16_len < f32_len * 6 / 10, "{f16_len} vs {f32_len}");
    }

    #[test]
    fn q4_0_weights_take_18_bytes_per_32_and_keep_norms_f32() {
        let f32_spec = TinyModelSpec::default();
        let q4 = TinyModelSpec {
            weight_type: TensorType::Q4_0,
            ..TinyModelSpec::default()
        };
        let w = q4.describe().unwrap();
        let matrices: u64 = w
            .tensors()
            .iter()
            .filter(|t| t.ty == TensorType::Q4_0)
            .map(|t| t.n_elements())
            .sum();
        let norms = w.tensors().iter().filter(|t| t.ty == TensorType::F32);
        assert_eq!(norms.count(), 2 * 2 + 1);
        let bytes: u64 = w.tensors().iter().map(|t| t.n_bytes()).sum();
        assert_eq!(bytes, matrices / 32 * 18 + 5 * 64 * 4);

        let a = write_tiny_llama_to(Vec::new(), &q4).unwrap();
        assert_eq!(a, write_tiny_llama_to(Vec::new(), &q4).unwrap());
        let f32_len = write_tiny_llama_to(Vec::new(), &f32_spec).unwrap().len();
        assert!(a.len() < f32_len / 5, "{} vs {f32_len}", a.len());
    }

    #[test]
    fn presets_have_real_shapes_and_sizes() {
        let size = |spec: &TinyModelSpec| -> u64 {
            let w = spec.describe().unwrap();
            w.tensors().iter().map(|t| t.n_bytes()).sum()
        };
        let mistral = TinyModelSpec::preset("mistral-7b").unwrap();
        assert_eq!(mistral, TinyModelSpec::mistral_7b());
        assert_eq!(
            (mistral.n_layer, mistral.n_embd, mistral.n_ff),
            (32, 4096, 14_336)
        );
        assert_eq!(mistral.n_vocab, 32_768);
        // 7.25 billion weights at 4.5 bits: as many bytes per token as a real 4-bit file.
        let gb = size(&mistral) as f64 / 1e9;
        assert!((4.0..4.15).contains(&gb), "{gb} GB");
        let gb = size(&TinyModelSpec::llama_1b()) as f64 / 1e9;
        assert!((0.6..0.8).contains(&gb), "{gb} GB");
        assert_eq!(
            TinyModelSpec::preset("tiny"),
            Some(TinyModelSpec::default())
        );
        assert_eq!(TinyModelSpec::preset("13b"), None);
        for name in PRESETS {
            TinyModelSpec::preset(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn rejects_shapes_llama_cpp_cannot_load() {
        let bad = [
            TinyModelSpec {
                n_head: 3,
                ..TinyModelSpec::default()
            },
            TinyModelSpec {
                n_head_kv: 3,
                ..TinyModelSpec::default()
            },
            TinyModelSpec {
                n_embd: 36, // head size 9: odd, RoPE cannot rotate pairs
                ..TinyModelSpec::default()
            },
            TinyModelSpec {
                n_layer: 0,
                ..TinyModelSpec::default()
            },
            TinyModelSpec {
                n_embd: 48, // not whole Q4_0 blocks of 32
                n_head: 4,
                weight_type: TensorType::Q4_0,
                ..TinyModelSpec::default()
            },
            TinyModelSpec {
                n_vocab: 1000,
                ..TinyModelSpec::default()
            },
        ];
        for spec in bad {
            let err = write_tiny_llama_to(Vec::new(), &spec).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{spec:?}");
        }
    }

    /// FNV-1a, 64 bits: enough to notice any changed byte without a hashing dependency.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn default_model_bytes_are_unchanged_by_the_families() {
        // Measured on the writer before families existed: tests all over the project depend on
        // these exact bytes (token ids, template, metadata).
        let bytes = write_tiny_llama_to(Vec::new(), &TinyModelSpec::default()).unwrap();
        assert_eq!(bytes.len(), 6_856_768);
        assert_eq!(fnv1a(&bytes), 0xe940_1cf3_58c9_a3dc);
        assert_eq!(
            TinyModelSpec::family("mistral-v0.3"),
            Some(TinyModelSpec::default())
        );
    }

    #[test]
    fn every_family_writes_with_its_tokens_after_the_base_vocabulary() {
        assert_eq!(
            FAMILIES,
            FAMILY_TABLE.iter().map(|f| f.name).collect::<Vec<_>>()
        );
        let base = vocab::tiny_vocab();
        for name in FAMILIES {
            let spec = TinyModelSpec::family(name).unwrap();
            let w = spec.describe().unwrap();
            let bytes = write_tiny_llama_to(Vec::new(), &spec).unwrap();
            assert_eq!(&bytes[..4], b"GGUF", "{name}");
            let v = base.clone().with_extra_tokens(&spec.extra_tokens).unwrap();
            assert_eq!(v.tokens()[..TINY_VOCAB_LEN], base.tokens()[..], "{name}");
            for (text, ty) in &spec.extra_tokens {
                let id = v.id_of(text).unwrap() as usize;
                assert_eq!(v.types()[id], *ty, "{name} {text}");
            }
            let embd = &w.tensors()[0];
            assert_eq!(embd.dims[1], v.len() as u64, "{name}");
            let template = spec.chat_template.as_deref().unwrap();
            let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(has(template.as_bytes()), "{name}");
        }
        assert_eq!(TinyModelSpec::family("chatml"), None);
    }

    #[test]
    fn families_take_their_markers_types_and_settings() {
        let qwen3 = TinyModelSpec::family("qwen3").unwrap();
        assert!(!qwen3.add_bos && !qwen3.add_space_prefix);
        assert_eq!(qwen3.bos.as_deref(), Some("<|endoftext|>"));
        assert_eq!(qwen3.eos.as_deref(), Some("<|im_end|>"));
        let ty = |spec: &TinyModelSpec, text: &str| {
            spec.extra_tokens
                .iter()
                .find(|(t, _)| t == text)
                .map(|(_, ty)| *ty)
        };
        assert_eq!(ty(&qwen3, "<|im_end|>"), Some(TokenType::Control));
        assert_eq!(ty(&qwen3, "<think>"), Some(TokenType::UserDefined));
        assert_eq!(ty(&qwen3, "<tool_call>"), Some(TokenType::UserDefined));
        let gpt_oss = TinyModelSpec::family("gpt-oss").unwrap();
        assert_eq!(ty(&gpt_oss, "<|start|>"), Some(TokenType::Control));
        let llama = TinyModelSpec::family("llama3.1").unwrap();
        assert!(llama.add_bos);
        assert_eq!(ty(&llama, "<|python_tag|>"), Some(TokenType::Control));
        // A preset's shape keeps the family's tokenizer.
        let big = TinyModelSpec::llama_1b().with_family("gemma3").unwrap();
        assert_eq!((big.n_layer, big.bos.as_deref()), (16, Some("<bos>")));
        // A special token that is not in the vocabulary cannot be BOS.
        let bad = TinyModelSpec {
            bos: Some("<|nope|>".into()),
            ..TinyModelSpec::default()
        };
        let err = write_tiny_llama_to(Vec::new(), &bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn no_template_means_no_template_key() {
        let with = write_tiny_llama_to(Vec::new(), &TinyModelSpec::default()).unwrap();
        let without = TinyModelSpec {
            chat_template: None,
            ..TinyModelSpec::default()
        };
        let without = write_tiny_llama_to(Vec::new(), &without).unwrap();
        let has_key = |bytes: &[u8]| {
            bytes
                .windows(b"tokenizer.chat_template".len())
                .any(|w| w == b"tokenizer.chat_template")
        };
        assert!(has_key(&with));
        assert!(!has_key(&without));
    }
}
