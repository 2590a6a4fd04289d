//! The engine seam: the one way every API reaches text generation, and nothing that knows HTTP
//! or Leafresh.
//!
//! [`Engine`] is what the handlers and the Leafresh recommender hold (`Arc<dyn Engine>`).
//! [`llama::LlamaEngine`] runs llama.cpp in this process; [`upstream::UpstreamEngine`] delegates
//! to an OpenAI-compatible engine over HTTP (vLLM, llama-server, another instance of this
//! service). The rest of this crate is what every engine shares: the request and its events
//! ([`generation`]), chat messages ([`chat`]), errors and their [`ErrorKind`], the token budget
//! ([`budget`]) and fitting a conversation to it ([`fit`]), tool calls as they stream
//! ([`tool_calls`]), the local [`tokenizer`] (a GGUF's vocabulary and chat template) and the
//! threads a request's CPU work runs on (`prepare`). The HTTP layer above maps an error's kind to
//! a status in one place.

pub mod budget;
pub mod chat;
mod error;
pub mod fit;
pub mod generation;
pub mod llama;
pub(crate) mod prepare;
pub mod reasoning;
pub mod tokenizer;
pub mod tool_calls;
pub mod upstream;

use futures_util::future::BoxFuture;

pub use chat::{ChatMessage, Role, ToolCall};
pub use error::{EngineError, ErrorKind};
pub use generation::{
    CountedPrompt, EngineStats, EventSender, FinishReason, Generation, GenerationEvent,
    GenerationEvents, GenerationSummary, OutputConstraint, RawPrompt, SamplingParams, StepTimes,
    TokenLogprob, ToolChoice, ToolFunction, Tools, TopLogprob, WarmUp,
};
pub use llama::LlamaError;
pub use tokenizer::gguf::GgufError;
pub use upstream::UpstreamError;

/// A text-generation engine. Methods that may do CPU work (tokenizing, compiling a grammar) or
/// wait on the network return futures and never block the caller's async worker.
pub trait Engine: Send + Sync {
    /// Checks and queues a generation: renders and counts its prompt, sizes its answer to the
    /// context window, prepares its constraint. Refuses at once a prompt that does not fit, an
    /// invalid constraint, a full queue or a stopped engine.
    fn submit(
        &self,
        generation: Generation,
    ) -> BoxFuture<'_, Result<GenerationEvents, EngineError>>;

    /// `n` answers to the same generation (OpenAI's `n`), each sampled on its own: choice `i`
    /// takes seed `seed + i` when the request has one. An engine that can shares the prompt's
    /// computation between them; this default submits `n` generations.
    fn submit_choices(
        &self,
        generation: Generation,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<GenerationEvents>, EngineError>> {
        Box::pin(async move {
            let mut choices = Vec::with_capacity(n);
            for choice in generation.choices(n) {
                choices.push(self.submit(choice).await?);
            }
            Ok(choices)
        })
    }

    /// The prompt tokens `messages` (with `tools` offered) take for `model` (`None`: the default
    /// one), rendered as [`Engine::submit`] would; given back in [`Generation::counted`] of a
    /// generation for the same model, the prompt is not rendered again. For contents too long
    /// for any prompt to fit the context window, an engine may answer a lower bound above the
    /// window instead of counting them all.
    fn count_tokens(
        &self,
        model: Option<&str>,
        messages: Vec<ChatMessage>,
        tools: Option<Tools>,
    ) -> BoxFuture<'_, Result<CountedPrompt, EngineError>>;

    /// The context window of one request to `model` (`None`: the default one): its prompt plus
    /// its new tokens must fit in it.
    fn context_window(&self, model: Option<&str>) -> usize;

    /// The model ids clients may name (`/v1/models`), the default first.
    fn model_ids(&self) -> Vec<String>;

    /// Load and liveness, for `/health` and `/metrics`.
    fn stats(&self) -> EngineStats;

    /// Ends every queued and running request with `error` (a stop past its grace period).
    fn abort_all(&self, error: EngineError);

    /// Readies the prompt cache with the prompt of `messages` before the first request, so that
    /// requests sharing its beginning (the instruction every Leafresh prompt starts with) do not
    /// compute it. Engines without a prompt cache of their own skip it.
    fn warm(&self, messages: Vec<ChatMessage>) -> BoxFuture<'_, Result<WarmUp, EngineError>> {
        let _ = messages;
        Box::pin(async { Ok(WarmUp::Skipped) })
    }
}
