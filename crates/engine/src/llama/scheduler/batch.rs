//! Batch building, decode and failure isolation. Each decode step carries one token for every
//! generating slot first (they are what users are waiting on), then prompt chunks in the room
//! left (continuous batching): a newly admitted request starts while others stream, and a long
//! prompt holds the others back for at most one chunk.
//!
//! With `--step-overlap` (by default where layers run on a GPU and the CPU would wait), a helper
//! thread, started once with the engine ([`StepHelper`]), does the host work that does not decide
//! the next token while `llama_decode` runs: the
//! text of the tokens chosen at the last step goes out (UTF-8 assembly, stop strings, events) and
//! constrained sequences' next masks are computed. Without it the text goes out right after the
//! sampling, before the next batch is built, so that no client waits a step for it.
//!
//! llama.cpp reports a failed decode per batch, not per sequence. Every slot remembers what it
//! staged, so a failed batch is undone and retried sequence by sequence, and only the sequence
//! that fails on its own gets the error.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;

use super::sequence::Sequence;
use super::stream::StreamEnd;
use super::Scheduler;
use crate::llama::model::Model;
use crate::llama::LlamaError;
use crate::EngineError;

/// One llama.cpp sequence: its cached cells and, when busy, the request it serves.
#[derive(Default)]
pub struct Slot {
    /// The tokens whose KV cells this sequence holds, in position order.
    pub cells: Vec<LlamaToken>,
    pub sequence: Option<Sequence>,
    /// Admission counter value when last used (to evict the least recently used cache).
    pub last_used: u64,
    /// What this slot put into the batch being decoded, to undo it if the decode fails.
    pub staged: Option<Staged>,
    /// A finished answer's last tokens, to be decoded into the cells when a step has room.
    pub tail: Vec<LlamaToken>,
}

/// A slot's share of one decode step: its cells from this position on.
#[derive(Debug, Clone, Copy)]
pub enum Staged {
    /// Answer tokens: the one sampled at the last step and those its constraint forced.
    Input { from: usize },
    /// Prompt tokens.
    Chunk { from: usize },
    /// A finished answer's tail; nothing waits on it.
    Tail { from: usize },
}

impl Scheduler<'_> {
    /// Builds the next batch and decodes it; then every slot whose logits came back samples.
    /// Counts the step's time in `llama_decode` and on the host around it (`EngineStats::steps`).
    pub(super) fn step(&mut self) {
        let started = Instant::now();
        let tokens = self.fill_batch();
        if tokens == 0 {
            return;
        }
        let (decoded, ends, decode) = self.decode_beside_host_work();
        self.end_streams(&ends);
        match decoded {
            Ok(()) => self.sample_all(),
            Err(e) => self.isolate_failure(LlamaError::Decode(e.to_string()).into()),
        }
        if self.helper.is_none() {
            let ends = host_work(&mut self.slots, self.model, false);
            self.end_streams(&ends);
        }
        let host = started.elapsed().saturating_sub(decode);
        let shared = self.shared;
        shared.steps.fetch_add(1, Ordering::Relaxed);
        shared
            .decode_ns
            .fetch_add(decode.as_nanos() as u64, Ordering::Relaxed);
        shared
            .host_ns
            .fetch_add(host.as_nanos() as u64, Ordering::Relaxed);
        tracing::trace!(
            tokens,
            decode_us = decode.as_micros() as u64,
            host_us = host.as_micros() as u64,
            "decode step"
        );
    }

    /// Decodes the batch; with `step_overlap`, a helper thread sends the text chosen at the last
    /// step and computes the masks this step's sampling may need meanwhile. Returns the decode's
    /// outcome, the streams that ended (their sequences are ended before sampling: their staged
    /// token was decoded for nothing, no more) and the time inside `llama_decode`.
    fn decode_beside_host_work(
        &mut self,
    ) -> (
        Result<(), llama_cpp_2::DecodeError>,
        Vec<(usize, StreamEnd)>,
        Duration,
    ) {
        let work = |seq: &Sequence| seq.stream.has_unsent() || seq.needs_mask();
        let busy = self
            .slots
            .iter()
            .filter_map(|s| s.sequence.as_ref())
            .any(work);
        let Some(helper) = self.helper.as_ref().filter(|_| busy) else {
            let decoding = Instant::now();
            let decoded = self.ctx.decode(&mut self.batch);
            return (decoded, Vec::new(), decoding.elapsed());
        };
        // The slots go to the helper and come back: nothing else touches them meanwhile.
        helper.lend(std::mem::take(&mut self.slots));
        let decoding = Instant::now();
        let decoded = self.ctx.decode(&mut self.batch);
        let decode = decoding.elapsed();
        let (slots, ends) = helper.take_back();
        self.slots = slots;
        (decoded, ends, decode)
    }

    /// Generating sequences first, then prompt chunks. Returns the number of tokens staged.
    fn fill_batch(&mut self) -> usize {
        self.batch.clear();
        let (generating, prefilling): (Vec<usize>, Vec<usize>) = (0..self.slots.len())
            .filter(|&id| self.slots[id].sequence.is_some())
            .partition(|&id| {
                self.slots[id]
                    .sequence
                    .as_ref()
                    .is_some_and(|s| !s.next_input.is_empty())
            });
        for slot_id in generating.into_iter().chain(prefilling) {
            self.stage(slot_id);
        }
        self.stage_tails();
        self.batch.n_tokens() as usize
    }

    /// Decodes the tails still pending, before a request is admitted: its prompt likely begins
    /// with one of them (the next turn of that conversation).
    pub(super) fn decode_tails(&mut self) {
        if self.slots.iter().all(|s| s.tail.is_empty()) {
            return;
        }
        self.batch.clear();
        self.stage_tails();
        if self.batch.n_tokens() == 0 {
            return;
        }
        if self.ctx.decode(&mut self.batch).is_err() {
            for slot_id in 0..self.slots.len() {
                self.unstage(slot_id);
            }
        }
        for slot in &mut self.slots {
            slot.staged = None;
        }
    }

    /// Adds the tails of finished answers that fit whole in the room left (last: no client waits
    /// on them).
    fn stage_tails(&mut self) {
        for slot_id in 0..self.slots.len() {
            let room = self.batch_size - self.batch.n_tokens() as usize;
            let slot = &mut self.slots[slot_id];
            if slot.sequence.is_some() || slot.tail.is_empty() || slot.tail.len() > room {
                continue;
            }
            let from = slot.cells.len();
            for (i, &token) in slot.tail.iter().enumerate() {
                self.batch
                    .add(token, (from + i) as i32, &[slot_id as i32], false)
                    .expect("the tail is sized to the room");
            }
            slot.cells.append(&mut slot.tail);
            slot.staged = Some(Staged::Tail { from });
        }
    }

    /// Adds a slot's work to the batch: the tokens it sampled or was forced last, or the next chunk
    /// of its prompt, as much as fits. Remembers what it added, so that a failed decode can be
    /// undone.
    fn stage(&mut self, slot_id: usize) {
        let room = self.batch_size - self.batch.n_tokens() as usize;
        let slot = &mut self.slots[slot_id];
        slot.staged = None;
        let Some(seq) = slot.sequence.as_mut() else {
            return;
        };
        seq.logits_index = None;
        if !seq.next_input.is_empty() {
            // Forced tokens beyond the room wait for the next step; logits come with the last.
            let take = seq.next_input.len().min(room);
            if take == 0 {
                return;
            }
            let from = slot.cells.len();
            let all = take == seq.next_input.len();
            for (i, &token) in seq.next_input[..take].iter().enumerate() {
                let last = all && i + 1 == take;
                self.batch
                    .add(token, (from + i) as i32, &[slot_id as i32], last)
                    .expect("the tokens are sized to the room");
            }
            slot.cells.extend(seq.next_input.drain(..take));
            // Drafts go after the whole input only, each with its logits, as many as fit.
            if all {
                seq.logits_index = Some(self.batch.n_tokens() - 1);
                seq.drafts.truncate(room - take);
            } else {
                seq.drafts.clear();
            }
            let at = slot.cells.len();
            for (i, &token) in seq.drafts.iter().enumerate() {
                self.batch
                    .add(token, (at + i) as i32, &[slot_id as i32], true)
                    .expect("the drafts are sized to the room");
            }
            slot.cells.extend_from_slice(&seq.drafts);
            slot.staged = Some(Staged::Input { from });
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
        let (Staged::Input { from } | Staged::Chunk { from } | Staged::Tail { from }) = staged;
        let mut taken = slot.cells.split_off(from);
        if let Some(seq) = slot.sequence.as_mut() {
            match staged {
                Staged::Input { .. } => {
                    // Its drafts are dropped: the input is staged again without them.
                    taken.truncate(taken.len() - seq.drafts.len());
                    seq.drafts.clear();
                    seq.next_input.splice(0..0, taken);
                }
                Staged::Chunk { from } => seq.prefilled = from,
                Staged::Tail { .. } => {}
            }
            seq.logits_index = None;
        }
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot_id as u32), Some(from as u32), None);
    }

    /// Undoes the failed batch and decodes each sequence on its own, so only the sequence that
    /// fails again gets the error.
    fn isolate_failure(&mut self, error: EngineError) {
        let staged: Vec<usize> = (0..self.slots.len())
            .filter(|&id| self.slots[id].staged.is_some())
            .collect();
        tracing::warn!(%error, sequences = staged.len(), "decode failed; retrying sequence by sequence");
        for &slot_id in &staged {
            self.unstage(slot_id);
        }
        // A finished answer's tail is dropped: only its next turn's prefix reuse would miss it.
        let retried = staged
            .into_iter()
            .filter(|&id| self.slots[id].sequence.is_some());
        for slot_id in retried.collect::<Vec<_>>() {
            self.batch.clear();
            self.stage(slot_id);
            match self.ctx.decode(&mut self.batch) {
                Ok(()) => self.sample(slot_id),
                Err(e) => {
                    tracing::error!(slot_id, error = %e, "decode failed for this sequence");
                    self.shared
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.slots[slot_id].staged = None;
                    self.finish(slot_id, Err(LlamaError::Decode(e.to_string()).into()));
                    self.slots[slot_id].cells.clear();
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot_id as u32), None, None);
                }
            }
        }
    }
}

/// The slots back from the helper, and the streams that ended during the step.
type HostWorkDone = (Vec<Slot>, Vec<(usize, StreamEnd)>);

/// The thread that does a step's host work while `llama_decode` runs, for as long as the engine:
/// the slots are lent to it for the step and handed back.
pub struct StepHelper {
    work: Option<SyncSender<Vec<Slot>>>,
    done: Receiver<HostWorkDone>,
    thread: Option<JoinHandle<()>>,
}

impl StepHelper {
    pub fn start(model: Arc<Model>) -> std::io::Result<Self> {
        let (work, slots_to_do) = mpsc::sync_channel::<Vec<Slot>>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("llama-step-host".into())
            .spawn(move || {
                for mut slots in slots_to_do {
                    let ends = host_work(&mut slots, &model, true);
                    if done_tx.send((slots, ends)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            work: Some(work),
            done,
            thread: Some(thread),
        })
    }

    fn lend(&self, slots: Vec<Slot>) {
        let sent = self.work.as_ref().map(|work| work.send(slots));
        assert!(
            matches!(sent, Some(Ok(()))),
            "the step helper thread has stopped"
        );
    }

    /// The slots back, and the streams that ended. A panic on the helper is the engine's.
    fn take_back(&self) -> HostWorkDone {
        self.done
            .recv()
            .expect("the step helper thread panicked during a step")
    }
}

impl Drop for StepHelper {
    fn drop(&mut self) {
        // Closing its work channel ends the thread's loop.
        self.work = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The host work between two steps: each sequence's pending text sent, and with `masks_ahead` its
/// next mask computed when its logits come out of this step. Returns the streams that ended.
fn host_work(slots: &mut [Slot], model: &Model, masks_ahead: bool) -> Vec<(usize, StreamEnd)> {
    let mut ends = Vec::new();
    for (slot_id, slot) in slots.iter_mut().enumerate() {
        let Some(seq) = slot.sequence.as_mut() else {
            continue;
        };
        if let Some(end) = seq.stream.flush(model) {
            ends.push((slot_id, end));
            continue;
        }
        if masks_ahead && seq.needs_mask() {
            if let Some(constraint) = seq.sampler.constraint_mut() {
                constraint.prepare_mask();
            }
        }
    }
    ends
}
