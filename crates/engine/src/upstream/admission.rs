//! The same admission the embedded engine has, for requests to an upstream: at most `parallel`
//! in flight, at most `queue_size` waiting (beyond that: 503 at once), none waiting longer than
//! the queue timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::EngineError;

pub struct Admission {
    in_flight: Arc<Semaphore>,
    parallel: usize,
    waiting: AtomicUsize,
    queue_size: usize,
    timeout: Duration,
}

impl Admission {
    pub fn new(parallel: usize, queue_size: usize, timeout: Duration) -> Self {
        let parallel = parallel.max(1);
        Self {
            in_flight: Arc::new(Semaphore::new(parallel)),
            parallel,
            waiting: AtomicUsize::new(0),
            queue_size: queue_size.max(1),
            timeout,
        }
    }

    /// A place in flight, held until the permit is dropped (the request's end).
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, EngineError> {
        match Arc::clone(&self.in_flight).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(EngineError::ShuttingDown),
            Err(TryAcquireError::NoPermits) => {}
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue_size {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Overloaded);
        }
        let _left = LeaveQueue(&self.waiting);
        match tokio::time::timeout(self.timeout, Arc::clone(&self.in_flight).acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            // Closed by `close`: the service is stopping.
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_) => Err(EngineError::QueueTimeout {
                seconds: self.timeout.as_secs(),
            }),
        }
    }

    /// Wakes every waiting request with [`EngineError::ShuttingDown`] and admits none after.
    pub fn close(&self) {
        self.in_flight.close();
    }

    pub fn active(&self) -> usize {
        self.parallel - self.in_flight.available_permits()
    }

    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Leaves the queue however the wait ends (admitted, timed out, or the caller gave up).
struct LeaveQueue<'a>(&'a AtomicUsize);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_slots_requests_wait_then_beyond_the_queue_they_are_refused() {
        let admission = Arc::new(Admission::new(1, 1, Duration::from_millis(200)));
        let first = admission.enter().await.unwrap();
        assert_eq!(admission.active(), 1);
        let waiting = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move { admission.enter().await.map(drop) }
        });
        while admission.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            admission.enter().await,
            Err(EngineError::Overloaded)
        ));
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!((admission.active(), admission.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_stop_wakes_the_waiting_requests_and_admits_none_after() {
        let admission = Arc::new(Admission::new(1, 4, Duration::from_secs(60)));
        let running = admission.enter().await.unwrap();
        let waiting = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move { admission.enter().await.map(drop) }
        });
        while admission.queued() == 0 {
            tokio::task::yield_now().await;
        }
        admission.close();
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(woken, Ok(Ok(Err(EngineError::ShuttingDown)))));
        drop(running);
        assert!(matches!(
            admission.enter().await,
            Err(EngineError::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn a_request_that_waits_too_long_times_out_and_leaves_the_queue() {
        let admission = Admission::new(1, 4, Duration::from_millis(50));
        let _busy = admission.enter().await.unwrap();
        let refused = admission.enter().await;
        assert!(matches!(refused, Err(EngineError::QueueTimeout { .. })));
        assert_eq!(admission.queued(), 0);
    }
}
