//! What goes into an engine and what comes back, the same for every engine: a [`Generation`]
//! (chat messages, sampling settings, an output constraint, a token limit) and a stream of
//! [`GenerationEvent`]s ending with a [`GenerationSummary`] or an error.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::chat::ChatMessage;
use super::EngineError;

/// One generation as an API asks for it. The engine renders the messages with the model's chat
/// template (or takes a raw prompt as it is), counts them, and sizes the answer to the context
/// window.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub messages: Vec<ChatMessage>,
    /// A prompt given whole, without the chat template (`/v1/completions`); `messages` and `tools`
    /// are then empty.
    pub raw: Option<RawPrompt>,
    pub sampling: SamplingParams,
    /// What the output must match, if anything.
    pub constraint: Option<OutputConstraint>,
    /// The most new tokens the caller wants; `None` leaves it to the room the context has left.
    pub max_tokens: Option<usize>,
    /// Strings that end the generation; they are not part of the text sent back.
    pub stop: Vec<String>,
    /// The model the client named (one of [`Engine::model_ids`](super::Engine::model_ids));
    /// `None` for the engine's default.
    pub model: Option<String>,
    /// The conversation this request continues, for engines that route a conversation to the
    /// replica holding its cache.
    pub session: Option<String>,
    /// Functions the model may call (`None`: it answers in text).
    pub tools: Option<Tools>,
    /// Arguments for the chat template beyond the conversation (`chat_template_kwargs`, as vLLM
    /// and llama-server take them): `{"enable_thinking": false}` turns Qwen3's thinking off.
    pub template_args: serde_json::Map<String, serde_json::Value>,
    /// Special tokens the model samples are sent as their text (`[TOOL_CALLS]`, `<|im_end|>`)
    /// rather than as nothing: for a client that reads the model's markup itself (a gateway in
    /// upstream mode parsing tool calls; llama-server's and vLLM's `skip_special_tokens: false`).
    pub special_text: bool,
    /// What [`Engine::count_tokens`](super::Engine::count_tokens) made of exactly these
    /// `messages` and `tools`, when the caller counted them: the engine then does not render and
    /// tokenize them again.
    pub counted: Option<CountedPrompt>,
}

impl Generation {
    /// The generation of each of `n` choices: the same request, choice `i` seeded `seed + i`.
    pub fn choices(self, n: usize) -> impl Iterator<Item = Generation> {
        (0..n).map(move |i| {
            let mut choice = self.clone();
            choice.sampling.seed = self.sampling.seed.map(|s| s.wrapping_add(i as u32));
            choice
        })
    }
}

/// A prompt given as it is, not a conversation: what a text-completion client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPrompt {
    /// Text, tokenized with the model's special tokens recognised: a raw prompt's markup is the
    /// caller's (it may spell the chat template itself), not client text inside a template.
    Text(String),
    /// Token ids, each checked against the vocabulary; used as they are (no BOS added).
    Tokens(Vec<u32>),
    /// Fill in the middle: the model writes what goes between `prefix` and `suffix` (its FIM
    /// tokens around them; a model without them refuses it).
    Infill { prefix: String, suffix: String },
}

impl RawPrompt {
    /// Bytes of text it holds (token ids count as one byte each: at least one token).
    pub fn text_bytes(&self) -> usize {
        match self {
            RawPrompt::Text(text) => text.len(),
            RawPrompt::Tokens(ids) => ids.len(),
            RawPrompt::Infill { prefix, suffix } => prefix.len() + suffix.len(),
        }
    }
}

/// A prompt an engine rendered and counted: its length, and the engine's own form of it (its
/// tokens), opaque to everyone else, so that a request is prepared once however many steps
/// (fitting, the tool-list check, submission) need its count.
#[derive(Clone)]
pub struct CountedPrompt {
    pub tokens: usize,
    prepared: Option<Arc<dyn Any + Send + Sync>>,
}

impl CountedPrompt {
    /// A count without a prompt to reuse (a remote count, a lower bound).
    pub fn count(tokens: usize) -> Self {
        Self {
            tokens,
            prepared: None,
        }
    }

    /// A count with the engine's prompt, for its [`Engine::submit`](super::Engine::submit).
    pub fn prepared<T: Any + Send + Sync>(tokens: usize, prompt: T) -> Self {
        Self {
            tokens,
            prepared: Some(Arc::new(prompt)),
        }
    }

    /// The engine's prompt, if this count came with one of type `T`.
    pub fn prompt<T: Any>(&self) -> Option<&T> {
        self.prepared.as_deref()?.downcast_ref()
    }
}

impl fmt::Debug for CountedPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedPrompt")
            .field("tokens", &self.tokens)
            .field("prepared", &self.prepared.is_some())
            .finish()
    }
}

/// The functions offered to the model and whether it must call one.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub functions: Vec<ToolFunction>,
    pub choice: ToolChoice,
    /// Several calls in one answer.
    pub parallel: bool,
}

impl Tools {
    /// `tools`, `tool_choice` and `parallel_tool_calls` as an OpenAI request carries them.
    pub fn to_openai(&self) -> serde_json::Value {
        let tools: Vec<serde_json::Value> = self
            .functions
            .iter()
            .map(|f| {
                let mut function = serde_json::json!({"name": f.name, "parameters": f.parameters});
                if let Some(description) = &f.description {
                    function["description"] = description.clone().into();
                }
                serde_json::json!({"type": "function", "function": function})
            })
            .collect();
        let choice = match &self.choice {
            ToolChoice::Auto => serde_json::json!("auto"),
            ToolChoice::Required => serde_json::json!("required"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        };
        serde_json::json!({
            "tools": tools,
            "tool_choice": choice,
            "parallel_tool_calls": self.parallel,
        })
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolFunction {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of its arguments.
    pub parameters: serde_json::Value,
}

/// Whether the answer calls a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides: text, or calls.
    Auto,
    /// At least one call, of any of the functions.
    Required,
    /// A call of this function.
    Function(String),
}

/// A constraint on the generated text, enforced while sampling.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    /// A JSON schema from the client (`response_format`); one the engine cannot enforce is the
    /// client's mistake ([`EngineError::InvalidSchema`]).
    JsonSchema(String),
    /// A Lark grammar (llguidance's dialect, start rule `start`) written by this service, and the
    /// JSON schema it implements for engines that take only schemas. A grammar that does not
    /// compile is a server fault.
    Grammar { lark: String, json_schema: String },
}

/// Sampling settings of one request, already validated by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    /// 0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables it.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// `None` picks a fresh seed.
    pub seed: Option<u32>,
    /// Added to the logits of these token ids before sampling (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(i32, f32)>,
    /// Report each generated token's log probability and the `n` most likely tokens at its
    /// place ([`GenerationEvent::Logprobs`]); `None`: nothing is computed.
    pub logprobs: Option<usize>,
}

/// llama.cpp's defaults (`common_params_sampling`, what llama-server uses for a request that sets
/// nothing): top-k 40 first, so that no step works over the whole vocabulary, then top-p 0.95,
/// min-p 0.05, temperature 0.8.
impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

/// What an engine sends back for one request: text pieces (always valid UTF-8), then exactly one
/// `Done` or `Failed`. A channel that closes without either means the engine stopped.
#[derive(Debug, Clone)]
pub enum GenerationEvent {
    Text(String),
    /// The model's thinking before its answer (`<think>...</think>`, gpt-oss's analysis
    /// channel): never part of the answer's text.
    Reasoning(String),
    /// The model began tool call `index` (from 0 in each answer) of function `name`.
    ToolCall {
        index: usize,
        id: String,
        name: String,
    },
    /// More of tool call `index`'s arguments (JSON text, in pieces).
    ToolArguments {
        index: usize,
        fragment: String,
    },
    /// The tokens of the text that follows (sent before it, with `logprobs` asked for): each
    /// one's log probability under the model and the most likely tokens at its place.
    Logprobs(Vec<TokenLogprob>),
    Done(GenerationSummary),
    Failed(EngineError),
}

/// A generated token and how likely the model found it: the log of its probability in the
/// model's distribution at that place (the softmax of the raw logits, before sampling settings
/// or constraints), as vLLM and OpenAI report it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: i32,
    /// The token's bytes (part of a UTF-8 character, for some).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely tokens at this place, most likely first.
    pub top: Vec<TopLogprob>,
}

/// One of the most likely tokens at a place.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: i32,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// The events of one generation. Dropping the receiver cancels the generation.
///
/// Unbounded, and bounded by the request: an engine sends at most a few events per generated
/// token, so the token budget bounds what a channel can hold. An engine never has to choose
/// between waiting on a slow client (every other stream would wait too) and dropping its
/// events: a live client always gets every event, the final one included.
pub type GenerationEvents = mpsc::UnboundedReceiver<GenerationEvent>;

/// Where an engine sends a generation's events.
pub type EventSender = mpsc::UnboundedSender<GenerationEvent>;

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended it (an end-of-generation token; with a grammar: the grammar is complete).
    Stop,
    /// It used its whole token budget.
    Length,
    /// The model called tools (their calls are complete).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// The final event of a successful generation.
#[derive(Debug, Clone)]
pub struct GenerationSummary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cells came from the cache instead of being computed.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Completion tokens an output constraint forced, fed without a decode step of their own
    /// (grammar fast-forward).
    pub forced_tokens: usize,
    /// Tokens drafted by self-speculation and checked, and those of them the sampler chose
    /// (each a token that took no decode step of its own).
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
    /// From submission to a free slot.
    pub queue_wait: Duration,
    /// From submission to the first generated token (queue and prompt processing included).
    pub time_to_first_token: Duration,
    /// From submission to the end.
    pub total_time: Duration,
    /// An upstream engine: from sending the request to its response headers.
    pub upstream_latency: Option<Duration>,
    /// The caller's stop string that ended the answer (`finish_reason` is then `Stop`), when the
    /// engine knows which.
    pub stop_sequence: Option<String>,
}

impl GenerationSummary {
    /// Generated tokens per second after the first one (the decode speed a reader sees).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let decode = self.total_time.saturating_sub(self.time_to_first_token);
        if self.completion_tokens < 2 || decode.is_zero() {
            return 0.0;
        }
        (self.completion_tokens - 1) as f64 / decode.as_secs_f64()
    }
}

/// A snapshot of an engine's load, for `/metrics` and `/health`.
#[derive(Debug, Clone, Copy)]
pub struct EngineStats {
    pub active: usize,
    pub queued: usize,
    /// It can serve: the embedded engine's thread runs, the upstream answers.
    pub alive: bool,
    /// Which engine: `llama.cpp` (embedded) or `upstream`.
    pub engine: &'static str,
    /// Requests that failed inside the engine so far (decode errors, upstream faults).
    pub errors: u64,
    /// Where the embedded engine's decode steps spent their time (zero for other engines).
    pub steps: StepTimes,
}

/// Decode steps so far, and their time: in `llama_decode`, and on the host around it (building
/// the batch, sampling, constraints, detokenizing, streaming), during which the hardware waits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    pub steps: u64,
    pub decode: Duration,
    pub host: Duration,
}

/// How an engine readied a prompt prefix before serving ([`Engine::warm`](super::Engine::warm)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmUp {
    /// Its cells were computed (and saved, when the engine keeps a prompt cache on disk).
    Computed { tokens: usize },
    /// Its cells were loaded from the prompt cache on disk.
    Loaded { tokens: usize },
    /// This engine keeps no prefix (an upstream engine: its own cache decides).
    Skipped,
}
