//! The dynamic batcher: a bounded queue in front of a model and a dedicated thread that takes
//! what is waiting (up to `max_batch_size`, waiting at most `max_queue_delay` for more), drops
//! requests whose deadline passed or whose caller went away, and runs one forward pass.
//!
//! libtorch only ever runs on these threads, never on the async workers. A full queue refuses
//! at once (RESOURCE_EXHAUSTED) so a client can back off instead of piling up latency.

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::ServeError;
use crate::metrics as m;

/// How a batcher forms batches.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub queue_capacity: usize,
}

/// Runs one batch on the batcher's thread.
pub trait BatchWorker: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// Computes one output per input, in order; an `Err` fails the whole batch, a per-item
    /// `Err` only that item.
    fn run(&mut self, inputs: Vec<Self::Input>) -> Result<Vec<Result<Self::Output, ServeError>>, ServeError>;
}

/// An answer with the time it waited and the time its batch took.
#[derive(Debug)]
pub struct Timed<O> {
    pub value: O,
    pub queue: Duration,
    pub inference: Duration,
}

struct Item<I, O> {
    input: I,
    reply: oneshot::Sender<Result<Timed<O>, ServeError>>,
    enqueued: Instant,
    deadline: Option<Instant>,
}

/// Handle to a batcher; cheap to clone. The thread stops when every handle is dropped.
pub struct Batcher<I, O> {
    name: &'static str,
    tx: Sender<Item<I, O>>,
    capacity: usize,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher { name: self.name, tx: self.tx.clone(), capacity: self.capacity }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batcher's thread; `label` names it in metrics (`model`), `version` too.
    pub fn spawn<W>(name: &'static str, version: String, cfg: BatchConfig, mut worker: W) -> Self
    where
        W: BatchWorker<Input = I, Output = O>,
    {
        let (tx, rx) = bounded::<Item<I, O>>(cfg.queue_capacity.max(1));
        metrics::gauge!(m::QUEUE_CAPACITY, "model" => name).set(cfg.queue_capacity.max(1) as f64);
        std::thread::Builder::new()
            .name(format!("batcher-{name}"))
            .spawn(move || run_loop(name, &version, cfg, &rx, &mut worker))
            .expect("spawn batcher thread");
        Batcher { name, tx, capacity: cfg.queue_capacity.max(1) }
    }

    /// Queues `input`; refuses at once when the queue is full.
    pub async fn submit(&self, input: I, deadline: Option<Instant>) -> Result<Timed<O>, ServeError> {
        let (reply, rx) = oneshot::channel();
        let item = Item { input, reply, enqueued: Instant::now(), deadline };
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!(m::QUEUE_REJECTED, "model" => self.name).increment(1);
                return Err(ServeError::QueueFull { queue: self.name, capacity: self.capacity });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServeError::Unavailable(format!("{} is shutting down", self.name)))
            }
        }
        rx.await.map_err(|_| ServeError::Internal(format!("{} worker stopped", self.name)))?
    }

    /// Queues `input`, waiting for room instead of refusing (internal work such as gallery
    /// updates that must not be lost). Call from a blocking context.
    pub fn submit_blocking(&self, input: I) -> Result<Timed<O>, ServeError> {
        let (reply, rx) = oneshot::channel();
        let item = Item { input, reply, enqueued: Instant::now(), deadline: None };
        self.tx.send(item).map_err(|_| ServeError::Unavailable(format!("{} is shutting down", self.name)))?;
        rx.blocking_recv().map_err(|_| ServeError::Internal(format!("{} worker stopped", self.name)))?
    }

    /// Items waiting now (the channel's own count: never off by a race).
    pub fn depth(&self) -> usize {
        self.tx.len()
    }
}

fn run_loop<W: BatchWorker>(
    name: &'static str,
    version: &str,
    cfg: BatchConfig,
    rx: &Receiver<Item<W::Input, W::Output>>,
    worker: &mut W,
) {
    let max = cfg.max_batch_size.max(1);
    let mut last_batch = 0usize;
    while let Ok(first) = rx.recv() {
        let mut items = vec![first];
        let fill_until = Instant::now() + cfg.max_queue_delay;
        // Wait for a batch to fill only under concurrency (the last batch had company): a lone
        // request on an idle model runs at once instead of paying the queue delay.
        let wait = !cfg.max_queue_delay.is_zero() && last_batch > 1;
        while items.len() < max {
            // Take what is already there without waiting, then wait out the delay.
            match rx.try_recv() {
                Ok(item) => {
                    items.push(item);
                    continue;
                }
                Err(_) if !wait => break,
                Err(_) => {}
            }
            match rx.recv_timeout(fill_until.saturating_duration_since(Instant::now())) {
                Ok(item) => items.push(item),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        last_batch = items.len();
        let now = Instant::now();
        // Drop what nobody waits for any more, before computing.
        let (live, dead): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|it| !it.reply.is_closed() && it.deadline.is_none_or(|d| d > now));
        for it in dead {
            metrics::counter!(m::DROPPED, "model" => name).increment(1);
            let _ = it.reply.send(Err(ServeError::DeadlineExceeded(name)));
        }
        if live.is_empty() {
            continue;
        }
        metrics::gauge!(m::QUEUE_DEPTH, "model" => name).set(rx.len() as f64);
        metrics::histogram!(m::BATCH_SIZE, "model" => name, "version" => version.to_string()).record(live.len() as f64);
        let (inputs, meta): (Vec<_>, Vec<_>) =
            live.into_iter().map(|it| (it.input, (it.reply, it.enqueued))).unzip();
        let start = Instant::now();
        let outcome = worker.run(inputs);
        let inference = start.elapsed();
        metrics::histogram!(m::INFERENCE_SECONDS, "model" => name, "version" => version.to_string())
            .record(inference.as_secs_f64());
        match outcome {
            Ok(outputs) if outputs.len() == meta.len() => {
                for ((reply, enqueued), out) in meta.into_iter().zip(outputs) {
                    let queue = start.saturating_duration_since(enqueued);
                    metrics::histogram!(m::QUEUE_SECONDS, "model" => name).record(queue.as_secs_f64());
                    let _ = reply.send(out.map(|value| Timed { value, queue, inference }));
                }
            }
            Ok(outputs) => {
                let msg = format!("{name} returned {} outputs for {} inputs", outputs.len(), meta.len());
                for (reply, _) in meta {
                    let _ = reply.send(Err(ServeError::Internal(msg.clone())));
                }
            }
            Err(e) => {
                tracing::error!(model = name, error = %e, "batch failed");
                // Every waiter gets the batch's error with its own code.
                for (reply, _) in meta {
                    let _ = reply.send(Err(e.replicate()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Doubles numbers and records the batch sizes it saw; sleeps to let a queue build up.
    struct Doubler {
        seen: Arc<Mutex<Vec<usize>>>,
        sleep: Duration,
    }

    impl BatchWorker for Doubler {
        type Input = i64;
        type Output = i64;
        fn run(&mut self, inputs: Vec<i64>) -> Result<Vec<Result<i64, ServeError>>, ServeError> {
            self.seen.lock().unwrap().push(inputs.len());
            std::thread::sleep(self.sleep);
            Ok(inputs
                .into_iter()
                .map(|x| if x < 0 { Err(ServeError::InvalidArgument(format!("{x} is negative"))) } else { Ok(2 * x) })
                .collect())
        }
    }

    /// Fails every batch with the error it was built with.
    struct Failing(fn() -> ServeError);

    impl BatchWorker for Failing {
        type Input = i64;
        type Output = i64;
        fn run(&mut self, _: Vec<i64>) -> Result<Vec<Result<i64, ServeError>>, ServeError> {
            Err((self.0)())
        }
    }

    #[tokio::test]
    async fn a_failed_batch_keeps_its_error_code_for_every_waiter() {
        let cases: [(fn() -> ServeError, tonic::Code); 4] = [
            (|| ServeError::Unavailable("device lost".into()), tonic::Code::Unavailable),
            (|| ServeError::DiskFull, tonic::Code::ResourceExhausted),
            (|| ServeError::FailedPrecondition("not loaded".into()), tonic::Code::FailedPrecondition),
            (|| ServeError::Internal("bug".into()), tonic::Code::Internal),
        ];
        for (make, code) in cases {
            let cfg = BatchConfig { max_batch_size: 4, max_queue_delay: Duration::from_millis(5), queue_capacity: 8 };
            let b = Batcher::spawn("failing", "1".into(), cfg, Failing(make));
            let waiters: Vec<_> = (0..3).map(|i| { let b = b.clone(); tokio::spawn(async move { b.submit(i, None).await }) }).collect();
            for w in waiters {
                let e = w.await.unwrap().unwrap_err();
                assert_eq!(e.code(), code, "{e}");
                assert_eq!(e.to_string(), make().to_string());
            }
        }
    }

    fn batcher(max: usize, delay_ms: u64, cap: usize, sleep_ms: u64) -> (Batcher<i64, i64>, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cfg = BatchConfig { max_batch_size: max, max_queue_delay: Duration::from_millis(delay_ms), queue_capacity: cap };
        let b = Batcher::spawn("test", "1".into(), cfg, Doubler { seen: seen.clone(), sleep: Duration::from_millis(sleep_ms) });
        (b, seen)
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let (b, seen) = batcher(8, 50, 64, 20);
        let handles: Vec<_> = (0..16).map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.submit(i, None).await.unwrap().value })
        }).collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), 2 * i as i64);
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().sum::<usize>(), 16);
        assert!(seen.iter().all(|&n| n <= 8));
        assert!(seen.len() < 16, "requests were batched: {seen:?}");
    }

    #[tokio::test]
    async fn batch_size_one_means_no_batching() {
        let (b, seen) = batcher(1, 50, 64, 0);
        let handles: Vec<_> = (0..5).map(|i| { let b = b.clone(); tokio::spawn(async move { b.submit(i, None).await }) }).collect();
        for h in handles { h.await.unwrap().unwrap(); }
        assert_eq!(*seen.lock().unwrap(), vec![1; 5]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (b, _) = batcher(1, 0, 2, 200);
        let mut handles = Vec::new();
        for i in 0..6 {
            let b = b.clone();
            handles.push(tokio::spawn(async move { b.submit(i, None).await }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut full = 0;
        for h in handles {
            if let Err(ServeError::QueueFull { .. }) = h.await.unwrap() { full += 1; }
        }
        assert!(full >= 2, "{full} refused");
    }

    #[tokio::test]
    async fn expired_requests_are_dropped_before_compute_and_item_errors_stay_local() {
        let (b, seen) = batcher(4, 0, 16, 100);
        let first = { let b = b.clone(); tokio::spawn(async move { b.submit(1, None).await }) };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Queued behind a 100 ms batch with a 20 ms deadline: dropped, never computed.
        let late = b.submit(2, Some(Instant::now() + Duration::from_millis(20))).await;
        assert!(matches!(late, Err(ServeError::DeadlineExceeded(_))), "{late:?}");
        first.await.unwrap().unwrap();
        let bad = b.submit(-3, None).await;
        assert!(matches!(bad, Err(ServeError::InvalidArgument(_))));
        assert_eq!(b.submit(4, None).await.unwrap().value, 8);
        assert_eq!(seen.lock().unwrap().iter().sum::<usize>(), 3, "the expired item was not computed");
    }
}
