//! A small fixed pool of threads for the CPU work of new requests (rendering, tokenizing,
//! compiling grammars). Not the async workers, which would stop serving other clients meanwhile;
//! not the inference thread, which would stall every running stream; and not the runtime's
//! blocking pool, which grows a thread per concurrent request under a burst.
//!
//! Its queue is bounded like the slot queue: a request that finds it full is refused at once
//! (503 with `Retry-After`), so that a burst of expensive requests cannot make every later one,
//! cheap or not, wait behind them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use crate::EngineError;

type Task = Box<dyn FnOnce() + Send>;

/// The submitting side of the pool; cheap to clone. The threads end when every clone is gone.
#[derive(Clone)]
pub struct PreparePool {
    tasks: SyncSender<Task>,
}

impl PreparePool {
    /// `threads` workers, and room for `queue` tasks waiting for one.
    pub fn start(threads: usize, queue: usize) -> Result<Self, EngineError> {
        let (tasks, queue) = mpsc::sync_channel::<Task>(queue.max(1));
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("prepare-{i}"))
                .spawn(move || work(&queue))
                .map_err(|e| EngineError::Start(format!("cannot start a thread: {e}")))?;
        }
        Ok(Self { tasks })
    }

    /// Runs `task` on the pool and waits for its result without blocking the caller's thread;
    /// [`EngineError::Overloaded`] at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        task: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let (result_tx, result_rx) = oneshot::channel();
        let wrapped: Task = Box::new(move || {
            let _ = result_tx.send(catch_unwind(AssertUnwindSafe(task)));
        });
        self.tasks.try_send(wrapped).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::Overloaded,
            TrySendError::Disconnected(_) => EngineError::Stopped,
        })?;
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
        let pool = PreparePool::start(1, 4).unwrap();
        let name = pool
            .run(|| Ok(thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("prepare-0"));
        let panicked = pool
            .run(|| -> Result<(), EngineError> { panic!("bug") })
            .await;
        assert!(matches!(panicked, Err(EngineError::Internal(_))));
        assert_eq!(pool.run(|| Ok(2 + 2)).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = PreparePool::start(1, 1).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        // A task that holds the thread, then tasks until the queue has no room.
        pool.tasks
            .try_send(Box::new(move || {
                let _ = held.recv();
            }))
            .unwrap();
        while pool.tasks.try_send(Box::new(|| {})).is_ok() {}
        let refused = pool.run(|| Ok(())).await;
        assert!(
            matches!(refused, Err(EngineError::Overloaded)),
            "{refused:?}"
        );
        release.send(()).unwrap();
        // The queue drains, and the pool takes work again.
        for _ in 0..200 {
            if let Ok(one) = pool.run(|| Ok(1)).await {
                assert_eq!(one, 1);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the pool never took work again");
    }
}
