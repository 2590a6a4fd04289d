//! Tiny GGUF models for tests: a generic GGUF v3 writer ([`gguf`]) with Q4_0 blocks
//! ([`quant`]), a SentencePiece vocabulary with real tokenizer metadata ([`vocab`]), and
//! llama-architecture models with random weights shaped like Mistral-7B-Instruct-v0.3 but small
//! enough to generate and decode in milliseconds, or, for benchmarks, at full 7B/1B size.
//! [`TinyModelSpec::family`] gives the same models the chat template, special tokens and
//! BOS/EOS settings of other model families ([`FAMILIES`]: Qwen, Llama 3.1, DeepSeek-R1,
//! gpt-oss...), for tests of tool calling and reasoning per family.
//!
//! Model weights cannot be downloaded where the tests run, so every test that needs llama.cpp
//! uses a file written here. `examples/make_test_model.rs` writes them from the command line
//! (`scripts/make-test-model`). A crate of its own so that none of it ships in the service.

pub mod gguf;
mod llama;
pub mod quant;
mod requantize;
mod rng;
pub mod vocab;

pub use gguf::{GgufWriter, MetaValue, TensorData, TensorInfo, TensorType};
pub use llama::{
    write_tiny_llama, write_tiny_llama_to, TinyModelSpec, FAMILIES, MISTRAL_V03_CHAT_TEMPLATE,
    PRESETS,
};
pub use requantize::{quantize_with_llama_cpp, QuantMix};
pub use vocab::{MARKUP_TEMPLATE, USER_DEFINED_TOKENS};
