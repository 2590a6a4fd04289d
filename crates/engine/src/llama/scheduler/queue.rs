//! The queue and admission: the bounded queue between the async side and the engine thread, and
//! the engine thread's handling of waiting requests (expiry, abandonment, admission to slots).
//!
//! The queue is bounded by a counter, not by the channel: the submitting side refuses a request
//! at once when `queue_size` are waiting (503 with `Retry-After`), and the engine thread
//! decrements the counter when a request leaves the queue for any reason.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::sequence::Sequence;
use super::slots::{self, Reuse};
use super::Scheduler;
use crate::llama::sampling::TokenSampler;
use crate::tokenizer::replay::PromptKey;
use crate::{EngineError, EngineStats, EventSender, GenerationEvent, GenerationEvents, StepTimes};

/// A request ready for the inference thread: tokenized, sized, its sampler built (grammar
/// compiled), so that the inference thread only decodes.
pub struct PreparedRequest {
    /// The prompt's tokens, then the `lead` tokens the answer's constraint forces first.
    pub prompt: Vec<LlamaToken>,
    /// The prompt the answer is remembered after, for the conversation's next turn.
    pub after: Option<PromptKey>,
    pub lead: usize,
    pub max_new_tokens: usize,
    pub sampler: TokenSampler,
    pub stop: Vec<String>,
    /// Feed the tokens the constraint forces in one batch.
    pub fast_forward: bool,
    /// Draft tokens from the sequence's own text and check them in the same step.
    pub speculation: bool,
    /// When the answer's grammar starts, when not from its first token (after the thinking, at
    /// the start of offered calls).
    pub guide: Option<super::tool_use::AnswerGuide>,
    /// Reads the answer's thinking and calls apart from its text.
    pub reader: Option<super::reader::AnswerReader>,
    /// Report each token's log probability and this many most likely tokens.
    pub logprobs: Option<usize>,
    /// Special tokens are sent as their text.
    pub special_text: bool,
    /// One of the choices of a request for several (`n`): they share the prompt's cells.
    pub group: Option<ChoiceGroup>,
    /// When the API handed the request to the engine (before tokenizing).
    pub submitted: Instant,
}

/// The choices of one request for several answers. The leader computes the prompt; the others
/// wait until its cells are there, then copy them (the slot choice copies a shared prefix by
/// itself) and compute only the last token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChoiceGroup {
    pub id: u64,
    pub leader: bool,
}

/// A queued request and where its events go.
pub struct Job {
    pub request: PreparedRequest,
    pub events: EventSender,
}

pub enum Command {
    /// Boxed: a request carries its compiled constraint, kilobytes in place.
    Generate(Box<Job>),
    /// Ends every queued and running request with this error (graceful stop past its deadline).
    AbortAll(EngineError),
    /// Loads a saved prompt prefix into a free slot (at start, before any request).
    Restore {
        path: PathBuf,
        tokens: Vec<LlamaToken>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Saves the cells of the slot holding `tokens` to `path`.
    Save {
        path: PathBuf,
        tokens: Vec<LlamaToken>,
        done: oneshot::Sender<Result<usize, String>>,
    },
}

/// Counters shared by the queue's two sides.
#[derive(Debug)]
pub struct Shared {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    pub alive: AtomicBool,
    /// Set once by `abort_all`: every request, queued, running or submitted later, ends with it.
    pub aborted: Mutex<Option<EngineError>>,
    /// Sequences ended by a decode failure.
    pub errors: AtomicU64,
    pub queue_size: usize,
    /// The id of the next group of choices.
    pub groups: AtomicU64,
    /// Decode steps, and nanoseconds in `llama_decode` and on the host around it.
    pub steps: AtomicU64,
    pub decode_ns: AtomicU64,
    pub host_ns: AtomicU64,
}

impl Shared {
    /// The error every request ends with since `abort_all`, if it was called.
    pub fn aborted(&self) -> Option<EngineError> {
        self.aborted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn new(queue_size: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
            aborted: Mutex::new(None),
            errors: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            queue_size: queue_size.max(1),
            steps: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            host_ns: AtomicU64::new(0),
        }
    }
}

/// The submitting side of the queue; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    pub(super) commands: Sender<Command>,
    pub(super) shared: std::sync::Arc<Shared>,
}

impl JobQueue {
    /// Queues a request and returns its events. Refuses when the queue is full or the engine has
    /// stopped.
    pub fn push(&self, request: PreparedRequest) -> Result<GenerationEvents, EngineError> {
        if !self.shared.alive.load(Ordering::Relaxed) {
            return Err(EngineError::Stopped);
        }
        if let Some(error) = self.shared.aborted() {
            return Err(error);
        }
        if self.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.shared.queue_size {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Overloaded);
        }
        let (events, receiver) = mpsc::unbounded_channel();
        if self
            .commands
            .send(Command::Generate(Box::new(Job { request, events })))
            .is_err()
        {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Stopped);
        }
        Ok(receiver)
    }

    /// Queues the choices of one request (all of them, or none when the queue has no room for
    /// them all) and returns their events, in order.
    pub fn push_group(
        &self,
        mut requests: Vec<PreparedRequest>,
    ) -> Result<Vec<GenerationEvents>, EngineError> {
        let n = requests.len();
        if self.shared.queued.fetch_add(n, Ordering::AcqRel) + n > self.shared.queue_size {
            self.shared.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(EngineError::Overloaded);
        }
        self.shared.queued.fetch_sub(n, Ordering::AcqRel);
        let id = self.shared.groups.fetch_add(1, Ordering::Relaxed);
        for (i, request) in requests.iter_mut().enumerate() {
            request.group = Some(ChoiceGroup { id, leader: i == 0 });
        }
        let mut events = Vec::with_capacity(n);
        for request in requests {
            events.push(self.push(request)?);
        }
        Ok(events)
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            active: self.shared.active.load(Ordering::Relaxed),
            queued: self.shared.queued.load(Ordering::Relaxed),
            alive: self.shared.alive.load(Ordering::Relaxed),
            engine: "llama.cpp",
            errors: self.shared.errors.load(Ordering::Relaxed),
            steps: StepTimes {
                steps: self.shared.steps.load(Ordering::Relaxed),
                decode: Duration::from_nanos(self.shared.decode_ns.load(Ordering::Relaxed)),
                host: Duration::from_nanos(self.shared.host_ns.load(Ordering::Relaxed)),
            },
        }
    }

    /// Ends every request with `error`: those queued or running now, and those still being
    /// prepared, which are refused when they arrive (the flag is set before the command is sent,
    /// so a request the inference thread takes after the command sees it).
    pub fn abort_all(&self, error: EngineError) {
        *self
            .shared
            .aborted
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
        let _ = self.commands.send(Command::AbortAll(error));
    }

    /// Loads the KV cells of `tokens` saved at `path` into a slot; an error says why not.
    pub async fn restore(&self, path: PathBuf, tokens: Vec<LlamaToken>) -> Result<(), String> {
        self.ask(|done| Command::Restore { path, tokens, done })
            .await
    }

    /// Saves the KV cells of the slot holding `tokens` to `path`; the bytes written.
    pub async fn save(&self, path: PathBuf, tokens: Vec<LlamaToken>) -> Result<usize, String> {
        self.ask(|done| Command::Save { path, tokens, done }).await
    }

    /// Sends the inference thread a command that answers, and waits for the answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        const STOPPED: &str = "the engine has stopped";
        let (done, answer) = oneshot::channel();
        self.commands
            .send(command(done))
            .map_err(|_| STOPPED.to_owned())?;
        answer.await.map_err(|_| STOPPED.to_owned())?
    }
}

impl Scheduler<'_> {
    pub(super) fn handle(&mut self, command: Command) {
        match command {
            Command::Generate(job) => match self.shared.aborted() {
                Some(error) => {
                    self.leave_queue();
                    let _ = job.events.send(GenerationEvent::Failed(error));
                }
                None => self.waiting.push_back(*job),
            },
            Command::AbortAll(error) => {
                for job in std::mem::take(&mut self.waiting) {
                    self.leave_queue();
                    let _ = job.events.send(GenerationEvent::Failed(error.clone()));
                }
                for slot_id in 0..self.slots.len() {
                    if self.slots[slot_id].sequence.is_some() {
                        self.finish(slot_id, Err(error.clone()));
                    }
                }
            }
            Command::Restore { path, tokens, done } => {
                let _ = done.send(self.restore(&path, &tokens));
            }
            Command::Save { path, tokens, done } => {
                let _ = done.send(self.save(&path, &tokens));
            }
        }
    }

    /// Loads a saved prefix into the least recently used free slot; checks that its tokens are
    /// the ones expected (a file for another instruction or vocabulary is refused).
    fn restore(&mut self, path: &std::path::Path, tokens: &[LlamaToken]) -> Result<(), String> {
        let slot_id = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sequence.is_none())
            .min_by_key(|(_, s)| s.last_used)
            .map(|(id, _)| id)
            .ok_or("no free slot")?;
        let seq = slot_id as i32;
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot_id as u32), None, None);
        self.slots[slot_id].cells.clear();
        let loaded = self.ctx.state_seq_load_file(path, seq, tokens.len());
        match loaded {
            Ok((found, _)) if found == tokens => {
                self.slots[slot_id].cells = found;
                Ok(())
            }
            outcome => {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot_id as u32), None, None);
                Err(match outcome {
                    Ok(_) => "it holds other tokens".to_owned(),
                    Err(e) => format!("llama.cpp could not load it ({e})"),
                })
            }
        }
    }

    /// Saves the cells of the slot that holds `tokens` (all of them) to `path`.
    fn save(&mut self, path: &std::path::Path, tokens: &[LlamaToken]) -> Result<usize, String> {
        let slot_id = self
            .slots
            .iter()
            .position(|s| s.cells.starts_with(tokens))
            .ok_or("no slot holds the prefix")?;
        let slot = &mut self.slots[slot_id];
        if slot.cells.len() != tokens.len() {
            // What the warm-up generated after the prefix (its one token) is not saved.
            let cut = slot.sequence.is_none()
                && matches!(
                    self.ctx.clear_kv_cache_seq(
                        Some(slot_id as u32),
                        Some(tokens.len() as u32),
                        None
                    ),
                    Ok(true)
                );
            if !cut {
                return Err("the slot holds more than the prefix".into());
            }
            slot.cells.truncate(tokens.len());
        }
        slot.tail.clear();
        self.ctx
            .state_seq_save_file(path, slot_id as i32, tokens)
            .map_err(|e| e.to_string())
    }

    /// Queued requests whose client left are dropped without any decoding; those that waited
    /// too long are refused.
    pub(super) fn expire_waiting(&mut self) {
        let timeout = self.queue_timeout;
        let before = self.waiting.len();
        self.waiting.retain(|job| {
            if job.events.is_closed() {
                return false;
            }
            if job.request.submitted.elapsed() > timeout {
                let _ = job
                    .events
                    .send(GenerationEvent::Failed(EngineError::QueueTimeout {
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

    /// Moves waiting jobs into free slots, oldest first; a choice waits for its leader's
    /// prompt to be computed (see [`ChoiceGroup`]).
    pub(super) fn admit_waiting(&mut self) {
        let mut index = 0;
        while index < self.waiting.len() && self.slots.iter().any(|s| s.sequence.is_none()) {
            if self.waits_for_its_leader(&self.waiting[index]) {
                index += 1;
                continue;
            }
            let job = self.waiting.remove(index).expect("index is in range");
            self.leave_queue();
            self.admit(job);
        }
    }

    /// A choice whose leader is still queued or still computing the shared prompt.
    fn waits_for_its_leader(&self, job: &Job) -> bool {
        let Some(group) = job.request.group.filter(|g| !g.leader) else {
            return false;
        };
        let leads = |g: Option<ChoiceGroup>| g.is_some_and(|g| g.id == group.id && g.leader);
        self.waiting.iter().any(|j| leads(j.request.group))
            || self
                .slots
                .iter()
                .filter_map(|s| s.sequence.as_ref())
                .any(|seq| leads(seq.group) && seq.prefilled < seq.prompt.len())
    }

    /// A job left the queue (admitted, expired, abandoned or aborted).
    fn leave_queue(&self) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn publish_counts(&self) {
        let active = self.slots.iter().filter(|s| s.sequence.is_some()).count();
        self.shared.active.store(active, Ordering::Relaxed);
    }
}

impl Scheduler<'_> {
    /// Puts a job in a free slot, with the longest cached prefix of its prompt in the slot's
    /// cells (see [`slots::plan_reuse`]); only the rest of the prompt will be computed.
    fn admit(&mut self, job: Job) {
        self.decode_tails();
        let views = self.slot_views();
        let prompt = &job.request.prompt;
        let slot_id =
            slots::pick_slot(&views, prompt).expect("admit is only called with a free slot");
        let reuse = slots::plan_reuse(&views, slot_id, prompt);
        let cached = self.apply_reuse(slot_id, reuse, prompt);
        self.admissions += 1;
        let slot = &mut self.slots[slot_id];
        slot.last_used = self.admissions;
        slot.tail.clear();
        slot.sequence = Some(Sequence::new(job, cached));
    }

    fn slot_views(&self) -> Vec<slots::SlotView<'_>> {
        self.slots
            .iter()
            .map(|s| slots::SlotView {
                free: s.sequence.is_none(),
                cells: &s.cells,
                last_used: s.last_used,
            })
            .collect()
    }

    /// Makes the slot's KV cells match the plan. Returns the number of prompt tokens that need no
    /// computing (0 when llama.cpp refused to copy or trim: the slot then starts from scratch).
    fn apply_reuse(&mut self, slot_id: usize, reuse: Reuse, prompt: &[LlamaToken]) -> usize {
        let seq = slot_id as u32;
        let kept = match reuse {
            Reuse::CopyFrom { donor, n } => {
                let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
                self.ctx
                    .copy_kv_cache_seq(donor as i32, seq as i32, Some(0), Some(n as u32))
                    .is_ok()
                    .then_some(n)
            }
            // A partial removal can fail.
            Reuse::Keep(n) => matches!(
                self.ctx.clear_kv_cache_seq(Some(seq), Some(n as u32), None),
                Ok(true)
            )
            .then_some(n),
        };
        let slot = &mut self.slots[slot_id];
        match kept {
            Some(n) => {
                slot.cells = prompt[..n].to_vec();
                n
            }
            None => {
                let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
                slot.cells.clear();
                0
            }
        }
    }
}
