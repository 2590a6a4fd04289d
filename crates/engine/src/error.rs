//! What can go wrong in an engine, from opening the model to a failed decode step, and which side
//! caused it (the client, a busy server, or a fault).

use std::path::PathBuf;

/// What can go wrong in the engine, from opening the model to a failed decode step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {}", path.display())]
    ModelMissing { path: PathBuf },
    #[error("{} is not a usable GGUF model: {why}", path.display())]
    ModelNotGguf { path: PathBuf, why: String },
    #[error(
        "llama.cpp could not load {} (truncated download, unsupported architecture, or not \
         enough memory; see the llama.cpp messages above)",
        path.display()
    )]
    ModelRejected { path: PathBuf },
    #[error("llama.cpp backend failed to start: {0}")]
    Backend(String),
    #[error("could not create the llama.cpp context: {0}")]
    Context(String),
    /// Something the engine needs from the system (a thread, an HTTP client) could not be had.
    #[error("the engine could not start: {0}")]
    Start(String),
    #[error(
        "the prompt is {prompt} tokens long but the context window is {context} tokens; \
         there is no room left to generate"
    )]
    PromptTooLong { prompt: usize, context: usize },
    /// Found without tokenizing the whole prompt: its text alone needs more tokens than fit.
    #[error(
        "the prompt needs at least {at_least} tokens ({bytes} bytes of text, at most \
         {max_token_bytes} bytes per token) but the context window is {context} tokens"
    )]
    PromptOverContext {
        at_least: usize,
        bytes: usize,
        max_token_bytes: usize,
        context: usize,
    },
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    /// A JSON schema the client sent (`response_format`) that the engine cannot enforce.
    #[error("the JSON schema could not be turned into a grammar (unsupported or invalid schema)")]
    InvalidSchema(String),
    /// A function's `parameters` schema (`tools`) that the engine cannot enforce.
    #[error("a tool's parameters schema could not be turned into a grammar (unsupported or invalid schema)")]
    InvalidToolSchema(String),
    /// A call was required, and the model's chat template has no tool-call tokens.
    #[error("this model's chat template has no tool-call tokens: it cannot be made to call a function (use tool_choice \"auto\" or \"none\")")]
    ToolsUnsupported,
    /// The chat template could not be applied, or not followed (a server fault).
    #[error("chat template: {0}")]
    Template(String),
    /// The sampler failed: a grammar that no longer compiles on the engine thread, or one that
    /// rejected the token it let through. Client grammars are checked before they get here, so
    /// this is always a server fault.
    #[error("sampling failed: {0}")]
    Sampling(String),
    #[error("the sampler chose no token")]
    NoTokenSampled,
    #[error("the server is busy; try again shortly")]
    Overloaded,
    #[error("the inference engine has stopped")]
    Stopped,
    #[error("waited {seconds} s for a free slot; the server is busy, try again shortly")]
    QueueTimeout { seconds: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    /// The upstream engine cannot be reached, refused the connection, timed out before answering,
    /// or says it is busy: worth a retry later.
    #[error("the upstream engine is unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream engine answered wrongly: an error status that is not the request's fault,
    /// something that is not a chat completion stream, or a stream that broke off.
    #[error("the upstream engine failed: {0}")]
    UpstreamFailed(String),
    /// The upstream engine refused the request itself (a 4xx such as a prompt over its context).
    #[error("the upstream engine refused the request ({status}): {message}")]
    UpstreamRejected { status: u16, message: String },
    /// A bug: preparing a request panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose the error is, which decides what a caller does with it; the HTTP layer turns each kind
/// into one status (`http::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input caused it (HTTP 400).
    Client,
    /// The server is busy or going away: worth a retry later (HTTP 503).
    Unavailable,
    /// Another server (the upstream engine) failed, not this one (HTTP 502).
    BadGateway,
    /// A fault of this server (HTTP 500); its detail is logged, not shown.
    Server,
}

impl EngineError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::PromptTooLong { .. }
            | EngineError::PromptOverContext { .. }
            | EngineError::InvalidPrompt(_)
            | EngineError::InvalidSchema(_)
            | EngineError::InvalidToolSchema(_)
            | EngineError::ToolsUnsupported
            | EngineError::UpstreamRejected { .. } => ErrorKind::Client,
            EngineError::Overloaded
            | EngineError::Stopped
            | EngineError::QueueTimeout { .. }
            | EngineError::ShuttingDown
            | EngineError::UpstreamUnavailable(_) => ErrorKind::Unavailable,
            EngineError::UpstreamFailed(_) => ErrorKind::BadGateway,
            EngineError::ModelMissing { .. }
            | EngineError::ModelNotGguf { .. }
            | EngineError::ModelRejected { .. }
            | EngineError::Backend(_)
            | EngineError::Context(_)
            | EngineError::Start(_)
            | EngineError::Template(_)
            | EngineError::Sampling(_)
            | EngineError::NoTokenSampled
            | EngineError::Decode(_)
            | EngineError::Internal(_) => ErrorKind::Server,
        }
    }
}
