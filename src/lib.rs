//! leafresh-llm: serves a quantized LLM through an embedded llama.cpp, for the Leafresh
//! eco-challenge chatbot (its streaming recommendation API) and for OpenAI-compatible clients.
//!
//! Rooms: `config` (settings), `engine` (the engine seam, and llama.cpp behind it), `leafresh` (the
//! chatbot domain, pure Rust), `http` (thin actix handlers). The test scaffolding is outside the
//! shipped library, in `crates/`: `leafresh-testmodel` (GGUF files for tests and benchmarks) and
//! `leafresh-fuzz-checks` (the properties the fuzz targets in `fuzz/` check).

// The one `unsafe` block of the project (quantizing test models) lives in crates/testmodel.
#![forbid(unsafe_code)]

pub mod chat_completions;
pub mod config;
/// The engine seam and its engines, a crate of their own (`crates/engine`).
pub use leafresh_engine as engine;
pub mod engines;
pub mod http;
pub mod leafresh;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
#[cfg(test)]
mod test_support;
