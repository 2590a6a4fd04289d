//! The embedded engine: llama.cpp in this process. `model` loads the GGUF's weights and the
//! [`crate::tokenizer`] on them (which turns conversations into prompt tokens); `scheduler`
//! owns the one inference thread; `sampling` builds each request's sampler chain; `guidance`
//! compiles output constraints (and says which tokens they force).
//!
//! [`LlamaEngine::submit`] does a request's CPU work (rendering, tokenizing, compiling its
//! grammar) on the `prepare` pool, neither on an async worker nor on the inference thread, which
//! would stall every running stream while a grammar compiles.

mod detok;
mod error;
pub mod guidance;
mod logprobs;
pub mod model;
mod penalties;
mod prompt_cache;
pub mod sampling;
pub mod scheduler;

use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use futures_util::future::BoxFuture;
use guidance::{GrammarSource, Guidance};
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;

use crate::prepare::PreparePool;
use crate::reasoning::ThinkSplitter;
use crate::tokenizer::replay::Replays;
use crate::tokenizer::Prompt;
use crate::tool_calls::formats::{self, CallParser, CallSyntax};
pub use error::LlamaError;
pub use model::{LoadOptions, Model, ModelInfo};
use prompt_cache::PromptCache;
use sampling::TokenSampler;
use scheduler::reader::AnswerReader;
use scheduler::tool_use::{AnswerGuide, CallStart, ThinkTokens};
pub use scheduler::{EngineSettings, FlashAttention, KvCacheType};
use scheduler::{JobQueue, PreparedRequest};

use super::{
    budget, ChatMessage, CountedPrompt, Engine, EngineError, EngineStats, Generation,
    GenerationEvent, GenerationEvents, OutputConstraint, SamplingParams, ToolChoice, Tools, WarmUp,
};

/// A request's sampler and how its answer is shaped and read.
struct Shaped {
    sampler: TokenSampler,
    guide: Option<AnswerGuide>,
    reader: Option<AnswerReader>,
}

/// llama.cpp embedded: a loaded model and the inference thread that serves it.
#[derive(Clone)]
pub struct LlamaEngine {
    model: Arc<Model>,
    queue: JobQueue,
    prepare: PreparePool,
    slot_context: usize,
    model_ids: Vec<String>,
    /// Where the warmed prefix is kept between starts (`--prompt-cache-dir`).
    prompt_cache: Option<PromptCache>,
    /// Recent answers' tokens, replayed when a conversation sends an answer back.
    replays: Arc<Replays>,
    /// The constraint compiler, built in the background at start (it walks the vocabulary).
    guidance: Arc<OnceLock<Result<Guidance, String>>>,
    /// Feed the tokens a constraint forces in one batch (`--no-fast-forward` turns it off).
    fast_forward: bool,
    /// Self-speculation (`--speculation`).
    speculation: bool,
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
        let prompt_cache = settings
            .prompt_cache_dir
            .clone()
            .map(|dir| PromptCache::new(dir, model.info(), &settings));
        let replays = Arc::new(Replays::default());
        let fast_forward = settings.fast_forward;
        let speculation = settings.speculation;
        let guidance = Arc::new(OnceLock::new());
        {
            // Ready long before the first constrained request, without delaying the start.
            let (guidance, tokenizer) = (Arc::clone(&guidance), Arc::clone(model.tokenizer()));
            std::thread::Builder::new()
                .name("llguidance-init".into())
                .spawn(move || {
                    let started = Instant::now();
                    guidance.get_or_init(|| Guidance::new(tokenizer).map_err(|e| e.to_string()));
                    tracing::debug!(
                        ms = started.elapsed().as_millis() as u64,
                        "output constraint compiler ready"
                    );
                })
                .map_err(|e| EngineError::Start(format!("cannot start a thread: {e}")))?;
        }
        let queue_size = settings.queue_size;
        let (queue, slot_context, thread) =
            scheduler::start(Arc::clone(&model), settings, Arc::clone(&replays))?;
        let engine = Self {
            model,
            queue,
            prepare: PreparePool::start(PREPARE_THREADS, queue_size)?,
            slot_context,
            model_ids: Vec::new(),
            prompt_cache,
            replays,
            guidance,
            fast_forward,
            speculation,
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
        let prompt = self.prompt_of(&generation)?;
        self.request(prompt, generation, submitted)
    }

    /// The requests of `n` choices: the prompt rendered and tokenized once, each choice its own
    /// sampler (choice `i` seeded `seed + i`).
    fn prepare_choices(
        &self,
        generation: Generation,
        n: usize,
        submitted: Instant,
    ) -> Result<Vec<PreparedRequest>, EngineError> {
        let prompt = self.prompt_of(&generation)?;
        generation
            .choices(n)
            .map(|choice| self.request(prompt.clone(), choice, submitted))
            .collect()
    }

    /// The prompt's tokens: counted before (fitting, the tool-list check) and prepared then, or
    /// rendered and tokenized now.
    fn prompt_of(&self, generation: &Generation) -> Result<Prompt, EngineError> {
        // A count is of the conversation without template arguments: with them, it is rendered
        // again.
        let counted = generation
            .counted
            .as_ref()
            .filter(|_| generation.template_args.is_empty())
            .and_then(|c| c.prompt::<Prompt>());
        let tokenizer = self.model.tokenizer();
        let prompt = match (counted, &generation.raw) {
            (Some(prompt), _) => prompt.clone(),
            (None, Some(raw)) => tokenizer.raw_prompt(raw, self.slot_context)?,
            (None, None) => tokenizer.prompt_within(
                &generation.messages,
                generation.tools.as_ref(),
                &generation.template_args,
                self.slot_context,
                Some(&self.replays),
            )?,
        };
        if prompt.is_empty() {
            return Err(EngineError::InvalidPrompt("the prompt is empty".into()));
        }
        Ok(prompt)
    }

    /// A prompt and its generation made ready for the queue: the budget, the sampler (its
    /// constraint compiled), the forced start of the answer.
    fn request(
        &self,
        prompt: Prompt,
        generation: Generation,
        submitted: Instant,
    ) -> Result<PreparedRequest, EngineError> {
        let max_new_tokens = budget::max_new_tokens(
            prompt.len(),
            generation.max_tokens.unwrap_or(usize::MAX),
            self.slot_context,
        )?;
        let Shaped {
            mut sampler,
            guide,
            reader,
        } = self.sampler(&generation, prompt.opens_thinking, max_new_tokens)?;
        // Forced tokens are fed without the logits at their places: a request that asks for
        // log probabilities samples every token.
        let logprobs = generation.sampling.logprobs;
        let fast_forward = self.fast_forward && logprobs.is_none();
        let after = prompt.after;
        let mut tokens = prompt.tokens;
        // The answer's forced start (`{"recommend": "`; a call's marker when a call is required)
        // is prefilled with the prompt: it is cached with it too, since every answer of that
        // shape starts the same way.
        let mut lead = Vec::new();
        if fast_forward {
            lead.extend(sampler.forced());
        }
        lead.truncate(max_new_tokens);
        let lead_len = lead.len();
        tokens.extend(lead);
        Ok(PreparedRequest {
            prompt: tokens,
            after,
            lead: lead_len,
            max_new_tokens,
            sampler,
            stop: generation.stop,
            fast_forward,
            speculation: self.speculation,
            guide,
            reader,
            logprobs,
            special_text: generation.special_text,
            group: None,
            submitted,
        })
    }

    /// The request's sampler, its constraint compiled once (here, not on the inference thread),
    /// and how its answer is shaped and read: thinking first, then the answer's constraint;
    /// calls in the model's own syntax, their grammar from their start marker on when the model
    /// may call (`auto`), from the first token when it must.
    fn sampler(
        &self,
        generation: &Generation,
        opens_thinking: bool,
        max_new_tokens: usize,
    ) -> Result<Shaped, EngineError> {
        let tokenizer = self.model.tokenizer();
        let format = tokenizer.chat_format();
        let chat = generation.raw.is_none();
        let compile = |lark: &str| {
            self.guidance()?
                .matcher(GrammarSource::Lark(lark))
                .map_err(|e| EngineError::InvalidToolSchema(e.to_string()))
        };
        let marker = |text: &str| tokenizer.grammar_marker(text);
        // A named function is called once.
        let named;
        let offered = match generation.tools.as_ref().filter(|_| chat) {
            Some(tools) if matches!(tools.choice, ToolChoice::Function(_)) && tools.parallel => {
                named = Tools {
                    parallel: false,
                    ..tools.clone()
                };
                Some(&named)
            }
            other => other,
        };
        let mut offered_calls = None;
        let (constraint, calling) = match offered {
            None => (self.text_constraint(generation)?, false),
            Some(tools) => match (&tools.choice, format.calls) {
                // Without a syntax of its own the answer is JSON: a call or a message.
                (ToolChoice::Auto, CallSyntax::Generic) => (
                    Some(compile(&formats::generic_answer_grammar(tools))?),
                    false,
                ),
                (ToolChoice::Auto, syntax) => {
                    offered_calls = self.call_start(syntax).map(|start| (start, tools));
                    (self.text_constraint(generation)?, false)
                }
                // The call is the answer: a `response_format` does not apply to it.
                (_, syntax) => (
                    Some(compile(&formats::calls_grammar(syntax, tools, &marker))?),
                    true,
                ),
            },
        };
        let offered_calls = match offered_calls {
            Some((start, tools)) => Some((
                start,
                compile(&formats::calls_grammar(format.calls, tools, &marker))?,
            )),
            None => None,
        };
        let think = format
            .thinking
            .as_ref()
            .filter(|_| chat)
            .and_then(|markers| {
                Some(ThinkTokens {
                    open: tokenizer.single_token(&markers.open)?,
                    close: tokenizer.single_token(&markers.close)?,
                })
            });
        // A thinking section the prompt opened comes before the answer's constraint.
        let thinking = think.is_some() && opens_thinking;
        let (constraint, after_thinking) = if thinking {
            (None, constraint)
        } else {
            (constraint, None)
        };
        let guide = (thinking || offered_calls.is_some()).then(|| {
            AnswerGuide::new(
                think,
                thinking,
                after_thinking,
                offered_calls,
                max_new_tokens,
            )
        });
        // gpt-oss's channels are read even without tools, unless a grammar writes the answer
        // (then it is the constrained text itself, without channel headers).
        let harmony = format.calls == CallSyntax::Harmony && generation.constraint.is_none();
        let reads_calls = offered.is_some() || harmony;
        let reader = (chat
            && !generation.special_text
            && (format.thinking.is_some() || reads_calls))
            .then(|| {
                let splitter = format
                    .thinking
                    .as_ref()
                    .map(|m| ThinkSplitter::new(&m.open, &m.close, opens_thinking));
                let parser = reads_calls.then(|| CallParser::new(format.calls, calling));
                AnswerReader::new(splitter, parser)
            });
        Ok(Shaped {
            sampler: TokenSampler::new(&self.model, &generation.sampling, constraint),
            guide,
            reader,
        })
    }

    /// The client's `response_format`, or the grammar this service wrote for its answer.
    fn text_constraint(&self, generation: &Generation) -> Result<Option<Matcher>, EngineError> {
        Ok(match &generation.constraint {
            None => None,
            Some(OutputConstraint::JsonSchema(schema)) => Some(
                self.guidance()?
                    .matcher(GrammarSource::JsonSchema(schema))
                    .map_err(|e| EngineError::InvalidSchema(e.to_string()))?,
            ),
            // Written by this service: one that does not compile is our fault, not the client's.
            Some(OutputConstraint::Grammar { lark, .. }) => Some(
                self.guidance()?
                    .matcher(GrammarSource::Lark(lark))
                    .map_err(|e| {
                        LlamaError::Sampling(format!("the grammar does not compile: {e}"))
                    })?,
            ),
        })
    }

    /// Where offered calls of `syntax` begin, if the model can begin them (its start markers
    /// are tokens of the vocabulary, or its calls begin as a JSON object).
    fn call_start(&self, syntax: CallSyntax) -> Option<CallStart> {
        let tokenizer = self.model.tokenizer();
        let triggers = syntax.triggers();
        let start = CallStart {
            tokens: triggers
                .iter()
                .filter(|t| **t != "{")
                .filter_map(|t| tokenizer.single_token(t))
                .collect(),
            json_object: triggers.contains(&"{"),
        };
        (!start.tokens.is_empty() || start.json_object).then_some(start)
    }

    /// The constraint compiler; waits for the start-up thread if it is still building it.
    fn guidance(&self) -> Result<&Guidance, EngineError> {
        self.guidance
            .get_or_init(|| {
                Guidance::new(Arc::clone(self.model.tokenizer())).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                LlamaError::Sampling(format!("the constraint compiler failed: {e}")).into()
            })
    }
}

impl LlamaEngine {
    /// [`Engine::warm`]: load the prefix from the prompt cache, else compute it (a generation of
    /// one token leaves the prompt's cells in its slot) and save it.
    async fn warm_prefix(&self, messages: Vec<ChatMessage>) -> Result<WarmUp, EngineError> {
        let model = Arc::clone(&self.model);
        let rendered = messages.clone();
        let tokens = self
            .prepare
            .run(move || model.tokenizer().prompt(&rendered).map(|p| p.tokens))
            .await?;
        let path = self
            .prompt_cache
            .as_ref()
            .map(|cache| cache.path_for(&tokens));
        if let Some(path) = &path {
            if path.is_file() {
                let sealed = path.clone();
                let checked = self
                    .prepare
                    .run(move || Ok(prompt_cache::check_seal(&sealed)))
                    .await?;
                let restored = match checked {
                    Ok(()) => self.queue.restore(path.clone(), tokens.clone()).await,
                    Err(why) => Err(why),
                };
                match restored {
                    Ok(()) => {
                        return Ok(WarmUp::Loaded {
                            tokens: tokens.len(),
                        })
                    }
                    Err(why) => tracing::warn!(
                        file = %path.display(),
                        %why,
                        "prompt cache file not used; computing the prefix again"
                    ),
                }
            }
        }
        let mut events = self
            .submit(Generation {
                messages,
                sampling: SamplingParams {
                    temperature: 0.0,
                    ..SamplingParams::default()
                },
                max_tokens: Some(1),
                ..Generation::default()
            })
            .await?;
        loop {
            match events.recv().await {
                Some(GenerationEvent::Done(_)) => break,
                Some(GenerationEvent::Failed(e)) => return Err(e),
                Some(_) => {}
                None => return Err(EngineError::Stopped),
            }
        }
        if let (Some(cache), Some(path)) = (&self.prompt_cache, &path) {
            self.save_prefix(cache, path, tokens.clone()).await;
        }
        Ok(WarmUp::Computed {
            tokens: tokens.len(),
        })
    }

    /// Writes the prefix under a temporary name, then renames it into place. A failure is logged,
    /// never fatal: the service runs without the file.
    async fn save_prefix(
        &self,
        cache: &PromptCache,
        path: &std::path::Path,
        tokens: Vec<LlamaToken>,
    ) {
        let temporary = PromptCache::temporary(path);
        let saved = async {
            cache.prepare(path).map_err(|e| e.to_string())?;
            let bytes = self.queue.save(temporary.clone(), tokens).await?;
            std::fs::rename(&temporary, path).map_err(|e| e.to_string())?;
            // Hashing the whole file (hundreds of MB for a 7B model's prefix) is CPU work: on a
            // prepare thread, as the check of the seal is.
            let sealed = path.to_owned();
            self.prepare
                .run(move || Ok(prompt_cache::seal(&sealed).map_err(|e| e.to_string())))
                .await
                .map_err(|e| e.to_string())??;
            Ok::<_, String>(bytes)
        };
        match saved.await {
            Ok(bytes) => tracing::info!(
                file = %path.display(),
                size_mib = bytes / (1024 * 1024),
                "prompt prefix saved for the next start"
            ),
            Err(why) => {
                let _ = std::fs::remove_file(&temporary);
                tracing::warn!(file = %path.display(), %why, "could not save the prompt prefix");
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

    fn submit_choices(
        &self,
        generation: Generation,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<GenerationEvents>, EngineError>> {
        let submitted = Instant::now();
        let engine = self.clone();
        Box::pin(async move {
            let requests = self
                .prepare
                .run(move || engine.prepare_choices(generation, n, submitted))
                .await?;
            self.queue.push_group(requests)
        })
    }

    fn count_tokens(
        &self,
        _model: Option<&str>,
        messages: Vec<ChatMessage>,
        tools: Option<Tools>,
    ) -> BoxFuture<'_, Result<CountedPrompt, EngineError>> {
        let model = Arc::clone(&self.model);
        let replays = Arc::clone(&self.replays);
        let window = self.slot_context;
        Box::pin(self.prepare.run(move || {
            // Contents that cannot fit whatever their tokens are not tokenized: their lower bound
            // already says they do not fit.
            match model.tokenizer().prompt_within(
                &messages,
                tools.as_ref(),
                &serde_json::Map::new(),
                window,
                Some(&replays),
            ) {
                Err(EngineError::PromptOverContext { at_least, .. }) => {
                    Ok(CountedPrompt::count(at_least))
                }
                prompt => prompt.map(|p| CountedPrompt::prepared(p.len(), p)),
            }
        }))
    }

    fn context_window(&self, _model: Option<&str>) -> usize {
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

    fn warm(&self, messages: Vec<ChatMessage>) -> BoxFuture<'_, Result<WarmUp, EngineError>> {
        Box::pin(self.warm_prefix(messages))
    }
}
