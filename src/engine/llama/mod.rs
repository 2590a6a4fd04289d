//! The embedded engine: llama.cpp in this process. `model` opens the GGUF and turns conversations
//! into prompt tokens (`template` keeps client text from becoming control tokens); `scheduler`
//! owns the one inference thread; `sampling` builds each request's sampler chain.
//!
//! [`LlamaEngine::submit`] does a request's CPU work (rendering, tokenizing, compiling its
//! grammar) on the `prepare` pool, neither on an async worker nor on the inference thread, which
//! would stall every running stream while a grammar compiles.

pub mod model;
pub(crate) mod prepare;
pub mod sampling;
pub mod scheduler;
pub mod template;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use futures_util::future::BoxFuture;

pub use model::{LoadOptions, Model, ModelInfo, Prompt};
use prepare::PreparePool;
use sampling::TokenSampler;
pub use scheduler::{EngineSettings, FlashAttention, KvCacheType};
use scheduler::{JobQueue, PreparedRequest};

use super::{
    budget, ChatMessage, Engine, EngineError, EngineStats, Generation, GenerationEvents,
    OutputConstraint,
};

/// llama.cpp embedded: a loaded model and the inference thread that serves it.
#[derive(Clone)]
pub struct LlamaEngine {
    model: Arc<Model>,
    queue: JobQueue,
    prepare: PreparePool,
    slot_context: usize,
    model_ids: Vec<String>,
}

/// Threads that prepare requests: tokenizing takes about a millisecond, and two let one long
/// grammar compile not hold up the next request.
const PREPARE_THREADS: usize = 2;

impl LlamaEngine {
    /// Starts the inference thread on `model`. The join handle yields `true` if it panicked.
    pub fn start(
        model: Arc<Model>,
        settings: EngineSettings,
    ) -> Result<(Self, JoinHandle<bool>), EngineError> {
        let (queue, slot_context, thread) = scheduler::start(Arc::clone(&model), settings)?;
        let engine = Self {
            model,
            queue,
            prepare: PreparePool::start(PREPARE_THREADS)?,
            slot_context,
            model_ids: Vec::new(),
        };
        Ok((engine, thread))
    }

    /// The ids clients may name for this model (the file's name, an alias).
    pub fn with_model_ids(mut self, ids: Vec<String>) -> Self {
        self.model_ids = ids;
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Everything a request needs before the inference thread sees it. CPU-bound: run it on a
    /// blocking thread.
    fn prepare(
        &self,
        generation: Generation,
        submitted: Instant,
    ) -> Result<PreparedRequest, EngineError> {
        let prompt = self
            .model
            .prompt_within(&generation.messages, self.slot_context)?;
        if prompt.is_empty() {
            return Err(EngineError::InvalidPrompt("the prompt is empty".into()));
        }
        let max_new_tokens = budget::max_new_tokens(
            prompt.len(),
            generation.max_tokens.unwrap_or(usize::MAX),
            self.slot_context,
        )?;
        let sampler = self.sampler(&generation)?;
        Ok(PreparedRequest {
            prompt: prompt.tokens,
            max_new_tokens,
            sampler,
            stop: generation.stop,
            submitted,
        })
    }

    /// The request's sampler, its constraint compiled once (here, not on the inference thread).
    fn sampler(&self, generation: &Generation) -> Result<TokenSampler, EngineError> {
        let sampling = &generation.sampling;
        match &generation.constraint {
            None => TokenSampler::new(&self.model, sampling, None)
                .map_err(|e| EngineError::Sampling(e.to_string())),
            Some(OutputConstraint::JsonSchema(schema)) => {
                let refused = |detail: String| EngineError::InvalidSchema(detail);
                let grammar = llama_cpp_2::json_schema_to_grammar(schema)
                    .map_err(|e| refused(e.to_string()))?;
                TokenSampler::new(&self.model, sampling, Some(&grammar))
                    .map_err(|e| refused(e.to_string()))
            }
            // Written by this service: one that does not compile is our fault, not the client's.
            Some(OutputConstraint::Grammar { gbnf, .. }) => {
                TokenSampler::new(&self.model, sampling, Some(gbnf))
                    .map_err(|e| EngineError::Sampling(e.to_string()))
            }
        }
    }
}

impl Engine for LlamaEngine {
    fn submit(
        &self,
        generation: Generation,
    ) -> BoxFuture<'_, Result<GenerationEvents, EngineError>> {
        let submitted = Instant::now();
        let engine = self.clone();
        Box::pin(async move {
            let request = self
                .prepare
                .run(move || engine.prepare(generation, submitted))
                .await?;
            self.queue.push(request)
        })
    }

    fn count_tokens(
        &self,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'_, Result<usize, EngineError>> {
        let model = Arc::clone(&self.model);
        let window = self.slot_context;
        Box::pin(self.prepare.run(move || {
            // Contents that cannot fit whatever their tokens are not tokenized: their lower bound
            // already says they do not fit.
            match model.prompt_within(&messages, window) {
                Err(EngineError::PromptOverContext { at_least, .. }) => Ok(at_least),
                prompt => prompt.map(|p| p.len()),
            }
        }))
    }

    fn context_window(&self) -> usize {
        self.slot_context
    }

    fn model_ids(&self) -> Vec<String> {
        self.model_ids.clone()
    }

    fn stats(&self) -> EngineStats {
        self.queue.stats()
    }

    fn abort_all(&self, error: EngineError) {
        self.queue.abort_all(error);
    }
}
