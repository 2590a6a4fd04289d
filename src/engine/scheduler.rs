//! The one inference thread. It owns the llama.cpp context (`LlamaContext` is not `Sync`) and
//! serves every request through slots: each slot is one llama.cpp sequence with its share of the
//! context window. Each decode step carries one token for every generating slot plus chunks of
//! prompts still being processed (continuous batching), so a newly admitted request starts while
//! others stream and a long prompt holds the others back for at most one chunk.
//!
//! Prompt cache: a slot keeps the KV cells of its last request. A new request goes to the free
//! slot whose cells share the longest prefix with its prompt; when another slot (busy or not)
//! shares a longer one, typically the instruction text every Leafresh prompt begins with, its
//! cells are copied instead. Only the rest of the prompt is computed.
//!
//! A failed decode is undone and retried sequence by sequence, so only the sequence that fails on
//! its own gets the error.
//!
//! Handlers only see [`EngineHandle::submit`], which returns a receiver of [`GenerationEvent`]s.
//! A dropped receiver means the client left: its sequence is dropped at the next step, also while
//! queued or during prompt processing.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self as std_mpsc, Receiver as CommandReceiver, Sender as CommandSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use llama_cpp_2::context::params::KvCacheType;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::detok::{StopMatcher, Utf8Assembler};
use super::model::{backend, Model, Prompt};
use super::sampling::{SamplingParams, TokenSampler};
use super::{budget, EngineError};

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
    /// Test hook: the engine thread panics at this decode step (to test that a dead engine is
    /// noticed). Never set in production.
    pub panic_at_step: Option<u64>,
    /// Test hook: at the first decode step where two or more sequences are generating, the first
    /// of them feeds a token id outside the vocabulary, which llama.cpp refuses (to test that one
    /// failing sequence does not take the others down). Never set in production.
    pub corrupt_token_when_batched: bool,
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

/// One generation: a prompt, how many tokens it may add, and how to pick them.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Strings that end the generation; they are not part of the text sent back.
    pub stop: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended it (an end-of-generation token; with a grammar: the grammar is complete).
    Stop,
    /// It used its whole token budget.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
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
    /// From submission to a free slot.
    pub queue_wait: Duration,
    /// From submission to the first generated token (queue and prompt processing included).
    pub time_to_first_token: Duration,
    /// From submission to the end.
    pub total_time: Duration,
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

/// What the engine sends back for one request: text pieces (always valid UTF-8), then exactly one
/// `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum GenerationEvent {
    Text(String),
    Done(GenerationSummary),
    Failed(EngineError),
}

/// A snapshot of the engine's load, for `/metrics` and `/health`.
#[derive(Debug, Clone, Copy)]
pub struct EngineStats {
    pub active: usize,
    pub queued: usize,
    pub alive: bool,
}

struct Job {
    request: GenerationRequest,
    events: mpsc::Sender<GenerationEvent>,
    submitted: Instant,
}

enum Command {
    Generate(Job),
    /// Ends every queued and running request with this error (graceful stop past its deadline).
    AbortAll(EngineError),
}

/// Counters shared by the handle and the engine thread.
#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    active: AtomicUsize,
    alive: AtomicBool,
    queue_size: usize,
}

/// The way into the engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    model: Arc<Model>,
    commands: CommandSender<Command>,
    shared: Arc<Shared>,
    slot_context: usize,
}

impl EngineHandle {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The context window of one slot: a request's prompt plus its new tokens must fit in it.
    pub fn slot_context(&self) -> usize {
        self.slot_context
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            active: self.shared.active.load(Ordering::Relaxed),
            queued: self.shared.queued.load(Ordering::Relaxed),
            alive: self.shared.alive.load(Ordering::Relaxed),
        }
    }

    /// Queues a generation. Refuses at once when the prompt does not fit a slot, when the queue
    /// is full, or when the engine has stopped.
    pub fn submit(
        &self,
        mut request: GenerationRequest,
    ) -> Result<mpsc::Receiver<GenerationEvent>, EngineError> {
        if request.prompt.is_empty() {
            return Err(EngineError::InvalidPrompt("the prompt is empty".into()));
        }
        request.max_new_tokens = budget::max_new_tokens(
            request.prompt.len(),
            request.max_new_tokens,
            self.slot_context,
        )?;
        if !self.shared.alive.load(Ordering::Relaxed) {
            return Err(EngineError::Stopped);
        }
        // The queue is bounded by this counter; the engine decrements it when a job leaves it.
        if self.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.shared.queue_size {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Overloaded);
        }
        // Room for every text piece plus the final event: the engine never blocks on a client.
        let (events, receiver) = mpsc::channel(request.max_new_tokens + 2);
        let job = Job {
            request,
            events,
            submitted: Instant::now(),
        };
        if self.commands.send(Command::Generate(job)).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Stopped);
        }
        Ok(receiver)
    }

    /// Ends every queued and running request with `error` (used at shutdown).
    pub fn abort_all(&self, error: EngineError) {
        let _ = self.commands.send(Command::AbortAll(error));
    }
}

/// Starts the inference thread and waits until its context exists. The thread ends when every
/// handle is gone, or when it panicked: its join handle then yields `true`.
pub fn start(
    model: Arc<Model>,
    settings: EngineSettings,
) -> Result<(EngineHandle, JoinHandle<bool>), EngineError> {
    let (commands, command_receiver) = std_mpsc::channel::<Command>();
    let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Result<usize, EngineError>>(1);
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        alive: AtomicBool::new(true),
        queue_size: settings.queue_size.max(1),
    });
    let thread_model = Arc::clone(&model);
    let thread_shared = Arc::clone(&shared);
    let thread = thread::Builder::new()
        .name("llama-engine".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run(
                    &thread_model,
                    &settings,
                    &thread_shared,
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
        .map_err(|e| EngineError::Context(format!("cannot start the engine thread: {e}")))?;
    let slot_context = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
    let handle = EngineHandle {
        model,
        commands,
        shared,
        slot_context,
    };
    Ok((handle, thread))
}

fn run(
    model: &Model,
    settings: &EngineSettings,
    shared: &Shared,
    commands: CommandReceiver<Command>,
    ready: std_mpsc::SyncSender<Result<usize, EngineError>>,
) {
    // llama.cpp aborts the process (GGML_ASSERT) on a batch smaller than the sequence count, and
    // the scheduler puts one token of every generating sequence in each batch.
    if settings.batch_size < settings.parallel {
        let _ = ready.send(Err(EngineError::Context(format!(
            "the batch ({} tokens) must hold one token of each of the {} parallel sequences",
            settings.batch_size, settings.parallel
        ))));
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
            let _ = ready.send(Err(e));
            return;
        }
    };
    let ctx = match model.llama().new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Context(e.to_string())));
            return;
        }
    };
    let slot_context = ctx.n_ctx() as usize / settings.parallel as usize;
    let _ = ready.send(Ok(slot_context));
    Scheduler::new(model, ctx, settings, shared).serve(&commands);
}

/// A request in a slot.
struct Sequence {
    events: mpsc::Sender<GenerationEvent>,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens in the KV cache (cached or computed).
    prefilled: usize,
    cached: usize,
    max_new_tokens: usize,
    generated: usize,
    /// The sampled token still to be fed at the next step.
    next_input: Option<LlamaToken>,
    sampler: TokenSampler,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    /// Index of this sequence's logits in the batch just decoded.
    logits_index: Option<i32>,
    submitted: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
}

/// One llama.cpp sequence: its cached cells and, when busy, the request it serves.
#[derive(Default)]
struct Slot {
    /// The tokens whose KV cells this sequence holds, in position order.
    cells: Vec<LlamaToken>,
    sequence: Option<Sequence>,
    /// Admission counter value when last used (to evict the least recently used cache).
    last_used: u64,
    /// What this slot put into the batch being decoded, to undo it if the decode fails.
    staged: Option<Staged>,
}

/// A slot's share of one decode step.
#[derive(Debug, Clone, Copy)]
enum Staged {
    /// The token sampled at the last step.
    Token(LlamaToken),
    /// Prompt tokens from this position on.
    Chunk { from: usize },
}

struct Scheduler<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    shared: &'m Shared,
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    queue_timeout: Duration,
    piece: Vec<u8>,
    admissions: u64,
    steps: u64,
    panic_at_step: Option<u64>,
    corrupt_token_when_batched: bool,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m Model,
        ctx: LlamaContext<'m>,
        settings: &EngineSettings,
        shared: &'m Shared,
    ) -> Self {
        // llama.cpp caps the batch at the context size: stage no more than it takes.
        let batch_size = ctx.n_batch() as usize;
        Self {
            model,
            ctx,
            shared,
            slots: (0..settings.parallel).map(|_| Slot::default()).collect(),
            waiting: VecDeque::new(),
            batch: LlamaBatch::new(batch_size, 1),
            batch_size,
            queue_timeout: settings.queue_timeout,
            piece: Vec::with_capacity(16),
            admissions: 0,
            steps: 0,
            panic_at_step: settings.panic_at_step,
            corrupt_token_when_batched: settings.corrupt_token_when_batched,
        }
    }

    fn serve(mut self, commands: &CommandReceiver<Command>) {
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
            self.steps += 1;
            self.apply_test_hooks();
            if self.fill_batch() == 0 {
                continue;
            }
            match self.ctx.decode(&mut self.batch) {
                Ok(()) => self.sample_all(),
                Err(e) => self.isolate_failure(EngineError::Decode(e.to_string())),
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(|s| s.sequence.is_none())
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Generate(job) => self.waiting.push_back(job),
            Command::AbortAll(error) => {
                for job in std::mem::take(&mut self.waiting) {
                    self.leave_queue();
                    let _ = job.events.try_send(GenerationEvent::Failed(error.clone()));
                }
                for slot_id in 0..self.slots.len() {
                    if self.slots[slot_id].sequence.is_some() {
                        self.finish(slot_id, Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Queued requests whose client left are dropped without any decoding; those that waited
    /// too long are refused.
    fn expire_waiting(&mut self) {
        let timeout = self.queue_timeout;
        let before = self.waiting.len();
        self.waiting.retain(|job| {
            if job.events.is_closed() {
                return false;
            }
            if job.submitted.elapsed() > timeout {
                let _ = job
                    .events
                    .try_send(GenerationEvent::Failed(EngineError::QueueTimeout {
                        seconds: timeout.as_secs(),
                    }));
                return false;
            }
            true
        });
        for _ in self.waiting.len()..before {
            self.leave_queue();
        }
    }

    /// A job left the queue (admitted, expired, abandoned or aborted).
    fn leave_queue(&self) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Frees the slots whose client has gone.
    fn drop_abandoned(&mut self) {
        for slot_id in 0..self.slots.len() {
            let gone = self.slots[slot_id]
                .sequence
                .as_ref()
                .is_some_and(|s| s.events.is_closed());
            if gone {
                self.leave(slot_id);
            }
        }
    }

    fn admit_waiting(&mut self) {
        while self.slots.iter().any(|s| s.sequence.is_none()) {
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.leave_queue();
            self.admit(job);
        }
    }

    fn publish_counts(&self) {
        let active = self.slots.iter().filter(|s| s.sequence.is_some()).count();
        self.shared.active.store(active, Ordering::Relaxed);
    }

    fn admit(&mut self, job: Job) {
        let sampler = match TokenSampler::new(self.model, &job.request.sampling) {
            Ok(sampler) => sampler,
            Err(e) => {
                let _ = job.events.try_send(GenerationEvent::Failed(e));
                return;
            }
        };
        let prompt = job.request.prompt.tokens;
        let slot_id = self.pick_slot(&prompt);
        let cached = self.reuse_cells(slot_id, &prompt);
        self.admissions += 1;
        let slot = &mut self.slots[slot_id];
        slot.last_used = self.admissions;
        slot.sequence = Some(Sequence {
            events: job.events,
            prompt,
            prefilled: cached,
            cached,
            max_new_tokens: job.request.max_new_tokens,
            generated: 0,
            next_input: None,
            sampler,
            utf8: Utf8Assembler::new(),
            stop: StopMatcher::new(job.request.stop),
            logits_index: None,
            submitted: job.submitted,
            admitted: Instant::now(),
            first_token: None,
        });
    }

    /// The free slot whose cache shares the longest prefix with `prompt`; among equals, the least
    /// recently used (its cache is the least likely to be wanted again).
    fn pick_slot(&self, prompt: &[LlamaToken]) -> usize {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sequence.is_none())
            .max_by_key(|(_, s)| {
                (
                    common_prefix(&s.cells, prompt),
                    std::cmp::Reverse(s.last_used),
                )
            })
            .map(|(id, _)| id)
            .expect("admit is only called with a free slot")
    }

    /// Keeps (or copies from another slot) the longest cached prefix of `prompt` in `slot_id`'s
    /// cells and removes the rest. Returns the number of prompt tokens that need no computing.
    fn reuse_cells(&mut self, slot_id: usize, prompt: &[LlamaToken]) -> usize {
        // The last prompt token is always computed: its logits give the first new token.
        let usable = prompt.len() - 1;
        let own = common_prefix(&self.slots[slot_id].cells, prompt).min(usable);
        let donor = self
            .slots
            .iter()
            .enumerate()
            .filter(|(id, _)| *id != slot_id)
            .map(|(id, s)| (id, common_prefix(&s.cells, prompt).min(usable)))
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n > own);
        let seq = slot_id as i32;
        match donor {
            Some((donor_id, n)) => {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot_id as u32), None, None);
                let copied =
                    self.ctx
                        .copy_kv_cache_seq(donor_id as i32, seq, Some(0), Some(n as u32));
                if copied.is_err() {
                    self.slots[slot_id].cells.clear();
                    return 0;
                }
                self.slots[slot_id].cells = prompt[..n].to_vec();
                n
            }
            None => {
                let removed =
                    self.ctx
                        .clear_kv_cache_seq(Some(slot_id as u32), Some(own as u32), None);
                if !matches!(removed, Ok(true)) {
                    // A partial removal can fail; start this slot from scratch instead.
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot_id as u32), None, None);
                    self.slots[slot_id].cells.clear();
                    return 0;
                }
                self.slots[slot_id].cells.truncate(own);
                own
            }
        }
    }

    /// One token per generating sequence first (they are what users are waiting on), then prompt
    /// chunks in the room left. Returns the number of tokens in the batch.
    fn fill_batch(&mut self) -> usize {
        self.batch.clear();
        let (generating, prefilling): (Vec<usize>, Vec<usize>) = (0..self.slots.len())
            .filter(|&id| self.slots[id].sequence.is_some())
            .partition(|&id| {
                self.slots[id]
                    .sequence
                    .as_ref()
                    .is_some_and(|s| s.next_input.is_some())
            });
        for slot_id in generating.into_iter().chain(prefilling) {
            self.stage(slot_id);
        }
        self.batch.n_tokens() as usize
    }

    /// Adds a slot's work to the batch: the token it sampled last, or the next chunk of its prompt
    /// that fits. Remembers what it added, so that a failed decode can be undone.
    fn stage(&mut self, slot_id: usize) {
        let room = self.batch_size - self.batch.n_tokens() as usize;
        let slot = &mut self.slots[slot_id];
        slot.staged = None;
        let Some(seq) = slot.sequence.as_mut() else {
            return;
        };
        seq.logits_index = None;
        if let Some(token) = seq.next_input.take() {
            self.batch
                .add(token, slot.cells.len() as i32, &[slot_id as i32], true)
                .expect("the batch holds one token per slot");
            slot.cells.push(token);
            seq.logits_index = Some(self.batch.n_tokens() - 1);
            slot.staged = Some(Staged::Token(token));
            return;
        }
        if room == 0 || seq.prefilled == seq.prompt.len() {
            return;
        }
        let from = seq.prefilled;
        let end = (from + room).min(seq.prompt.len());
        for i in from..end {
            let last = i + 1 == seq.prompt.len();
            self.batch
                .add(seq.prompt[i], i as i32, &[slot_id as i32], last)
                .expect("the chunk is sized to the batch");
        }
        slot.cells.extend_from_slice(&seq.prompt[from..end]);
        seq.prefilled = end;
        if end == seq.prompt.len() {
            seq.logits_index = Some(self.batch.n_tokens() - 1);
        }
        slot.staged = Some(Staged::Chunk { from });
    }

    /// Takes back what a slot staged: its cells and KV entries from the batch, its state before.
    fn unstage(&mut self, slot_id: usize) {
        let slot = &mut self.slots[slot_id];
        let Some(staged) = slot.staged.take() else {
            return;
        };
        let from = match staged {
            Staged::Token(_) => slot.cells.len() - 1,
            Staged::Chunk { from } => from,
        };
        slot.cells.truncate(from);
        if let Some(seq) = slot.sequence.as_mut() {
            match staged {
                Staged::Token(token) => seq.next_input = Some(token),
                Staged::Chunk { from } => seq.prefilled = from,
            }
            seq.logits_index = None;
        }
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot_id as u32), Some(from as u32), None);
    }

    /// A decode failed. llama.cpp reports per batch, not per sequence: undo the batch and decode
    /// each sequence on its own, so only the sequence that fails again gets the error.
    fn isolate_failure(&mut self, error: EngineError) {
        let staged: Vec<usize> = (0..self.slots.len())
            .filter(|&id| self.slots[id].staged.is_some())
            .collect();
        tracing::warn!(%error, sequences = staged.len(), "decode failed; retrying sequence by sequence");
        for &slot_id in &staged {
            self.unstage(slot_id);
        }
        for slot_id in staged {
            self.batch.clear();
            self.stage(slot_id);
            match self.ctx.decode(&mut self.batch) {
                Ok(()) => self.sample(slot_id),
                Err(e) => {
                    tracing::error!(slot_id, error = %e, "decode failed for this sequence");
                    self.slots[slot_id].staged = None;
                    self.finish(slot_id, Err(EngineError::Decode(e.to_string())));
                    self.slots[slot_id].cells.clear();
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot_id as u32), None, None);
                }
            }
        }
    }

    /// Test hooks, by decode step.
    fn apply_test_hooks(&mut self) {
        if self.panic_at_step == Some(self.steps) {
            panic!("test hook: engine panic at decode step {}", self.steps);
        }
        if !self.corrupt_token_when_batched {
            return;
        }
        let generating = self
            .slots
            .iter()
            .filter(|s| s.sequence.as_ref().is_some_and(|s| s.next_input.is_some()))
            .count();
        if generating >= 2 {
            self.corrupt_token_when_batched = false;
            let invalid = LlamaToken::new(self.model.llama().n_vocab() + 100);
            if let Some(seq) = self
                .slots
                .iter_mut()
                .filter_map(|s| s.sequence.as_mut())
                .find(|s| s.next_input.is_some())
            {
                seq.next_input = Some(invalid);
            }
        }
    }

    fn sample_all(&mut self) {
        for slot_id in 0..self.slots.len() {
            self.sample(slot_id);
        }
    }

    /// Samples a slot's next token from the batch just decoded and streams its text.
    fn sample(&mut self, slot_id: usize) {
        self.slots[slot_id].staged = None;
        let Some(seq) = self.slots[slot_id].sequence.as_mut() else {
            return;
        };
        match advance(seq, &self.ctx, self.model, &mut self.piece) {
            Step::Continue => {}
            Step::Finish(outcome) => self.finish(slot_id, outcome),
            Step::ClientGone => self.leave(slot_id),
        }
    }

    /// Frees the slot of a sequence whose client has gone, saying how far it had come.
    fn leave(&mut self, slot_id: usize) {
        if let Some(seq) = self.slots[slot_id].sequence.take() {
            tracing::info!(
                slot_id,
                prompt_tokens = seq.prompt.len(),
                prefilled = seq.prefilled,
                generated = seq.generated,
                "client left; generation stopped"
            );
        }
    }

    /// Sends the final event and frees the slot (its cells stay cached).
    fn finish(&mut self, slot_id: usize, outcome: Result<FinishReason, EngineError>) {
        let Some(mut seq) = self.slots[slot_id].sequence.take() else {
            return;
        };
        let (mut tail, _) = seq.stop.push(seq.utf8.finish());
        tail.push_str(&seq.stop.finish());
        if !tail.is_empty() {
            let _ = seq.events.try_send(GenerationEvent::Text(tail));
        }
        let event = match outcome {
            Ok(finish_reason) => {
                let now = Instant::now();
                GenerationEvent::Done(GenerationSummary {
                    finish_reason,
                    prompt_tokens: seq.prompt.len(),
                    cached_tokens: seq.cached,
                    completion_tokens: seq.generated,
                    queue_wait: seq.admitted - seq.submitted,
                    time_to_first_token: seq.first_token.unwrap_or(now) - seq.submitted,
                    total_time: now - seq.submitted,
                })
            }
            Err(e) => GenerationEvent::Failed(e),
        };
        let _ = seq.events.try_send(event);
    }
}

/// What a sequence does after a decode step.
enum Step {
    Continue,
    Finish(Result<FinishReason, EngineError>),
    ClientGone,
}

/// Samples the sequence's next token (if its logits were computed) and streams its text.
fn advance(seq: &mut Sequence, ctx: &LlamaContext<'_>, model: &Model, piece: &mut Vec<u8>) -> Step {
    let Some(index) = seq.logits_index else {
        return Step::Continue; // Still processing its prompt.
    };
    let token = match seq.sampler.sample(ctx, index) {
        Ok(token) => token,
        Err(e) => return Step::Finish(Err(e)),
    };
    seq.first_token.get_or_insert_with(Instant::now);
    if model.is_end_of_generation(token) {
        return Step::Finish(Ok(FinishReason::Stop));
    }
    seq.generated += 1;
    model.token_bytes(token, piece);
    let (text, stopped) = seq.stop.push(seq.utf8.push(piece));
    if !text.is_empty() && seq.events.try_send(GenerationEvent::Text(text)).is_err() {
        return Step::ClientGone;
    }
    if stopped {
        return Step::Finish(Ok(FinishReason::Stop));
    }
    if seq.generated >= seq.max_new_tokens {
        return Step::Finish(Ok(FinishReason::Length));
    }
    seq.next_input = Some(token);
    Step::Continue
}

/// Length of the common prefix of two token sequences.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
