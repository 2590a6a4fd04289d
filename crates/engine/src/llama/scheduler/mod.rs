//! The one inference thread. It owns the llama.cpp context (`LlamaContext` is not `Sync`) and
//! serves every request through slots: each slot is one llama.cpp sequence with its share of the
//! context window. Split the way llama.cpp's server splits it:
//!
//! - `queue`: the bounded queue between the async side and this thread, and admission to slots;
//! - `slots`: slot choice and prefix matching (pure): a request goes to the free slot whose cells
//!   share the longest prefix with its prompt, or copies the cells of another slot that shares
//!   more (the instruction text every Leafresh prompt begins with); only the rest is computed;
//! - `batch`: batch building (continuous batching), decode, failure isolation;
//! - `sequence`: per-token sampling, and the final event;
//! - `stream`: a sequence's text (UTF-8, stop strings, tool calls, events), sent after sampling or
//!   while the next step decodes.
//!
//! A dropped events receiver means the client left: its sequence is dropped at the next step,
//! also while queued or during prompt processing.

mod batch;
mod draft;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod queue;
pub(crate) mod reader;
mod sequence;
mod slots;
mod stream;
pub(crate) mod tool_use;

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self as std_mpsc, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use llama_cpp_2::context::params::KvCacheType;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;

use super::model::Model;
use crate::llama::LlamaError;
use crate::tokenizer::gguf::backend;
use crate::tokenizer::replay::Replays;
use crate::EngineError;
use batch::{Slot, StepHelper};
use queue::Job;
use queue::{Command, Shared};
pub use queue::{JobQueue, PreparedRequest};

/// Settings of the context and the scheduler.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Total context window, shared by the slots.
    pub ctx_size: u32,
    /// Number of sequences decoded together.
    pub parallel: u32,
    /// Most tokens one decode step may carry.
    pub batch_size: u32,
    pub threads: i32,
    /// Requests that may wait for a free slot before new ones are refused.
    pub queue_size: usize,
    /// Longest a request may wait for a slot.
    pub queue_timeout: Duration,
    /// Element types of the KV cache (quantized types halve or quarter its memory).
    pub cache_type_k: KvCacheType,
    pub cache_type_v: KvCacheType,
    pub flash_attention: FlashAttention,
    /// Where the warmed prompt prefix is kept between starts (`None`: computed at every start).
    pub prompt_cache_dir: Option<std::path::PathBuf>,
    /// Feed the tokens an output constraint forces in one batch (grammar fast-forward).
    pub fast_forward: bool,
    /// Draft tokens from each sequence's own text and check them in the same step.
    pub speculation: bool,
    /// Run the host work between two steps (text out, constrained sequences' next masks) on a
    /// second thread while `llama_decode` runs: a gain where the CPU waits for a GPU. Without it
    /// the text goes out right after the sampling, and a mask is computed only when a token is
    /// refused.
    pub step_overlap: bool,
    #[cfg(feature = "fault-injection")]
    pub faults: faults::Faults,
}

/// Whether llama.cpp uses flash attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashAttention {
    On,
    Off,
    /// llama.cpp decides by backend support.
    Auto,
}

impl FlashAttention {
    fn policy(self) -> llama_cpp_sys_2::llama_flash_attn_type {
        use llama_cpp_sys_2 as sys;
        match self {
            FlashAttention::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttention::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttention::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
        }
    }
}

/// Starts the inference thread and waits until its context exists. Returns the queue into it and
/// the context window of one slot. The thread ends when every queue handle is gone, or when it
/// panicked: its join handle then yields `true`.
pub fn start(
    model: Arc<Model>,
    settings: EngineSettings,
    replays: Arc<Replays>,
) -> Result<(JobQueue, usize, JoinHandle<bool>), EngineError> {
    let (commands, command_receiver) = std_mpsc::channel::<Command>();
    let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Result<usize, EngineError>>(1);
    let shared = Arc::new(Shared::new(settings.queue_size));
    let thread_shared = Arc::clone(&shared);
    let thread = thread::Builder::new()
        .name("llama-engine".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run(
                    model,
                    &settings,
                    &thread_shared,
                    &replays,
                    command_receiver,
                    ready_tx,
                )
            }));
            // Dropping the scheduler dropped every sender: each open stream sees its channel
            // close without a final event and reports an error.
            thread_shared.alive.store(false, Ordering::Relaxed);
            if outcome.is_err() {
                tracing::error!("the inference engine panicked; no request can be served");
            }
            outcome.is_err()
        })
        .map_err(|e| EngineError::Start(format!("cannot start the engine thread: {e}")))?;
    let slot_context = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
    Ok((JobQueue { commands, shared }, slot_context, thread))
}

fn run(
    model: Arc<Model>,
    settings: &EngineSettings,
    shared: &Shared,
    replays: &Replays,
    commands: Receiver<Command>,
    ready: std_mpsc::SyncSender<Result<usize, EngineError>>,
) {
    // llama.cpp aborts the process (GGML_ASSERT) on a batch smaller than the sequence count, and
    // the scheduler puts one token of every generating sequence in each batch.
    if settings.batch_size < settings.parallel {
        let _ = ready.send(Err(LlamaError::Context(format!(
            "the batch ({} tokens) must hold one token of each of the {} parallel sequences",
            settings.batch_size, settings.parallel
        ))
        .into()));
        return;
    }
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(settings.ctx_size))
        .with_n_batch(settings.batch_size)
        .with_n_ubatch(settings.batch_size)
        .with_n_seq_max(settings.parallel)
        // One pool of KV cells for all sequences, so that a shared prefix can be copied between
        // sequences (cells are shared, not duplicated). Each slot still gets at most its share,
        // enforced by the token budget.
        .with_kv_unified(true)
        .with_type_k(settings.cache_type_k)
        .with_type_v(settings.cache_type_v)
        .with_flash_attention_policy(settings.flash_attention.policy())
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads);
    let backend = match backend() {
        Ok(backend) => backend,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let ctx = match model.llama().new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(LlamaError::Context(e.to_string()).into()));
            return;
        }
    };
    let slot_context = ctx.n_ctx() as usize / settings.parallel as usize;
    let _ = ready.send(Ok(slot_context));
    let helper = match settings
        .step_overlap
        .then(|| StepHelper::start(Arc::clone(&model)))
    {
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot start the step helper thread; no step overlap");
            None
        }
        Some(Ok(helper)) => Some(helper),
        None => None,
    };
    Scheduler::new(&model, ctx, settings, shared, replays, helper).serve(&commands);
}

struct Scheduler<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    shared: &'m Shared,
    /// Where finished answers' tokens go, for the next turn of their conversation.
    replays: &'m Replays,
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    queue_timeout: Duration,
    /// With `--step-overlap`: the thread that does the host work while a step decodes.
    helper: Option<StepHelper>,
    admissions: u64,
    #[cfg(feature = "fault-injection")]
    faults: faults::Faults,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m Model,
        ctx: LlamaContext<'m>,
        settings: &EngineSettings,
        shared: &'m Shared,
        replays: &'m Replays,
        helper: Option<StepHelper>,
    ) -> Self {
        // llama.cpp caps the batch at the context size: stage no more than it takes.
        let batch_size = ctx.n_batch() as usize;
        Self {
            model,
            ctx,
            shared,
            replays,
            slots: (0..settings.parallel).map(|_| Slot::default()).collect(),
            waiting: VecDeque::new(),
            batch: LlamaBatch::new(batch_size, 1),
            batch_size,
            queue_timeout: settings.queue_timeout,
            helper,
            admissions: 0,
            #[cfg(feature = "fault-injection")]
            faults: settings.faults.clone(),
        }
    }

    fn serve(mut self, commands: &Receiver<Command>) {
        loop {
            self.publish_counts();
            if self.is_idle() {
                // Nothing to do: sleep until a command arrives; every handle gone means stop.
                match commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            while let Ok(command) = commands.try_recv() {
                self.handle(command);
            }
            self.expire_waiting();
            self.drop_abandoned();
            self.admit_waiting();
            self.publish_counts();
            #[cfg(feature = "fault-injection")]
            self.inject_faults();
            self.step();
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self
                .slots
                .iter()
                .all(|s| s.sequence.is_none() && s.tail.is_empty())
    }
}
