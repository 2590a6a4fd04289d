//! A small fixed pool of threads for the CPU work of new requests (rendering, tokenizing,
//! compiling grammars). Not the async workers, which would stop serving other clients meanwhile;
//! not the inference thread, which would stall every running stream; and not the runtime's
//! blocking pool, which grows a thread per concurrent request under a burst.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use crate::engine::EngineError;

type Task = Box<dyn FnOnce() + Send>;

/// The submitting side of the pool; cheap to clone. The threads end when every clone is gone.
#[derive(Clone)]
pub struct PreparePool {
    tasks: Sender<Task>,
}

impl PreparePool {
    pub fn start(threads: usize) -> Result<Self, EngineError> {
        let (tasks, queue) = mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("llama-prepare-{i}"))
                .spawn(move || work(&queue))
                .map_err(|e| EngineError::Context(format!("cannot start a thread: {e}")))?;
        }
        Ok(Self { tasks })
    }

    /// Runs `task` on the pool and waits for its result without blocking the caller's thread.
    pub async fn run<T: Send + 'static>(
        &self,
        task: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let (result_tx, result_rx) = oneshot::channel();
        let wrapped: Task = Box::new(move || {
            let _ = result_tx.send(catch_unwind(AssertUnwindSafe(task)));
        });
        self.tasks.send(wrapped).map_err(|_| EngineError::Stopped)?;
        match result_rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EngineError::Internal(
                "preparing the request panicked".into(),
            )),
            Err(_) => Err(EngineError::Stopped),
        }
    }
}

fn work(queue: &Mutex<Receiver<Task>>) {
    loop {
        // The lock is held only while taking a task, not while running it.
        let task = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match task {
            Ok(task) => task(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_pool_and_a_panic_is_an_error_not_a_dead_pool() {
        let pool = PreparePool::start(1).unwrap();
        let name = pool
            .run(|| Ok(thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("llama-prepare-0"));
        let panicked = pool
            .run(|| -> Result<(), EngineError> { panic!("bug") })
            .await;
        assert!(matches!(panicked, Err(EngineError::Internal(_))));
        assert_eq!(pool.run(|| Ok(2 + 2)).await.unwrap(), 4);
    }
}
