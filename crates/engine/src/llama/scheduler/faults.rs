//! Fault injection for the tests that prove a dead engine is noticed and that one failing
//! sequence does not take the others down. Compiled only with the `fault-injection` feature
//! (`scripts/test` enables it); the product build has neither the code nor the flags.

use llama_cpp_2::token::LlamaToken;

use super::Scheduler;

/// The faults to inject, from the `--debug-*` flags.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The engine thread panics at this decode step.
    pub panic_at_step: Option<u64>,
    /// At the first decode step where two or more sequences are generating, the first of them
    /// feeds a token id outside the vocabulary, which llama.cpp refuses.
    pub corrupt_token_when_batched: bool,
    /// Decode steps so far.
    steps: u64,
}

impl Faults {
    pub fn new(panic_at_step: Option<u64>, corrupt_token_when_batched: bool) -> Self {
        Self {
            panic_at_step,
            corrupt_token_when_batched,
            steps: 0,
        }
    }
}

impl Scheduler<'_> {
    /// Called before every decode step.
    pub(super) fn inject_faults(&mut self) {
        self.faults.steps += 1;
        if self.faults.panic_at_step == Some(self.faults.steps) {
            panic!(
                "fault injection: engine panic at decode step {}",
                self.faults.steps
            );
        }
        if !self.faults.corrupt_token_when_batched {
            return;
        }
        let mut generating = self
            .slots
            .iter_mut()
            .filter_map(|s| s.sequence.as_mut())
            .filter(|s| !s.next_input.is_empty())
            .peekable();
        let Some(first) = generating.next() else {
            return;
        };
        if generating.peek().is_some() {
            self.faults.corrupt_token_when_batched = false;
            first.next_input = vec![LlamaToken::new(self.model.llama().n_vocab() + 100)];
        }
    }
}
