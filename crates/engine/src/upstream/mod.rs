//! The upstream engine: generation delegated to an OpenAI-compatible engine over HTTP (vLLM,
//! llama.cpp's llama-server, or another instance of this service), behind the same seam as the
//! embedded one. This side keeps everything else: validation, prompts, the answer's JSON
//! constraint (sent as `response_format` `json_schema`), the token budget, admission, sessions.
//!
//! A request is counted (`counting`), sized, admitted (`admission`), then sent with
//! `stream: true`; every delta is relayed as it arrives (`sse`). A client that leaves drops its
//! events receiver, which drops the upstream response: the connection closes and the upstream
//! stops generating. `discovery` learns the models, the context window and the way to count, and
//! keeps `/health` true.

mod admission;
mod counting;
mod discovery;
mod error;
mod relay;
mod request;
mod sse;
mod tool_text;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use reqwest::header::AUTHORIZATION;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::prepare::PreparePool;
use crate::tokenizer::tools::CALLS_TEXT;
use crate::tokenizer::{refuse_text_over_context, Prompt, Tokenizer};
use crate::tool_calls::calls_schema;
use crate::{
    budget, ChatMessage, CountedPrompt, Engine, EngineError, EngineStats, FinishReason, Generation,
    GenerationEvents, GenerationSummary, RawPrompt, ToolChoice, Tools,
};
use admission::Admission;
use discovery::Discovered;
use relay::Relay;
use request::{
    check_response, completion_body, describe, raw_completion_body, request_body, unreachable,
    ToolAnswer,
};
use tool_text::ToolText;

pub use counting::upper_bound;
pub use error::UpstreamError;

/// The header that carries the Leafresh session id, for routers with session affinity.
pub const SESSION_HEADER: &str = "X-Session-Id";

/// How to reach the upstream and how much to send it.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The OpenAI API base URL, e.g. `http://10.0.0.5:8000/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// The model to use; `None`: the first the upstream lists.
    pub model: Option<String>,
    /// The context window of one request when the upstream does not say.
    pub context: usize,
    /// Requests in flight to the upstream at most.
    pub parallel: usize,
    pub queue_size: usize,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's answer to begin, and between two of its chunks.
    pub idle_timeout: Duration,
}

/// Everything the engine, its requests and its background check share.
pub struct Upstream {
    settings: UpstreamSettings,
    client: reqwest::Client,
    /// `settings.base_url` without a trailing slash.
    base: String,
    /// The server root (the base without `/v1`), where `/tokenize`, `/props` live.
    root: String,
    /// A local vocabulary for counting, and the threads that tokenize with it.
    tokenizer: Option<(Arc<Tokenizer>, PreparePool)>,
    discovered: RwLock<Discovered>,
    reachable: AtomicBool,
    errors: AtomicU64,
    admission: Admission,
    /// Set once by `abort_all`: every running relay ends its stream with this error.
    abort: watch::Sender<Option<EngineError>>,
}

/// The upstream engine; cheap to clone.
#[derive(Clone)]
pub struct UpstreamEngine {
    upstream: Arc<Upstream>,
}

impl UpstreamEngine {
    /// Prepares the client and starts the background check; does not wait for the upstream (the
    /// service starts while it is down). Must be called inside a tokio runtime.
    pub fn start(
        settings: UpstreamSettings,
        tokenizer: Option<Arc<Tokenizer>>,
    ) -> Result<Self, EngineError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .build()
            .map_err(|e| EngineError::Start(format!("cannot build the HTTP client: {e}")))?;
        let base = settings.base_url.trim_end_matches('/').to_owned();
        let root = base.strip_suffix("/v1").unwrap_or(&base).to_owned();
        let tokenizer = match tokenizer {
            Some(model) => Some((model, PreparePool::start(1, settings.queue_size)?)),
            None => None,
        };
        let upstream = Arc::new(Upstream {
            admission: Admission::new(
                settings.parallel,
                settings.queue_size,
                settings.queue_timeout,
            ),
            settings,
            client,
            base,
            root,
            tokenizer,
            discovered: RwLock::new(Discovered::default()),
            reachable: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            abort: watch::channel(None).0,
        });
        tokio::spawn(discovery::watch(Arc::clone(&upstream)));
        Ok(Self { upstream })
    }

    fn discovered(&self) -> Discovered {
        self.upstream
            .discovered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The model a request goes to: the one named (if the upstream serves it), else the
    /// configured one, else the first listed. Nothing goes out before the first successful check
    /// of the upstream: until then it is not known what it serves, how to count for it, or how
    /// to send prompts to it (a 503 with `Retry-After` on every API).
    fn model_for(&self, named: Option<&str>) -> Result<String, EngineError> {
        let found = self.discovered();
        if found.models.is_empty() {
            return Err(UpstreamError::Unavailable("it has not been reached yet".into()).into());
        }
        Ok(named
            .filter(|m| found.models.iter().any(|id| id == m))
            .map(str::to_owned)
            .or_else(|| self.upstream.settings.model.clone())
            .unwrap_or_else(|| found.models[0].clone()))
    }

    /// The tokens of a raw prompt for `model`.
    async fn count_raw(&self, model: &str, raw: RawPrompt) -> Result<CountedPrompt, EngineError> {
        let window = self.context_window(Some(model));
        match &self.upstream.tokenizer {
            Some(tokenizer) => counting::count_raw_locally(tokenizer, window, raw).await,
            None => counting::count_raw_remotely(&self.upstream, model, &raw).await,
        }
    }

    /// The prompt tokens of `messages` for `model`: with the local vocabulary at once (no need of
    /// the upstream), else as the upstream counts them.
    async fn count(
        &self,
        model: Option<&str>,
        messages: Vec<ChatMessage>,
        tools: Option<Tools>,
    ) -> Result<CountedPrompt, EngineError> {
        let window = self.context_window(model);
        if let Some(tokenizer) = &self.upstream.tokenizer {
            return counting::count_locally(tokenizer, window, messages, tools).await;
        }
        let model = self.model_for(model)?;
        let counting = self.discovered().counting;
        counting::count_remotely(&self.upstream, counting, &model, window, messages, tools).await
    }

    async fn start_generation(
        &self,
        generation: Generation,
    ) -> Result<GenerationEvents, EngineError> {
        let submitted = Instant::now();
        let upstream = &self.upstream;
        let model = self.model_for(generation.model.as_deref())?;
        let counted = match (generation.counted.clone(), &generation.raw) {
            (Some(counted), _) => counted,
            (None, Some(raw)) => self.count_raw(&model, raw.clone()).await?,
            (None, None) => {
                self.count(
                    Some(&model),
                    generation.messages.clone(),
                    generation.tools.clone(),
                )
                .await?
            }
        };
        let prompt_tokens = counted.tokens;
        let window = self.context_window(Some(&model));
        if prompt_tokens > window && generation.raw.is_none() {
            // A count that is only a lower bound (text too long to count): said as such.
            let max_token_bytes = upstream
                .tokenizer
                .as_ref()
                .map_or(counting::REMOTE_MAX_TOKEN_BYTES, |(t, _)| {
                    t.max_token_bytes()
                });
            refuse_text_over_context(
                &generation.messages,
                generation.tools.as_ref(),
                max_token_bytes,
                window,
            )?;
        }
        let max_new_tokens = budget::max_new_tokens(
            prompt_tokens,
            generation.max_tokens.unwrap_or(usize::MAX),
            window,
        )?;
        // With a local tokenizer the prompt goes as token ids (see `token_request`), except where
        // the upstream's own chat handling must do the work: calls in a format other than
        // Mistral's (read by the upstream's parser), template arguments.
        let reads_calls_here = generation.tools.is_none()
            || upstream
                .tokenizer
                .as_ref()
                .is_some_and(|(t, _)| t.tool_tokens().is_some());
        let token_prompt = counted.prompt::<Prompt>().filter(|_| {
            self.discovered().token_prompts
                && (generation.raw.is_some()
                    || (reads_calls_here && generation.template_args.is_empty()))
        });
        let (path, body, tool_text) = match (&generation.raw, token_prompt) {
            // A raw prompt the local vocabulary tokenized goes as its ids.
            (Some(_), Some(prompt)) => {
                let ids: Vec<i32> = prompt.tokens().iter().map(|t| t.0).collect();
                let body =
                    completion_body(&generation, &model, max_new_tokens, &ids, &ToolAnswer::None);
                ("completions", body, None)
            }
            (Some(raw), None) => (
                "completions",
                raw_completion_body(&generation, &model, max_new_tokens, raw),
                None,
            ),
            (None, Some(prompt)) => {
                self.token_request(&generation, &model, max_new_tokens, prompt)?
            }
            (None, None) => (
                "chat/completions",
                request_body(&generation, &model, max_new_tokens),
                None,
            ),
        };
        let permit = upstream.admission.enter().await?;
        if let Some(error) = upstream.abort.borrow().clone() {
            return Err(error);
        }
        let admitted = Instant::now();
        let mut request = upstream
            .client
            .post(format!("{}/{path}", upstream.base))
            .json(&body);
        if let Some(key) = &upstream.settings.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(session) = &generation.session {
            request = request.header(SESSION_HEADER, session);
        }
        let response =
            match tokio::time::timeout(upstream.settings.idle_timeout, request.send()).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return Err(upstream.unreachable(&e)),
                Err(_) => {
                    return Err(upstream.fault(UpstreamError::Unavailable(format!(
                        "no answer within {} s",
                        upstream.settings.idle_timeout.as_secs()
                    ))))
                }
            };
        let latency = admitted.elapsed();
        let response = check_response(response)
            .await
            .map_err(|e| upstream.fault(e))?;
        let (events, receiver) = mpsc::unbounded_channel();
        let relay = Relay {
            upstream: Arc::clone(upstream),
            events,
            prompt_tokens,
            summary: GenerationSummary {
                finish_reason: FinishReason::Stop,
                prompt_tokens,
                cached_tokens: 0,
                completion_tokens: 0,
                forced_tokens: 0,
                drafted_tokens: 0,
                accepted_tokens: 0,
                queue_wait: admitted - submitted,
                time_to_first_token: Duration::ZERO,
                total_time: Duration::ZERO,
                upstream_latency: Some(latency),
                stop_sequence: None,
            },
            submitted,
            tool_text,
            top_logprobs: generation.sampling.logprobs.unwrap_or(0),
        };
        tokio::spawn(async move {
            relay.run(response).await;
            drop(permit);
        });
        Ok(receiver)
    }
}

impl UpstreamEngine {
    /// A `/v1/completions` request for a prompt the gateway rendered and tokenized with its own
    /// copy of the model's vocabulary and template (`--tokenizer`): the upstream gets token ids,
    /// so no client text can become a control token there, whatever its tokenizer would do with
    /// text. Tool calls are then read from the answer's text here.
    fn token_request(
        &self,
        generation: &Generation,
        model: &str,
        max_new_tokens: usize,
        prompt: &Prompt,
    ) -> Result<(&'static str, Value, Option<ToolText>), EngineError> {
        let tokenizer = self
            .upstream
            .tokenizer
            .as_ref()
            .map(|(tokenizer, _)| tokenizer)
            .ok_or_else(|| EngineError::Internal("a token prompt without a tokenizer".into()))?;
        let mut ids: Vec<i32> = prompt.tokens().iter().map(|t| t.0).collect();
        let calls = tokenizer.tool_tokens().map(|t| t.calls);
        let (answer, tool_text) = match (&generation.tools, calls) {
            (None, _) => (ToolAnswer::None, None),
            (Some(tools), Some(_)) if tools.choice == ToolChoice::Auto => (
                ToolAnswer::Offered {
                    trigger: CALLS_TEXT.to_owned(),
                },
                Some(ToolText::offered(CALLS_TEXT)),
            ),
            (Some(tools), Some(calls)) => {
                // A call is required: the answer begins with the calls token, placed here.
                ids.push(calls.0);
                let schema = calls_schema(tools);
                (ToolAnswer::Calling { schema }, Some(ToolText::calling()))
            }
            (Some(tools), None) if tools.choice == ToolChoice::Auto => (ToolAnswer::None, None),
            (Some(_), None) => return Err(EngineError::ToolsUnsupported),
        };
        let body = completion_body(generation, model, max_new_tokens, &ids, &answer);
        Ok(("completions", body, tool_text))
    }
}

impl Upstream {
    /// Counts and logs a failure of the upstream.
    fn fault(&self, error: UpstreamError) -> EngineError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(upstream = %self.base, %error, "upstream request failed");
        error.into()
    }

    /// A request could not reach the upstream: `/health` says so at once, and the background
    /// check says when it is back. (A busy upstream, 429 or 503, is reachable.)
    fn unreachable(&self, error: &reqwest::Error) -> EngineError {
        if error.is_connect() {
            self.reachable.store(false, Ordering::Relaxed);
        }
        self.fault(unreachable(error))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        self.send_json(self.client.get(url)).await
    }

    async fn post_json(&self, url: &str, body: &Value) -> Result<Value, String> {
        self.send_json(self.client.post(url).json(body)).await
    }

    async fn send_json(&self, mut request: reqwest::RequestBuilder) -> Result<Value, String> {
        if let Some(key) = &self.settings.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = request
            .timeout(self.settings.idle_timeout)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let path = response.url().path().to_owned();
        if !status.is_success() {
            return Err(format!("{path} answered {status}"));
        }
        response
            .json()
            .await
            .map_err(|_| format!("{path} did not answer JSON"))
    }
}

impl Engine for UpstreamEngine {
    fn submit(
        &self,
        generation: Generation,
    ) -> BoxFuture<'_, Result<GenerationEvents, EngineError>> {
        Box::pin(self.start_generation(generation))
    }

    fn count_tokens(
        &self,
        model: Option<&str>,
        messages: Vec<ChatMessage>,
        tools: Option<Tools>,
    ) -> BoxFuture<'_, Result<CountedPrompt, EngineError>> {
        let model = model.map(str::to_owned);
        Box::pin(async move { self.count(model.as_deref(), messages, tools).await })
    }

    /// `model`'s window as the upstream lists it, else llama-server's slot context, else
    /// `--ctx-size`.
    fn context_window(&self, model: Option<&str>) -> usize {
        let found = self.discovered();
        let model = model
            .or(self.upstream.settings.model.as_deref())
            .or(found.models.first().map(String::as_str));
        model
            .and_then(|m| found.contexts.get(m).copied())
            .or(found.slot_context)
            .unwrap_or(self.upstream.settings.context)
    }

    fn model_ids(&self) -> Vec<String> {
        let models = self.discovered().models;
        match (&self.upstream.settings.model, models.is_empty()) {
            (Some(model), true) => vec![model.clone()],
            _ => models,
        }
    }

    fn stats(&self) -> EngineStats {
        let upstream = &self.upstream;
        EngineStats {
            active: upstream.admission.active(),
            queued: upstream.admission.queued(),
            alive: upstream.reachable.load(Ordering::Relaxed),
            engine: "upstream",
            errors: upstream.errors.load(Ordering::Relaxed),
            steps: Default::default(),
        }
    }

    fn abort_all(&self, error: EngineError) {
        // Relays check it when they start too, and no request is admitted after it.
        self.upstream.abort.send_replace(Some(error));
        self.upstream.admission.close();
    }
}
