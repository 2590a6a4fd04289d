//! What can go wrong in llama.cpp once the model is loaded: every one a fault of this server.

/// A failure of the embedded engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlamaError {
    #[error("could not create the llama.cpp context: {0}")]
    Context(String),
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    /// The sampler failed: a grammar that no longer compiles on the engine thread, or one that
    /// rejected the token it let through. Client grammars are checked before they get here, so
    /// this is always a server fault.
    #[error("sampling failed: {0}")]
    Sampling(String),
    #[error("the sampler chose no token")]
    NoTokenSampled,
}
