//! Tiny llama-architecture models: Mistral-7B-Instruct-v0.3's metadata and tokenizer layout,
//! small shapes, random weights. The engine runs them exactly like the real model, only fast.
//!
//! The same writer makes full-size synthetic models for benchmarks ([`TinyModelSpec::mistral_7b`],
//! [`TinyModelSpec::llama_1b`]): real shapes, a 32,768-token vocabulary and 4-bit Q4_0 weights,
//! so llama.cpp reads as many bytes per token as with the real file. Decoding speed does not
//! depend on the weight values, only the text does (random weights write gibberish).

use std::io::{self, Write};
use std::path::Path;

use super::gguf::{GgufWriter, TensorData, TensorInfo, TensorType};
use super::quant::{random_q4_0_block, Q4_0_BLOCK_BYTES};
use super::rng::SplitMix64;
use super::vocab::{self, sized_vocab, MISTRAL_VOCAB_LEN, TINY_VOCAB_LEN};

/// The chat template of Mistral-7B-Instruct-v0.3 as its `tokenizer_config.json` ships it (the
/// "v3" template with tool calling; the same text llama.cpp's `tests/test-chat-template.cpp`
/// carries). llama.cpp recognises it by `[INST]` and `[AVAILABLE_TOOLS]` as its built-in
/// `mistral-v3` format, which folds the system message into the first `[INST]`; real Jinja
/// would fold it into the last.
pub const MISTRAL_V03_CHAT_TEMPLATE: &str = include_str!("mistral-7b-instruct-v0.3.jinja");

/// Mistral v0.3's RoPE base (`rope_theta`).
const ROPE_FREQ_BASE: f32 = 1e6;
/// Mistral v0.3's RMSNorm epsilon.
const RMS_NORM_EPS: f32 = 1e-5;
/// Values per write while streaming a tensor: bounds memory for 7B-sized tensors.
const CHUNK: usize = 1 << 16;
/// The names [`TinyModelSpec::preset`] knows, for help texts.
pub const PRESETS: &[&str] = &["tiny", "1b", "mistral-7b"];

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
        let vocab = sized_vocab(self.n_vocab as usize)?;
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
            .add_u32("tokenizer.ggml.bos_token_id", vocab::BOS_ID)
            .add_u32("tokenizer.ggml.eos_token_id", vocab::EOS_ID)
            .add_u32("tokenizer.ggml.unknown_token_id", vocab::UNK_ID)
            .add_bool("tokenizer.ggml.add_bos_token", true)
            .add_bool("tokenizer.ggml.add_eos_token", false)
            // SentencePiece's add_dummy_prefix, which Mistral's tokenizer.model sets.
            .add_bool("tokenizer.ggml.add_space_prefix", true);
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
