//! Tiny llama-architecture models: Mistral-7B-Instruct-v0.3's metadata and tokenizer layout,
//! small shapes, random weights. The engine runs them exactly like the real model, only fast.

use std::io::{self, Write};
use std::path::Path;

use super::gguf::{GgufWriter, TensorData, TensorInfo, TensorType};
use super::rng::SplitMix64;
use super::vocab::{self, tiny_vocab};

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

/// The shape of a tiny llama model. The vocabulary is always [`vocab::tiny_vocab`].
#[derive(Debug, Clone, PartialEq)]
pub struct TinyModelSpec {
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
    /// Seed of the random weights; the same spec always gives the same bytes.
    pub seed: u64,
    /// Element type of the weight matrices; norms are always F32, as in converted models.
    pub weight_type: TensorType,
    /// `tokenizer.chat_template`; `None` writes no template key (to test the fallback).
    pub chat_template: Option<String>,
}

impl Default for TinyModelSpec {
    /// Generates in milliseconds and decodes in well under a millisecond per token.
    fn default() -> Self {
        Self {
            n_layer: 2,
            n_embd: 64,
            n_ff: 128,
            n_head: 4,
            n_head_kv: 2,
            context_length: 4096,
            seed: 0x1eaf_5eed,
            weight_type: TensorType::F32,
            chat_template: Some(MISTRAL_V03_CHAT_TEMPLATE.to_string()),
        }
    }
}

impl TinyModelSpec {
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
        Ok(())
    }

    fn head_dim(&self) -> u32 {
        self.n_embd / self.n_head
    }

    /// Describes the whole file: metadata and tensor shapes, no data yet.
    fn describe(&self) -> io::Result<GgufWriter> {
        self.validate()?;
        let vocab = tiny_vocab();
        let n_vocab = vocab.len() as u64;
        let (embd, ff) = (u64::from(self.n_embd), u64::from(self.n_ff));
        let kv = u64::from(self.head_dim() * self.n_head_kv);
        let file_type = match self.weight_type {
            TensorType::F32 => 0, // LLAMA_FTYPE_ALL_F32
            TensorType::F16 => 1, // LLAMA_FTYPE_MOSTLY_F16
        };

        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama")
            .add_string("general.name", "leafresh-tiny-llama")
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
