//! Admission at the front door: how many Score (unary calls and stream messages alike) and
//! Search calls may be in flight at once (text-embeddings-inference's
//! `--max-concurrent-requests`), and whether a request's expected wait over every model queue it
//! will pass fits the queue-time budget. Past either, a call is refused with RESOURCE_EXHAUSTED
//! before any of its work is done, so no work is started for a request that is shed later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::batcher::{Batcher, Reservation};
use crate::error::ServeError;
use crate::metrics as m;

/// A model queue as admission sees it.
pub trait Queue: Sync {
    fn name(&self) -> &'static str;
    fn max_queue_time(&self) -> Option<Duration>;
    fn expected_wait(&self) -> Duration;
    fn reserve(&self, items: usize) -> Reservation;
}

impl<I: Send + 'static, O: Send + 'static> Queue for Batcher<I, O> {
    fn name(&self) -> &'static str {
        Batcher::name(self)
    }
    fn max_queue_time(&self) -> Option<Duration> {
        Batcher::max_queue_time(self)
    }
    fn expected_wait(&self) -> Duration {
        Batcher::expected_wait(self)
    }
    fn reserve(&self, items: usize) -> Reservation {
        Batcher::reserve(self, items)
    }
}

/// A request's items on each queue it will pass, admitted together; each held until the request
/// ends or until its items have passed that queue ([`Admitted::take`]), so the expected wait
/// new requests see counts only work still ahead of each queue.
#[derive(Debug)]
pub struct Admitted {
    reservations: Vec<Reservation>,
}

impl Admitted {
    /// The reservation on `queue`, to drop once the request's items have passed it (None when
    /// the request brings nothing there).
    pub fn take(&mut self, queue: &dyn Queue) -> Option<Reservation> {
        let at = self.reservations.iter().position(|r| r.queue() == queue.name())?;
        Some(self.reservations.swap_remove(at))
    }
}

/// Runs `work`, then ends `reservation`: a stage's reservation lasts as long as its work.
pub async fn holding<T>(reservation: Option<Reservation>, work: impl std::future::Future<Output = T>) -> T {
    let out = work.await;
    drop(reservation);
    out
}

/// Admits a request that brings `items` to each queue: first the `parallel` stages (they run at
/// the same time, the slowest counts), then the `serial` ones. Its expected wait is the sum; past
/// the queues' budget (RESOURCE_EXHAUSTED) or past `deadline` (DEADLINE_EXCEEDED) it is refused
/// and nothing is reserved. The error names the queue that contributes the most wait.
pub fn admit_pipeline(parallel: &[(&dyn Queue, usize)], serial: &[(&dyn Queue, usize)], deadline: Option<Instant>) -> Result<Admitted, ServeError> {
    let used = |stages: &[(&dyn Queue, usize)]| -> Vec<(&'static str, Duration, Option<Duration>)> {
        stages.iter().filter(|(_, n)| *n > 0).map(|(q, _)| (q.name(), q.expected_wait(), q.max_queue_time())).collect()
    };
    let (first, then) = (used(parallel), used(serial));
    let slowest = first.iter().max_by_key(|s| s.1);
    let expected = slowest.map_or(Duration::ZERO, |s| s.1) + then.iter().map(|s| s.1).sum::<Duration>();
    let worst = slowest.into_iter().chain(then.iter()).max_by_key(|s| s.1);
    if let Some((queue, _, _)) = worst {
        let budget = first.iter().chain(then.iter()).filter_map(|s| s.2).min();
        if let Some(budget) = budget.filter(|b| expected > *b) {
            metrics::counter!(m::QUEUE_REJECTED, "model" => *queue).increment(1);
            return Err(ServeError::Overloaded { queue, expected, budget });
        }
        let now = Instant::now();
        if let Some(d) = deadline.filter(|d| now + expected > *d) {
            metrics::counter!(m::QUEUE_REJECTED, "model" => *queue).increment(1);
            return Err(ServeError::WouldMissDeadline { queue, expected, left: d.saturating_duration_since(now) });
        }
    }
    let all = parallel.iter().chain(serial.iter()).filter(|(_, n)| *n > 0);
    Ok(Admitted { reservations: all.map(|(q, n)| q.reserve(*n)).collect() })
}

/// The methods with a limit of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Score,
    Search,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Score => "Score",
            Method::Search => "Search",
        }
    }
}

/// One limit per method.
pub struct CallLimits {
    limit: usize,
    score: Arc<Semaphore>,
    search: Arc<Semaphore>,
}

/// A call in flight; the slot frees when it is dropped.
pub type CallPermit = OwnedSemaphorePermit;

impl CallLimits {
    /// At most `limit` calls of each method in flight.
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        CallLimits { limit, score: Arc::new(Semaphore::new(limit)), search: Arc::new(Semaphore::new(limit)) }
    }

    /// A slot for one call, or RESOURCE_EXHAUSTED at once when every slot is taken.
    pub fn admit(&self, method: Method) -> Result<CallPermit, ServeError> {
        self.slots(method).clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(m::CALLS_REJECTED, "method" => method.name()).increment(1);
            ServeError::TooManyRequests { method: method.name(), limit: self.limit }
        })
    }

    /// Calls of `method` in flight now.
    pub fn in_flight(&self, method: Method) -> usize {
        self.limit - self.slots(method).available_permits()
    }

    fn slots(&self, method: Method) -> &Arc<Semaphore> {
        match method {
            Method::Score => &self.score,
            Method::Search => &self.search,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::{BatchConfig, BatchWorker};

    struct Echo;

    impl BatchWorker for Echo {
        type Input = ();
        type Output = ();
        fn run(&mut self, inputs: Vec<()>) -> Result<Vec<Result<(), ServeError>>, ServeError> {
            std::thread::sleep(Duration::from_millis(20));
            Ok(inputs.into_iter().map(Ok).collect())
        }
    }

    #[tokio::test]
    async fn a_stage_passed_no_longer_counts_in_the_wait_new_requests_see() {
        let cfg = BatchConfig { max_batch_size: 1, max_queue_delay: Duration::ZERO, queue_capacity: 8, max_queue_time: None, nice: 0, max_batch_weight: None };
        let (first, then) = (Batcher::spawn("first", "1".into(), cfg, Echo), Batcher::spawn("then", "1".into(), cfg, Echo));
        // Measure each queue's cost once.
        first.submit((), None).await.unwrap();
        then.submit((), None).await.unwrap();
        let mut admitted = admit_pipeline(&[(&first, 3)], &[(&then, 1)], None).unwrap();
        assert!(first.expected_wait() >= Duration::from_millis(60), "3 items promised: {:?}", first.expected_wait());
        let held = admitted.take(&first).expect("the request brings items to the first queue");
        assert!(admitted.take(&first).is_none(), "taken once");
        drop(held);
        assert_eq!(first.expected_wait(), Duration::ZERO, "passed: no longer ahead of new requests");
        assert!(then.expected_wait() >= Duration::from_millis(20), "the later stage is still promised");
        drop(admitted);
        assert_eq!(then.expected_wait(), Duration::ZERO);
    }

    #[test]
    fn past_the_limit_calls_are_refused_until_a_slot_frees() {
        let limits = CallLimits::new(2);
        let a = limits.admit(Method::Score).unwrap();
        let _b = limits.admit(Method::Score).unwrap();
        let refused = limits.admit(Method::Score).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(refused.to_string(), "2 Score calls are in flight, the server's limit; retry with back-off");
        // Each method has its own slots.
        let _s = limits.admit(Method::Search).unwrap();
        assert_eq!((limits.in_flight(Method::Score), limits.in_flight(Method::Search)), (2, 1));
        drop(a);
        assert!(limits.admit(Method::Score).is_ok());
    }
}
