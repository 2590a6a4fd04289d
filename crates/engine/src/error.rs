//! What can go wrong in an engine, and which side caused it (the client, a busy server, another
//! server, or a fault of this one). Each engine has its own error ([`GgufError`] for the model
//! file both open, [`LlamaError`], [`UpstreamError`]); [`EngineError`] wraps them with what every
//! engine shares, and [`EngineError::kind`] is what a caller decides on.

use crate::{GgufError, LlamaError, UpstreamError};

/// What can go wrong in an engine: its own failures (opening the model file, llama.cpp, the
/// upstream), and what every engine can refuse or run into.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Llama(#[from] LlamaError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
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
    /// A fill-in-the-middle prompt (`suffix`) for a model without FIM tokens.
    #[error("this model has no fill-in-the-middle tokens: `suffix` cannot be used with it")]
    InfillUnsupported,
    /// A call was required, and the model's chat template has no tool-call tokens.
    #[error("this model's chat template has no tool-call tokens: it cannot be made to call a function (use tool_choice \"auto\" or \"none\")")]
    ToolsUnsupported,
    /// The chat template could not be applied, or not followed (a server fault).
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template refused the conversation itself (its `raise_exception`: roles that do not
    /// alternate, a system message where it takes none): the client's request, told why.
    #[error("the model's chat template refused the conversation: {0}")]
    TemplateRefused(String),
    #[error("the server is busy; try again shortly")]
    Overloaded,
    #[error("the inference engine has stopped")]
    Stopped,
    /// The engine cannot serve yet (an upstream not reached since the start: what it serves and
    /// how to count for it are not known).
    #[error("the inference engine is not ready yet; try again shortly")]
    NotReady,
    #[error("waited {seconds} s for a free slot; the server is busy, try again shortly")]
    QueueTimeout { seconds: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
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
            EngineError::Upstream(e) => e.kind(),
            EngineError::PromptTooLong { .. }
            | EngineError::PromptOverContext { .. }
            | EngineError::InvalidPrompt(_)
            | EngineError::InvalidSchema(_)
            | EngineError::InvalidToolSchema(_)
            | EngineError::TemplateRefused(_)
            | EngineError::InfillUnsupported
            | EngineError::ToolsUnsupported => ErrorKind::Client,
            EngineError::Overloaded
            | EngineError::Stopped
            | EngineError::NotReady
            | EngineError::QueueTimeout { .. }
            | EngineError::ShuttingDown => ErrorKind::Unavailable,
            EngineError::Gguf(_)
            | EngineError::Llama(_)
            | EngineError::Start(_)
            | EngineError::Template(_)
            | EngineError::Internal(_) => ErrorKind::Server,
        }
    }
}
