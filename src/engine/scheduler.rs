//! The one inference thread. It owns the llama.cpp context (`LlamaContext` is not `Sync`) and
//! serves every request through slots: each slot is one llama.cpp sequence with its share of the
//! context window. Each decode step carries one token for every generating slot plus a chunk of
//! any prompt still being processed, so a newly admitted request starts while others stream.
//!
//! Handlers only see [`EngineHandle::submit`], which returns a receiver of [`GenerationEvent`]s.
//! A dropped receiver means the client left: its slot and KV cells are freed at the next step.

use std::num::NonZeroU32;
use std::sync::mpsc::{
    self as std_mpsc, Receiver as JobReceiver, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::detok::Utf8Assembler;
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
}

/// One generation: a prompt, how many tokens it may add, and how to pick them.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
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
    pub completion_tokens: usize,
    /// From admission to the first generated token (prompt processing included).
    pub time_to_first_token: Duration,
    /// From admission to the end.
    pub total_time: Duration,
}

/// What the engine sends back for one request: text pieces (always valid UTF-8), then exactly one
/// `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum GenerationEvent {
    Text(String),
    Done(GenerationSummary),
    Failed(EngineError),
}

struct Job {
    request: GenerationRequest,
    events: mpsc::Sender<GenerationEvent>,
}

/// The way into the engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    model: Arc<Model>,
    jobs: SyncSender<Job>,
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

    /// Queues a generation. Refuses at once when the prompt does not fit a slot, when the queue
    /// is full, or when the engine has stopped.
    pub fn submit(
        &self,
        mut request: GenerationRequest,
    ) -> Result<mpsc::Receiver<GenerationEvent>, EngineError> {
        request.max_new_tokens = budget::max_new_tokens(
            request.prompt.len(),
            request.max_new_tokens,
            self.slot_context,
        )?;
        if request.prompt.is_empty() {
            return Err(EngineError::InvalidPrompt("the prompt is empty".into()));
        }
        // Room for every text piece plus the final event: the engine never blocks on a client.
        let (events, receiver) = mpsc::channel(request.max_new_tokens + 2);
        match self.jobs.try_send(Job { request, events }) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(EngineError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::Stopped),
        }
    }
}

/// Starts the inference thread and waits until its context exists.
pub fn start(model: Arc<Model>, settings: EngineSettings) -> Result<EngineHandle, EngineError> {
    let (jobs, job_receiver) = std_mpsc::sync_channel::<Job>(settings.queue_size.max(1));
    let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Result<usize, EngineError>>(1);
    let thread_model = Arc::clone(&model);
    thread::Builder::new()
        .name("llama-engine".into())
        .spawn(move || run(&thread_model, &settings, job_receiver, ready_tx))
        .map_err(|e| EngineError::Context(format!("cannot start the engine thread: {e}")))?;
    let slot_context = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
    Ok(EngineHandle {
        model,
        jobs,
        slot_context,
    })
}

fn run(
    model: &Model,
    settings: &EngineSettings,
    jobs: JobReceiver<Job>,
    ready: SyncSender<Result<usize, EngineError>>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(settings.ctx_size))
        .with_n_batch(settings.batch_size)
        .with_n_ubatch(settings.batch_size)
        .with_n_seq_max(settings.parallel)
        // One pool of KV cells for all sequences: lets a later step copy a shared prefix
        // between sequences. Each slot still gets at most its share (enforced by the budget).
        .with_kv_unified(true)
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
    Scheduler::new(model, ctx, settings).serve(&jobs);
    tracing::info!("inference engine stopped");
}

/// A request in a slot.
struct Sequence {
    events: mpsc::Sender<GenerationEvent>,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    max_new_tokens: usize,
    generated: usize,
    /// The token to feed at the next step once the prompt is in.
    next_input: Option<LlamaToken>,
    sampler: TokenSampler,
    utf8: Utf8Assembler,
    /// Index of this sequence's logits in the batch just decoded.
    logits_index: Option<i32>,
    admitted: Instant,
    first_token: Option<Instant>,
}

impl Sequence {
    fn position(&self) -> i32 {
        (self.prefilled + self.generated) as i32
    }
}

struct Scheduler<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    slots: Vec<Option<Sequence>>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    piece: Vec<u8>,
}

impl<'m> Scheduler<'m> {
    fn new(model: &'m Model, ctx: LlamaContext<'m>, settings: &EngineSettings) -> Self {
        Self {
            model,
            ctx,
            slots: (0..settings.parallel).map(|_| None).collect(),
            batch: LlamaBatch::new(settings.batch_size as usize, 1),
            batch_size: settings.batch_size as usize,
            piece: Vec::with_capacity(16),
        }
    }

    fn serve(mut self, jobs: &JobReceiver<Job>) {
        loop {
            if self.slots.iter().all(Option::is_none) {
                // Idle: sleep until work arrives; every handle gone means shut down.
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while self.slots.iter().any(Option::is_none) {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.drop_abandoned();
            if self.fill_batch() == 0 {
                continue;
            }
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.fail_batch(EngineError::Decode(e.to_string()));
                continue;
            }
            self.sample_all();
        }
    }

    fn admit(&mut self, job: Job) {
        if job.events.is_closed() {
            return; // The client left while queued: no work for it.
        }
        let sampler = match TokenSampler::new(self.model, &job.request.sampling) {
            Ok(sampler) => sampler,
            Err(e) => {
                let _ = job.events.try_send(GenerationEvent::Failed(e));
                return;
            }
        };
        let Some(seq_id) = self.slots.iter().position(Option::is_none) else {
            unreachable!("admit is only called with a free slot");
        };
        self.clear_cells(seq_id);
        self.slots[seq_id] = Some(Sequence {
            events: job.events,
            prompt: job.request.prompt.tokens,
            prefilled: 0,
            max_new_tokens: job.request.max_new_tokens,
            generated: 0,
            next_input: None,
            sampler,
            utf8: Utf8Assembler::new(),
            logits_index: None,
            admitted: Instant::now(),
            first_token: None,
        });
    }

    /// Frees the slots whose client has gone.
    fn drop_abandoned(&mut self) {
        for seq_id in 0..self.slots.len() {
            if self.slots[seq_id]
                .as_ref()
                .is_some_and(|s| s.events.is_closed())
            {
                tracing::info!(seq_id, "client left; generation stopped");
                self.release(seq_id);
            }
        }
    }

    /// One token per generating sequence first (they are what users are waiting on), then prompt
    /// chunks in the room left. Returns the number of tokens in the batch.
    fn fill_batch(&mut self) -> usize {
        self.batch.clear();
        for (seq_id, slot) in self.slots.iter_mut().enumerate() {
            let Some(seq) = slot else { continue };
            seq.logits_index = None;
            if let Some(token) = seq.next_input {
                let position = seq.position() - 1;
                self.batch
                    .add(token, position, &[seq_id as i32], true)
                    .expect("batch holds one token per slot");
                seq.logits_index = Some(self.batch.n_tokens() - 1);
            }
        }
        for (seq_id, slot) in self.slots.iter_mut().enumerate() {
            let Some(seq) = slot else { continue };
            if seq.next_input.is_some() || seq.prefilled == seq.prompt.len() {
                continue;
            }
            let room = self.batch_size - self.batch.n_tokens() as usize;
            let chunk_end = (seq.prefilled + room).min(seq.prompt.len());
            for i in seq.prefilled..chunk_end {
                let last = i + 1 == seq.prompt.len();
                self.batch
                    .add(seq.prompt[i], i as i32, &[seq_id as i32], last)
                    .expect("chunk sized to the batch");
            }
            seq.prefilled = chunk_end;
            if chunk_end == seq.prompt.len() {
                seq.logits_index = Some(self.batch.n_tokens() - 1);
            }
            if self.batch.n_tokens() as usize == self.batch_size {
                break;
            }
        }
        self.batch.n_tokens() as usize
    }

    fn sample_all(&mut self) {
        for seq_id in 0..self.slots.len() {
            let Some(seq) = self.slots[seq_id].as_mut() else {
                continue;
            };
            match advance(seq, &self.ctx, self.model, &mut self.piece) {
                Step::Continue => {}
                Step::Finish(outcome) => self.finish(seq_id, outcome),
                Step::ClientGone => {
                    tracing::info!(seq_id, "client left; generation stopped");
                    self.release(seq_id);
                }
            }
        }
    }

    /// Sends the final event and frees the slot.
    fn finish(&mut self, seq_id: usize, outcome: Result<FinishReason, EngineError>) {
        let Some(mut seq) = self.slots[seq_id].take() else {
            return;
        };
        let tail = seq.utf8.finish();
        if !tail.is_empty() {
            let _ = seq.events.try_send(GenerationEvent::Text(tail));
        }
        let event = match outcome {
            Ok(finish_reason) => {
                let now = Instant::now();
                GenerationEvent::Done(GenerationSummary {
                    finish_reason,
                    prompt_tokens: seq.prompt.len(),
                    completion_tokens: seq.generated,
                    time_to_first_token: seq.first_token.unwrap_or(now) - seq.admitted,
                    total_time: now - seq.admitted,
                })
            }
            Err(e) => GenerationEvent::Failed(e),
        };
        let _ = seq.events.try_send(event);
        self.clear_cells(seq_id);
    }

    /// Fails every sequence that had tokens in the failed batch.
    fn fail_batch(&mut self, error: EngineError) {
        tracing::error!(%error, "decode failed");
        for seq_id in 0..self.slots.len() {
            if self.slots[seq_id].is_some() {
                self.finish(seq_id, Err(error.clone()));
            }
        }
    }

    fn release(&mut self, seq_id: usize) {
        self.slots[seq_id] = None;
        self.clear_cells(seq_id);
    }

    fn clear_cells(&mut self, seq_id: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
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
    seq.next_input = Some(token);
    model.token_bytes(token, piece);
    let text = seq.utf8.push(piece);
    if !text.is_empty() && seq.events.try_send(GenerationEvent::Text(text)).is_err() {
        return Step::ClientGone;
    }
    if seq.generated >= seq.max_new_tokens {
        return Step::Finish(Ok(FinishReason::Length));
    }
    Step::Continue
}
