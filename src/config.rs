//! Every setting of the service, parsed once: a CLI flag, its `LEAFRESH_*` environment twin, and
//! `.env` (the working directory's, or the one `--env-file` names). Invalid values are refused at
//! start with a message naming the setting; the rest of the program trusts [`Config`].

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::engine;

mod upstream;
pub use upstream::UpstreamArgs;

/// All layers on the GPU in a CUDA build (llama.cpp caps it at the model's layer count).
#[cfg(feature = "cuda")]
const DEFAULT_GPU_LAYERS: u32 = 999;
#[cfg(not(feature = "cuda"))]
const DEFAULT_GPU_LAYERS: u32 = 0;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheType {
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl CacheType {
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F16 => "f16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q4_0 => "q4_0",
        }
    }
}

/// Flash attention setting, as llama.cpp's `--flash-attn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlashAttention {
    On,
    Off,
    Auto,
}

/// Whether the host work between two decode steps runs beside `llama_decode`, on a second thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StepOverlap {
    On,
    Off,
    /// On when layers are offloaded to a GPU: there the CPU waits while the GPU decodes. On the
    /// CPU a second thread takes memory bandwidth and time from llama.cpp's own (measured in
    /// BENCHMARKS.md).
    Auto,
}

/// What `/v1` does with a conversation whose prompt does not fit the context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContextOverflow {
    /// Drop the oldest turns (system messages and the last turn stay) until it fits.
    Trim,
    /// Refuse it: 400 `context_length_exceeded`.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The smallest context one request may get (`--ctx-size / --parallel`): a chat prompt and a
/// short answer. Smaller slots would start, and then refuse every request.
pub const MIN_SLOT_CONTEXT: u32 = 128;

/// The default model file, as `scripts/download-model` names it.
pub const DEFAULT_MODEL: &str = "gguf/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf";

/// Command line and environment of `leafresh-llm`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "leafresh-llm",
    version,
    about = "Serves a GGUF model (llama.cpp, embedded) for the Leafresh chatbot",
    after_help = "Every flag can also be set by the environment variable shown, in the \
                  environment or in a .env file (./.env, or the file --env-file names)."
)]
pub struct Config {
    /// Read settings from this file instead of ./.env (values already in the environment win).
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// The GGUF model file.
    #[arg(long, env = "LEAFRESH_MODEL", default_value = DEFAULT_MODEL, value_name = "PATH")]
    pub model: PathBuf,

    /// The chat template, instead of the model file's: a format llama.cpp knows by name
    /// (chatml, gemma, mistral-v7, ...) or a Jinja file (default: the file's own, else mistral-v3).
    #[arg(long, env = "LEAFRESH_CHAT_TEMPLATE", value_name = "NAME|FILE", value_parser = non_blank)]
    pub chat_template: Option<String>,

    /// Address to listen on. 127.0.0.1 accepts only this machine; 0.0.0.0 accepts every network.
    #[arg(long, env = "LEAFRESH_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on.
    #[arg(long, env = "LEAFRESH_PORT", default_value_t = 8000,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Context window in tokens, shared by the parallel slots.
    #[arg(long, env = "LEAFRESH_CTX_SIZE", default_value_t = 8192,
          value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub ctx_size: u32,

    /// CPU threads for llama.cpp (default: all cores).
    #[arg(long, env = "LEAFRESH_THREADS",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Model layers to offload to the GPU (default: all in a CUDA build, 0 otherwise).
    #[arg(long, env = "LEAFRESH_N_GPU_LAYERS", default_value_t = DEFAULT_GPU_LAYERS,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub n_gpu_layers: u32,

    /// Element type of the K cache: f16, q8_0 (half the memory) or q4_0 (a quarter).
    #[arg(long, env = "LEAFRESH_CACHE_TYPE_K", value_enum, default_value_t = CacheType::F16)]
    pub cache_type_k: CacheType,

    /// Element type of the V cache; a quantized V cache needs flash attention.
    #[arg(long, env = "LEAFRESH_CACHE_TYPE_V", value_enum, default_value_t = CacheType::F16)]
    pub cache_type_v: CacheType,

    /// Flash attention: less memory for attention, needed by a quantized V cache.
    #[arg(long, env = "LEAFRESH_FLASH_ATTN", value_enum, default_value_t = FlashAttention::Auto)]
    pub flash_attn: FlashAttention,

    /// Lock the weights in RAM so the OS never swaps them out (needs RLIMIT_MEMLOCK).
    #[arg(long, env = "LEAFRESH_MLOCK")]
    pub mlock: bool,

    /// Read the weights into memory instead of mapping the file.
    #[arg(long, env = "LEAFRESH_NO_MMAP")]
    pub no_mmap: bool,

    /// Requests generated at the same time; each gets ctx-size / parallel tokens of context.
    #[arg(long, env = "LEAFRESH_PARALLEL", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,

    /// Most tokens one decode step processes (prompt chunks plus one token per stream).
    #[arg(long, env = "LEAFRESH_BATCH_SIZE", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(32..=8192))]
    pub batch_size: u32,

    /// Requests that may wait for a free slot; beyond that the answer is 503.
    #[arg(long, env = "LEAFRESH_QUEUE_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub queue_size: u32,

    /// Seconds a request may wait for a free slot before it is refused.
    #[arg(long, env = "LEAFRESH_QUEUE_TIMEOUT", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub queue_timeout: u64,

    /// Seconds between SSE comment frames that keep proxies from closing a quiet stream (0: off).
    #[arg(long, env = "LEAFRESH_SSE_KEEPALIVE", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub sse_keepalive: u64,

    /// Largest `/v1/chat/completions` body in bytes; a larger one gets 413 without being read.
    #[arg(long, env = "LEAFRESH_MAX_BODY_BYTES", default_value_t = 2 << 20,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 30)))]
    pub max_body_bytes: u64,

    /// `/v1`: a conversation too long for the context window loses its oldest turns (trim), or
    /// is refused with 400 context_length_exceeded (error).
    #[arg(long, env = "LEAFRESH_CONTEXT_OVERFLOW", value_enum, default_value_t = ContextOverflow::Trim)]
    pub context_overflow: ContextOverflow,

    /// `/v1`: the answer's token limit when a request sends no max_tokens, so that one reply
    /// cannot fill its context (the room the context leaves still caps it).
    #[arg(long, env = "LEAFRESH_DEFAULT_MAX_TOKENS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    pub default_max_tokens: u64,

    /// On SIGTERM/SIGINT, seconds running streams get to finish before they are ended with an
    /// error event.
    #[arg(long, env = "LEAFRESH_SHUTDOWN_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout: u64,

    /// Another name `/v1/models` lists for the model (e.g. `mistral`), besides its file name.
    #[arg(long, env = "LEAFRESH_MODEL_ALIAS", value_parser = non_blank)]
    pub model_alias: Option<String>,

    /// Require `Authorization: Bearer KEY` on `/v1/*` (the health check and test page stay public).
    #[arg(long, env = "LEAFRESH_API_KEY", value_parser = non_blank, hide_env_values = true)]
    pub api_key: Option<String>,

    /// Require the API key on the Leafresh endpoints too.
    #[arg(long, env = "LEAFRESH_API_KEY_LEAFRESH", requires = "api_key")]
    pub api_key_leafresh: bool,

    /// Origins allowed to call the API from a browser (comma-separated), or `*` for any. None by
    /// default: the test page is served from the same origin.
    #[arg(long, env = "LEAFRESH_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Log level: error, warn, info, debug or trace (RUST_LOG, when set, takes precedence).
    #[arg(long, env = "LEAFRESH_LOG_LEVEL", default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,

    /// Log lines as plain text or as JSON objects (for log collectors).
    #[arg(long, env = "LEAFRESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Fault injection (tests only): make the engine thread panic at this decode step.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub debug_panic_at_step: Option<u64>,

    /// Fault injection (tests only): at the first decode step with two or more generating
    /// sequences, feed an invalid token for one of them.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub debug_corrupt_token_when_batched: bool,

    /// Keep the instruction prefix's KV cells in this directory, so that a restart loads them
    /// instead of computing them (the systemd unit uses its state directory).
    #[arg(long, env = "LEAFRESH_PROMPT_CACHE_DIR", value_name = "DIR")]
    pub prompt_cache_dir: Option<PathBuf>,

    /// Do not compute the instruction prefix before serving (the first request pays for it).
    #[arg(long, env = "LEAFRESH_NO_WARM_UP")]
    pub no_warm_up: bool,

    /// Decode the tokens an output grammar forces (JSON keys and punctuation between values) one
    /// step each instead of in one batch (for comparison; slower).
    #[arg(long, env = "LEAFRESH_NO_FAST_FORWARD")]
    pub no_fast_forward: bool,

    /// Decode one answer token per step, without drafts. By default each sequence drafts the
    /// tokens that followed its last few tokens before (in its prompt or its answer) and checks
    /// them in the same decode step (self-speculation): several tokens per step where the answer
    /// repeats what came before, the sampler's choices unchanged.
    #[arg(long, env = "LEAFRESH_NO_SPECULATION")]
    pub no_speculation: bool,

    /// Send a step's text and compute the next constraint masks on a second thread while
    /// llama.cpp decodes: `auto` (with GPU offload), `on` or `off`. The tokens are the same.
    #[arg(long, env = "LEAFRESH_STEP_OVERLAP", value_enum, default_value_t = StepOverlap::Auto)]
    pub step_overlap: StepOverlap,

    /// Generate the Leafresh answers without the JSON grammar (for fine-tuned models that
    /// follow their own format; answers are then parsed and repaired leniently).
    #[arg(long, env = "LEAFRESH_NO_GRAMMAR")]
    pub no_grammar: bool,

    #[command(flatten)]
    pub upstream: UpstreamArgs,

    /// Conversations kept in memory; the least recently used is dropped beyond this.
    #[arg(long, env = "LEAFRESH_MAX_SESSIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions: u32,

    /// Seconds after which an idle conversation is forgotten.
    #[arg(long, env = "LEAFRESH_SESSION_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub session_ttl: u64,

    /// Responses API responses kept for `previous_response_id` and `GET /v1/responses/{id}`
    /// (0: none); the oldest are dropped beyond this.
    #[arg(long, env = "LEAFRESH_RESPONSES_STORED", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub responses_stored: u32,

    /// Seconds a stored response is kept.
    #[arg(long, env = "LEAFRESH_RESPONSES_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub responses_ttl: u64,
}

impl Config {
    /// Reads `.env` (or `--env-file`), then the command line and environment.
    pub fn load() -> anyhow::Result<Self> {
        Self::load_from(std::env::args_os().collect())
    }

    /// As [`Config::load`], for the given arguments (the first is the program name).
    pub fn load_from(args: Vec<OsString>) -> anyhow::Result<Self> {
        // The env file must be read before clap looks at the environment, so find it first.
        match env_file_argument(&args) {
            Some(path) => load_env_file(&path)
                .map_err(|e| anyhow::anyhow!("--env-file {}: {e}", path.display()))?,
            None if Path::new(".env").is_file() => {
                load_env_file(Path::new(".env")).map_err(|e| anyhow::anyhow!("./.env: {e}"))?
            }
            None => {}
        }
        let config = Self::try_parse_from(args)?;
        config.check()?;
        Ok(config)
    }

    /// Rules between settings that clap cannot express. Every pair of values in range either
    /// serves or is refused here: llama.cpp would abort the process on some of them.
    fn check(&self) -> anyhow::Result<()> {
        if self.batch_size < self.parallel {
            anyhow::bail!(
                "--batch-size {} is smaller than --parallel {}: each decode step carries one token \
                 of every running request, so the batch must hold at least --parallel tokens \
                 (raise --batch-size or lower --parallel)",
                self.batch_size,
                self.parallel
            );
        }
        let per_slot = self.ctx_size / self.parallel;
        if per_slot < MIN_SLOT_CONTEXT {
            anyhow::bail!(
                "--ctx-size {} shared by --parallel {} leaves {per_slot} tokens per request; at \
                 least {MIN_SLOT_CONTEXT} are needed for a prompt and its answer (raise \
                 --ctx-size or lower --parallel)",
                self.ctx_size,
                self.parallel
            );
        }
        if self.cache_type_v != CacheType::F16 && self.flash_attn == FlashAttention::Off {
            anyhow::bail!(
                "--cache-type-v {} needs flash attention: use --flash-attn on or auto",
                self.cache_type_v.name()
            );
        }
        Ok(())
    }

    /// CPU threads to use.
    pub fn threads(&self) -> u32 {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(4)
        })
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout)
    }

    pub fn sse_keepalive(&self) -> Duration {
        Duration::from_secs(self.sse_keepalive)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    /// The upstream engine's settings, in upstream mode (`--upstream`). The fallback context
    /// window of a request is `--ctx-size`; `--parallel` caps requests in flight.
    pub fn upstream_settings(&self) -> Option<engine::upstream::UpstreamSettings> {
        let url = self.upstream.url.as_deref()?;
        Some(self.upstream.settings(
            url,
            self.ctx_size as usize,
            self.parallel as usize,
            self.queue_size as usize,
            self.queue_timeout(),
        ))
    }

    /// The ids clients may name as `model`: the model file's name without `.gguf`, and the alias.
    pub fn model_ids(&self) -> Vec<String> {
        let stem = self
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        std::iter::once(stem)
            .chain(self.model_alias.clone())
            .collect()
    }
}

fn non_blank(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_owned())
    }
}

/// Sets the file's variables that the environment does not already have. Within the file the
/// last occurrence of a key wins, as in a shell, so a line appended at the end takes effect.
fn load_env_file(path: &Path) -> Result<(), dotenvy::Error> {
    let preset: std::collections::HashSet<String> = std::env::vars().map(|(k, _)| k).collect();
    for item in dotenvy::from_path_iter(path)? {
        let (key, value) = item?;
        if !preset.contains(&key) {
            // Single-threaded here: settings are read before anything else starts.
            std::env::set_var(key, value);
        }
    }
    Ok(())
}

/// The value of `--env-file PATH` or `--env-file=PATH`, if given.
fn env_file_argument(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--env-file" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--env-file=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

#[cfg(test)]
mod tests;
