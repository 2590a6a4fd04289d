//! Where the engines are built from the settings: the one place of this crate that names the
//! engines' own types (llama.cpp's model, context and scheduler settings; the upstream's and its
//! local tokenizer). Every other room holds an `Arc<dyn Engine>`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::config::{CacheType, Config, FlashAttention, StepOverlap};
use crate::engine::llama::{self, LlamaEngine, Model};
use crate::engine::tokenizer::chat_format::syntax_name;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::upstream::{UpstreamEngine, UpstreamSettings};
use crate::engine::{Engine, EngineError, GgufError};
use crate::lifecycle;

/// An engine, and the llama.cpp model it loaded for the process's exit to wait on.
pub struct Started {
    pub engine: Arc<dyn Engine>,
    pub llama: LlamaInUse,
}

/// The llama.cpp model this process loaded (weights, or a vocabulary only), watched without
/// being kept. llama.cpp's static objects are destroyed when the process exits, and a thread
/// still inside llama.cpp then crashes: a service that could not bind its port exited by SIGSEGV
/// about one time in seven on a busy machine, its inference thread still in a step. The model
/// is released when the last thread that uses it (the inference thread, the constraint
/// compiler's start) is done, which happens soon after the engine is dropped.
#[derive(Default)]
pub struct LlamaInUse(Option<Weak<Tokenizer>>);

impl LlamaInUse {
    fn of(tokenizer: &Arc<Tokenizer>) -> Self {
        Self(Some(Arc::downgrade(tokenizer)))
    }

    /// Waits until the model is released; false if it still is not after `timeout` (a step of a
    /// long prompt on a big model).
    pub fn wait_released(&self, timeout: Duration) -> bool {
        let Some(model) = &self.0 else { return true };
        let deadline = Instant::now() + timeout;
        while model.strong_count() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// llama.cpp in this process: loads the model and starts the inference thread.
pub fn embedded(config: &Config) -> anyhow::Result<Started> {
    let model = Model::load(&load_options(config)).map_err(|e| match e {
        EngineError::Gguf(GgufError::Missing { .. }) => anyhow::anyhow!(
            "{e}\n  Download the default model with `scripts/download-model` (or pass another \
             GGUF with --model / LEAFRESH_MODEL)."
        ),
        e => e.into(),
    })?;
    let info = model.info().clone();
    let template_source = model.tokenizer().template_source().to_owned();
    let format = model.tokenizer().chat_format().clone();
    let settings = engine_settings(config);
    let threads = settings.threads;
    let llama = LlamaInUse::of(model.tokenizer());
    let (engine, engine_thread) = LlamaEngine::start(Arc::new(model), settings)?;
    let engine = engine.with_model_ids(config.model_ids());
    lifecycle::exit_when_engine_dies(engine_thread);
    tracing::info!(
        model = %info.path.display(),
        size_mib = info.file_size / (1024 * 1024),
        layers = info.n_layer,
        params_m = info.n_params / 1_000_000,
        context = config.ctx_size,
        context_per_slot = engine.context_window(None),
        parallel = config.parallel,
        threads,
        gpu_layers = info.n_layer.min(config.n_gpu_layers),
        gpu_device = %info.gpu_device.as_deref().unwrap_or("none"),
        cache_types = %format_args!("{}/{}", config.cache_type_k.name(), config.cache_type_v.name()),
        chat_template = %template_source,
        tool_format = %syntax_name(format.calls),
        reasoning_format = %format.reasoning_name(),
        grammar = !config.no_grammar,
        fast_forward = !config.no_fast_forward,
        speculation = !config.no_speculation,
        "model loaded"
    );
    Ok(Started {
        engine: Arc::new(engine),
        llama,
    })
}

/// Upstream mode: no weights here; the upstream may still be down (the background check says
/// when it answers).
pub fn upstream(config: &Config, settings: UpstreamSettings) -> anyhow::Result<Started> {
    // The `--tokenizer` vocabulary, no weights.
    let tokenizer = config
        .upstream
        .tokenizer
        .as_deref()
        .map(|path| Tokenizer::load(path, config.chat_template.as_deref()))
        .transpose()?;
    tracing::info!(
        upstream = %settings.base_url,
        model = settings.model.as_deref().unwrap_or("(the first it lists)"),
        parallel = settings.parallel,
        tokenizer = %config.upstream.tokenizer.as_deref().map_or("(the upstream's)".into(), |p| p.display().to_string()),
        grammar = !config.no_grammar,
        "upstream mode: generation is delegated; no model is loaded here"
    );
    match &tokenizer {
        Some(_) => tracing::info!(
            "prompts are rendered and tokenized here and sent as token ids (/v1/completions), \
             so client text stays text on the upstream"
        ),
        None => tracing::warn!(
            "without --tokenizer the upstream renders and tokenizes each prompt itself: its own \
             tokenizer decides whether client text that spells a control token becomes one"
        ),
    }
    let tokenizer = tokenizer.map(Arc::new);
    let llama = tokenizer.as_ref().map(LlamaInUse::of).unwrap_or_default();
    Ok(Started {
        engine: Arc::new(UpstreamEngine::start(settings, tokenizer)?),
        llama,
    })
}

/// How to open the model file.
fn load_options(config: &Config) -> llama::LoadOptions {
    llama::LoadOptions {
        path: config.model.clone(),
        n_gpu_layers: config.n_gpu_layers,
        mlock: config.mlock,
        mmap: !config.no_mmap,
        chat_template: config.chat_template.clone(),
    }
}

/// The engine's context and scheduler settings.
fn engine_settings(config: &Config) -> llama::EngineSettings {
    llama::EngineSettings {
        ctx_size: config.ctx_size,
        parallel: config.parallel,
        batch_size: config.batch_size,
        threads: config.threads() as i32,
        queue_size: config.queue_size as usize,
        queue_timeout: config.queue_timeout(),
        cache_type_k: cache_type(config.cache_type_k),
        cache_type_v: cache_type(config.cache_type_v),
        prompt_cache_dir: config.prompt_cache_dir.clone(),
        fast_forward: !config.no_fast_forward,
        speculation: !config.no_speculation,
        step_overlap: match config.step_overlap {
            StepOverlap::On => true,
            StepOverlap::Off => false,
            StepOverlap::Auto => config.n_gpu_layers > 0,
        },
        flash_attention: match config.flash_attn {
            FlashAttention::On => llama::FlashAttention::On,
            FlashAttention::Off => llama::FlashAttention::Off,
            FlashAttention::Auto => llama::FlashAttention::Auto,
        },
        #[cfg(feature = "fault-injection")]
        faults: llama::scheduler::faults::Faults::new(
            config.debug_panic_at_step,
            config.debug_corrupt_token_when_batched,
        ),
    }
}

fn cache_type(cache_type: CacheType) -> llama::KvCacheType {
    match cache_type {
        CacheType::F16 => llama::KvCacheType::F16,
        CacheType::Q8_0 => llama::KvCacheType::Q8_0,
        CacheType::Q4_0 => llama::KvCacheType::Q4_0,
    }
}
