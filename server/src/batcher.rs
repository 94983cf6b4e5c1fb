//! The dynamic batcher: a bounded queue in front of a model and one or more dedicated threads
//! (instances, as Triton's `instance_group`, each with its own copy of the model) that take what
//! is waiting (up to `max_batch_size`, waiting at most `max_queue_delay` for more), drop
//! requests whose deadline passed or whose caller went away, and run one forward pass. While
//! other instances are idle, an instance takes only its share of what is waiting (the items ÷
//! the idle instances), so a burst is spread over every core instead of one batch on one thread.
//!
//! libtorch only ever runs on these threads, never on the async workers; they run at a lowered
//! CPU priority so that accepting, refusing and answering calls never waits behind a forward
//! pass. A full queue or a deadline nearer than the expected wait is refused at once, before
//! anything is queued. The queue-time budget is decided once per request, before any of its work
//! starts, over every queue it will pass ([`crate::admission::admit_pipeline`]): a request holds
//! a [`Reservation`] on each queue until its items are through it, so the expected wait a
//! batcher reports (the measured cost per item × the items promised to it ÷ instances) counts
//! work that is still being decoded or waits in an earlier stage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::ServeError;
use crate::metrics as m;

/// How a batcher forms batches and admits work.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub queue_capacity: usize,
    /// Longest expected wait a new request is admitted with (None = only the capacity bounds
    /// it); read by [`crate::admission::admit_pipeline`].
    pub max_queue_time: Option<Duration>,
    /// Nice value the model threads run at (0 = the process's own priority).
    pub nice: i32,
    /// Most padded weight per pass: items × the heaviest item's [`BatchWorker::weight`] (for
    /// texts, tokens: a batch is padded to its longest text). None = the batch size alone bounds
    /// it. An item heavier than the budget runs alone.
    pub max_batch_weight: Option<usize>,
}

impl BatchConfig {
    /// The same settings with another batch size (per-model batch sizes).
    pub fn with_batch_size(self, max_batch_size: usize) -> Self {
        BatchConfig { max_batch_size, ..self }
    }
}

/// Runs one batch on a batcher's thread.
pub trait BatchWorker: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// Computes one output per input, in order; an `Err` fails the whole batch, a per-item
    /// `Err` only that item.
    fn run(&mut self, inputs: Vec<Self::Input>) -> Result<Vec<Result<Self::Output, ServeError>>, ServeError>;
    /// What an input costs in a padded batch (a text's tokens); read only under a
    /// [`BatchConfig::max_batch_weight`].
    fn weight(&self, _input: &Self::Input) -> usize {
        1
    }
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
    /// Queued by [`Batcher::submit_blocking`] (internal work, not covered by a reservation).
    internal: bool,
}

/// The measured compute cost of one item (a moving average over recent batches).
#[derive(Default)]
struct Cost {
    per_item_ns: AtomicU64,
}

impl Cost {
    fn record(&self, batch: Duration, items: usize) {
        let x = (batch.as_nanos() / items.max(1) as u128).min(u64::MAX as u128) as u64;
        let old = self.per_item_ns.load(Ordering::Relaxed);
        // An exponential average with weight 1/8 on the newest batch (the first one sets it).
        let new = if old == 0 { x } else { old - old / 8 + x / 8 };
        self.per_item_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// Expected wait before an item queued behind `ahead` others starts, on `instances` threads.
    fn expected_wait(&self, ahead: usize, instances: usize) -> Duration {
        let per_item = self.per_item_ns.load(Ordering::Relaxed);
        Duration::from_nanos(per_item.saturating_mul(ahead as u64) / instances.max(1) as u64)
    }
}

/// What a queue has been promised: items of admitted requests still running, and internal
/// items still queued.
#[derive(Debug, Default)]
struct Load {
    reserved: AtomicUsize,
    internal_queued: AtomicUsize,
}

/// Items an admitted request will bring to one queue; released when dropped (the request ended,
/// or its items have passed this queue).
#[derive(Debug)]
pub struct Reservation {
    queue: &'static str,
    load: Arc<Load>,
    items: usize,
}

impl Reservation {
    /// The queue the items are promised to.
    pub fn queue(&self) -> &'static str {
        self.queue
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.load.reserved.fetch_sub(self.items, Ordering::Relaxed);
    }
}

/// Handle to a batcher; cheap to clone. The threads stop when every handle is dropped.
pub struct Batcher<I, O> {
    name: &'static str,
    tx: Sender<Item<I, O>>,
    capacity: usize,
    instances: usize,
    max_queue_time: Option<Duration>,
    max_batch: usize,
    cost: Arc<Cost>,
    load: Arc<Load>,
    idle: Arc<AtomicUsize>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            name: self.name,
            tx: self.tx.clone(),
            capacity: self.capacity,
            instances: self.instances,
            max_queue_time: self.max_queue_time,
            max_batch: self.max_batch,
            cost: self.cost.clone(),
            load: self.load.clone(),
            idle: self.idle.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts a batcher with one thread; `name` labels it in metrics (`model`), `version` too.
    pub fn spawn<W>(name: &'static str, version: String, cfg: BatchConfig, worker: W) -> Self
    where
        W: BatchWorker<Input = I, Output = O>,
    {
        Self::spawn_instances(name, version, cfg, vec![worker])
    }

    /// Starts a batcher with one thread per worker, all taking from the same queue.
    pub fn spawn_instances<W>(name: &'static str, version: String, cfg: BatchConfig, workers: Vec<W>) -> Self
    where
        W: BatchWorker<Input = I, Output = O>,
    {
        assert!(!workers.is_empty(), "a batcher needs at least one worker");
        let capacity = cfg.queue_capacity.max(1);
        let (tx, rx) = bounded::<Item<I, O>>(capacity);
        metrics::gauge!(m::QUEUE_CAPACITY, "model" => name).set(capacity as f64);
        let cost = Arc::new(Cost::default());
        let load = Arc::new(Load::default());
        let idle = Arc::new(AtomicUsize::new(0));
        let instances = workers.len();
        for (i, mut worker) in workers.into_iter().enumerate() {
            let (rx, cost, load, version) = (rx.clone(), cost.clone(), load.clone(), version.clone());
            let idle = idle.clone();
            std::thread::Builder::new()
                .name(format!("batcher-{name}-{i}"))
                .spawn(move || {
                    lower_priority(name, cfg.nice);
                    run_loop(name, &version, cfg, Shared { rx: &rx, cost: &cost, load: &load, idle: &idle }, &mut worker)
                })
                .expect("spawn batcher thread");
        }
        Batcher { name, tx, capacity, instances, max_queue_time: cfg.max_queue_time, max_batch: cfg.max_batch_size.max(1), cost, load, idle }
    }

    /// Queues `input`; refuses at once when the queue is full or when `deadline` falls before
    /// the items queued ahead are done. (The queue-time budget was decided when the request was
    /// admitted: work of an admitted request is never shed half-way.)
    pub async fn submit(&self, input: I, deadline: Option<Instant>) -> Result<Timed<O>, ServeError> {
        let expected = self.cost.expected_wait(self.tx.len(), self.instances);
        let now = Instant::now();
        if let Some(d) = deadline.filter(|d| now + expected > *d) {
            metrics::counter!(m::QUEUE_REJECTED, "model" => self.name).increment(1);
            return Err(ServeError::WouldMissDeadline { queue: self.name, expected, left: d.saturating_duration_since(now) });
        }
        let (reply, rx) = oneshot::channel();
        let item = Item { input, reply, enqueued: now, deadline, internal: false };
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
        let item = Item { input, reply, enqueued: Instant::now(), deadline: None, internal: true };
        self.load.internal_queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(item).is_err() {
            self.load.internal_queued.fetch_sub(1, Ordering::Relaxed);
            return Err(ServeError::Unavailable(format!("{} is shutting down", self.name)));
        }
        rx.blocking_recv().map_err(|_| ServeError::Internal(format!("{} worker stopped", self.name)))?
    }

    /// Items waiting now (the channel's own count: never off by a race).
    pub fn depth(&self) -> usize {
        self.tx.len()
    }

    /// The queue's name (its `model` label).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The queue-time budget new requests are admitted with (None: no budget).
    pub fn max_queue_time(&self) -> Option<Duration> {
        self.max_queue_time
    }

    /// Expected wait before an item admitted now starts: the measured cost per item × (items
    /// reserved by admitted requests still running + internal items queued) ÷ instances. It
    /// counts a request's items from admission until they are through this queue (or the request
    /// ends), so it errs on the long side.
    pub fn expected_wait(&self) -> Duration {
        let ahead = self.load.reserved.load(Ordering::Relaxed) + self.load.internal_queued.load(Ordering::Relaxed);
        self.cost.expected_wait(ahead, self.instances)
    }

    /// Promises `items` items of an admitted request to this queue, until the reservation drops.
    pub fn reserve(&self, items: usize) -> Reservation {
        self.load.reserved.fetch_add(items, Ordering::Relaxed);
        Reservation { queue: self.name, load: self.load.clone(), items }
    }

    /// Most items per forward pass.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch
    }

    /// Threads (model instances) taking from this queue.
    pub fn instances(&self) -> usize {
        self.instances
    }

    /// Instances waiting for work now.
    #[cfg(test)]
    fn idle_instances(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }
}

/// Lowers the calling thread's CPU priority (threads libtorch starts from it inherit it).
fn lower_priority(name: &str, nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority on the calling thread's own id has no memory effects.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        tracing::warn!(model = name, nice, error = %std::io::Error::last_os_error(), "cannot lower the model thread's priority");
    }
}

/// The padded weight of a batch being formed: items × its heaviest item.
struct WeightBudget {
    limit: usize,
    heaviest: usize,
}

impl WeightBudget {
    fn new(limit: usize, first: usize) -> Self {
        WeightBudget { limit, heaviest: first }
    }

    /// Whether one more item of `weight` keeps a batch of `items` within the limit (then it is
    /// counted).
    fn admits(&mut self, items: usize, weight: usize) -> bool {
        let heaviest = self.heaviest.max(weight);
        let fits = (items + 1).saturating_mul(heaviest) <= self.limit;
        if fits {
            self.heaviest = heaviest;
        }
        fits
    }
}

/// Most items an instance takes when `idle` other instances wait and `queued` items wait
/// behind the one it holds: its share, so that the others start on the rest at once.
fn share(max: usize, queued: usize, idle: usize) -> usize {
    if idle == 0 {
        return max;
    }
    (queued + 1).div_ceil(idle + 1).clamp(1, max)
}

/// What the instances of one batcher share.
struct Shared<'a, I, O> {
    rx: &'a Receiver<Item<I, O>>,
    cost: &'a Cost,
    load: &'a Load,
    /// Instances blocked waiting for a first item.
    idle: &'a AtomicUsize,
}

fn run_loop<W: BatchWorker>(name: &'static str, version: &str, cfg: BatchConfig, queue: Shared<'_, W::Input, W::Output>, worker: &mut W) {
    let Shared { rx, cost, load, idle } = queue;
    let max = cfg.max_batch_size.max(1);
    let mut last_batch = 0usize;
    // An item taken that would have pushed its batch past the weight budget starts the next.
    let mut held: Option<Item<W::Input, W::Output>> = None;
    loop {
        let first = match held.take() {
            Some(item) => item,
            None => {
                idle.fetch_add(1, Ordering::SeqCst);
                let next = rx.recv();
                idle.fetch_sub(1, Ordering::SeqCst);
                match next {
                    Ok(item) => item,
                    Err(_) => break,
                }
            }
        };
        let others_idle = idle.load(Ordering::SeqCst);
        let take = share(max, rx.len(), others_idle);
        let mut budget = cfg.max_batch_weight.map(|limit| WeightBudget::new(limit, worker.weight(&first.input)));
        let mut items = vec![first];
        let fill_until = Instant::now() + cfg.max_queue_delay;
        // Wait for a batch to fill only under concurrency (the last batch had company) and when
        // no other instance is idle to take what comes: a lone request on an idle model runs at
        // once instead of paying the queue delay.
        let wait = !cfg.max_queue_delay.is_zero() && last_batch > 1 && others_idle == 0;
        while items.len() < take {
            // Take what is already there without waiting, then wait out the delay.
            let next = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(_) if !wait => None,
                Err(_) => rx.recv_timeout(fill_until.saturating_duration_since(Instant::now())).ok(),
            };
            let Some(item) = next else { break };
            if let Some(b) = budget.as_mut() {
                if !b.admits(items.len(), worker.weight(&item.input)) {
                    held = Some(item);
                    break;
                }
            }
            items.push(item);
        }
        last_batch = items.len();
        let internal = items.iter().filter(|it| it.internal).count();
        load.internal_queued.fetch_sub(internal, Ordering::Relaxed);
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
        cost.record(inference, meta.len());
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
            let cfg = BatchConfig { max_batch_size: 4, max_queue_delay: Duration::from_millis(5), queue_capacity: 8, max_queue_time: None, nice: 0, max_batch_weight: None };
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
        let cfg = BatchConfig { max_batch_size: max, max_queue_delay: Duration::from_millis(delay_ms), queue_capacity: cap, max_queue_time: None, nice: 0, max_batch_weight: None };
        let b = Batcher::spawn("test", "1".into(), cfg, Doubler { seen: seen.clone(), sleep: Duration::from_millis(sleep_ms) });
        (b, seen)
    }

    /// Records each batch's inputs; an input weighs its own value (a text of that many tokens).
    struct Weighted(Arc<Mutex<Vec<Vec<i64>>>>);

    impl BatchWorker for Weighted {
        type Input = i64;
        type Output = i64;
        fn run(&mut self, inputs: Vec<i64>) -> Result<Vec<Result<i64, ServeError>>, ServeError> {
            self.0.lock().unwrap().push(inputs.clone());
            std::thread::sleep(Duration::from_millis(30));
            Ok(inputs.into_iter().map(Ok).collect())
        }
        fn weight(&self, input: &i64) -> usize {
            *input as usize
        }
    }

    #[tokio::test]
    async fn a_weight_budget_bounds_each_padded_batch_and_a_heavy_item_runs_alone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cfg = BatchConfig { max_batch_size: 8, max_queue_delay: Duration::from_millis(20), queue_capacity: 64, max_queue_time: None, nice: 0, max_batch_weight: Some(12) };
        let b = Batcher::spawn("weighted", "1".into(), cfg, Weighted(seen.clone()));
        // Short items with a few long ones among them, all queued while the first batch runs.
        let inputs: Vec<i64> = [2, 2, 3, 2, 10, 2, 3, 2, 20, 2, 2, 2, 4, 2, 2, 2].to_vec();
        let handles: Vec<_> = inputs.iter().map(|&x| { let b = b.clone(); tokio::spawn(async move { b.submit(x, None).await.unwrap().value }) }).collect();
        for (h, x) in handles.into_iter().zip(&inputs) {
            assert_eq!(h.await.unwrap(), *x, "every item answered, none lost when held over");
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), inputs.len(), "{seen:?}");
        for batch in seen.iter() {
            let padded = batch.len() as i64 * batch.iter().max().unwrap();
            assert!(batch.len() == 1 || padded <= 12, "batch {batch:?} pads to {padded} > 12");
        }
        assert!(seen.iter().any(|b| b == &vec![20]), "heavier than the budget: alone: {seen:?}");
        assert!(seen.iter().any(|b| b.len() > 1), "short items still share batches: {seen:?}");
    }

    #[test]
    fn the_budget_counts_items_times_the_heaviest() {
        let mut b = WeightBudget::new(12, 2);
        assert!(b.admits(1, 3)); // 2 × 3
        assert!(b.admits(2, 4)); // 3 × 4
        assert!(!b.admits(3, 4)); // 4 × 4 > 12: not counted
        assert_eq!(b.heaviest, 4);
        assert!(!b.admits(3, 13));
        assert_eq!(b.heaviest, 4, "a refused item leaves the budget as it was");
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

    /// Holds each batch until the test releases it; sleeps `cost` first so the batcher measures
    /// at least that much per item.
    struct Gated {
        gate: std::sync::mpsc::Receiver<()>,
        started: tokio::sync::mpsc::UnboundedSender<()>,
        cost: Duration,
    }

    impl BatchWorker for Gated {
        type Input = i64;
        type Output = i64;
        fn run(&mut self, inputs: Vec<i64>) -> Result<Vec<Result<i64, ServeError>>, ServeError> {
            std::thread::sleep(self.cost);
            let _ = self.started.send(());
            self.gate.recv().map_err(|_| ServeError::Internal("gate closed".into()))?;
            Ok(inputs.into_iter().map(Ok).collect())
        }
    }

    type Gate = (Batcher<i64, i64>, std::sync::mpsc::Sender<()>, tokio::sync::mpsc::UnboundedReceiver<()>);

    fn gated(budget: Option<Duration>) -> Gate {
        let (release, gate) = std::sync::mpsc::channel();
        let (started, batches) = tokio::sync::mpsc::unbounded_channel();
        let cfg = BatchConfig { max_batch_size: 1, max_queue_delay: Duration::ZERO, queue_capacity: 64, max_queue_time: budget, nice: 0, max_batch_weight: None };
        (Batcher::spawn("gated", "1".into(), cfg, Gated { gate, started, cost: Duration::from_millis(40) }), release, batches)
    }

    async fn until(mut cond: impl FnMut() -> bool) {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_wait_budget_requests_are_refused_at_once_and_admitted_work_is_never_shed() {
        use crate::admission::admit_pipeline;
        // Every item costs at least 40 ms: with a 100 ms budget at most 3 requests of one item
        // are admitted (0, 40 and 80 ms of expected wait), 2 when the machine is slow.
        let (b, release, mut batches) = gated(Some(Duration::from_millis(100)));
        release.send(()).unwrap();
        assert_eq!(b.submit(1, None).await.unwrap().value, 1, "the first item measures the cost");
        batches.recv().await.unwrap();
        let (mut admitted, mut refused) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            match admit_pipeline(&[(&b, 1)], &[], None) {
                Ok(a) => admitted.push(a),
                Err(e) => refused.push(e),
            }
        }
        assert!((2..=3).contains(&admitted.len()), "{} admitted with a 100 ms budget", admitted.len());
        for e in &refused {
            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
            assert!(e.to_string().starts_with("gated is overloaded: a new request would wait about"), "{e}");
        }
        // The admitted requests' items are queued although the queue's expected wait is now
        // past the budget: admitted work is not shed half-way.
        let items: Vec<_> = (0..admitted.len()).map(|i| { let b = b.clone(); tokio::spawn(async move { b.submit(10 + i as i64, None).await }) }).collect();
        for _ in 0..items.len() { release.send(()).unwrap(); }
        for h in items { h.await.unwrap().unwrap(); }
        // Finished requests release their reservations: admitted again.
        drop(admitted);
        assert!(admit_pipeline(&[(&b, 1)], &[], None).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_stages_count_their_slowest_and_serial_stages_add_up() {
        use crate::admission::admit_pipeline;
        let budget = Some(Duration::from_millis(150));
        let ((a, ra, mut ba), (b, rb, mut bb)) = (gated(budget), gated(budget));
        ra.send(()).unwrap();
        rb.send(()).unwrap();
        a.submit(1, None).await.unwrap();
        b.submit(1, None).await.unwrap();
        (ba.recv().await.unwrap(), bb.recv().await.unwrap());
        // Two items promised to each queue, 40–75 ms each: 80–150 ms side by side, 160–300 ms in a row.
        let _held = (a.reserve(2), b.reserve(2));
        assert!(admit_pipeline(&[(&a, 1), (&b, 1)], &[], None).is_ok(), "a: {:?}, b: {:?}", a.expected_wait(), b.expected_wait());
        let e = admit_pipeline(&[(&a, 1)], &[(&b, 1)], None).unwrap_err();
        assert!(e.to_string().contains("is overloaded"), "{e}");
        // A queue the request brings nothing to does not count.
        assert!(admit_pipeline(&[(&a, 1)], &[(&b, 0)], None).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn internal_work_queued_counts_in_the_expected_wait_until_it_is_taken() {
        use crate::admission::admit_pipeline;
        let (b, release, mut batches) = gated(Some(Duration::from_millis(100)));
        release.send(()).unwrap();
        b.submit(1, None).await.unwrap();
        batches.recv().await.unwrap();
        // Gallery work waits for room instead of being refused, and holds the queue.
        let internal: Vec<_> = (0..4).map(|i| { let b = b.clone(); tokio::task::spawn_blocking(move || b.submit_blocking(i)) }).collect();
        until(|| b.depth() >= 3).await;
        let e = admit_pipeline(&[(&b, 1)], &[], None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        for _ in 0..4 { release.send(()).unwrap(); }
        for h in internal { h.await.unwrap().unwrap(); }
        assert_eq!(b.expected_wait(), Duration::ZERO, "nothing promised, nothing queued");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_whose_deadline_falls_inside_the_expected_wait_is_not_started() {
        let (b, release, _batches) = gated(None);
        release.send(()).unwrap();
        b.submit(1, None).await.unwrap();
        let queued: Vec<_> = (0..3).map(|i| { let b = b.clone(); tokio::spawn(async move { b.submit(i, None).await }) }).collect();
        until(|| b.depth() >= 2).await;
        let e = b.submit(9, Some(Instant::now() + Duration::from_millis(5))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
        assert!(e.to_string().contains("nearer than the gated queue's expected wait"), "{e}");
        for _ in 0..3 { release.send(()).unwrap(); }
        for h in queued { h.await.unwrap().unwrap(); }
    }

    /// Counts how many batches run at once.
    struct Overlap {
        running: Arc<std::sync::atomic::AtomicUsize>,
        most: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BatchWorker for Overlap {
        type Input = i64;
        type Output = i64;
        fn run(&mut self, inputs: Vec<i64>) -> Result<Vec<Result<i64, ServeError>>, ServeError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(inputs.into_iter().map(|x| Ok(x + 1)).collect())
        }
    }

    #[tokio::test]
    async fn instances_take_from_one_queue_and_run_side_by_side() {
        let (running, most) = (Arc::default(), Arc::new(std::sync::atomic::AtomicUsize::new(0)));
        let workers = (0..2).map(|_| Overlap { running: Arc::clone(&running), most: most.clone() }).collect();
        let cfg = BatchConfig { max_batch_size: 1, max_queue_delay: Duration::ZERO, queue_capacity: 64, max_queue_time: None, nice: 5, max_batch_weight: None };
        let b = Batcher::spawn_instances("pair", "1".into(), cfg, workers);
        assert_eq!(b.instances(), 2);
        let handles: Vec<_> = (0..8).map(|i| { let b = b.clone(); tokio::spawn(async move { b.submit(i, None).await.unwrap().value }) }).collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), i as i64 + 1);
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "two instances ran batches at the same time");
    }

    #[test]
    fn an_instance_takes_its_share_while_others_are_idle() {
        assert_eq!(share(32, 7, 0), 32, "nobody idle: a full batch");
        assert_eq!(share(32, 7, 1), 4, "8 items, 2 instances free");
        assert_eq!(share(32, 0, 1), 1, "alone in the queue: run it now");
        assert_eq!(share(32, 8, 2), 3);
        assert_eq!(share(2, 30, 1), 2, "never past the batch size");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_on_idle_instances_is_spread_over_them() {
        let (running, most) = (Arc::default(), Arc::new(std::sync::atomic::AtomicUsize::new(0)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..2).map(|_| Spread { overlap: Overlap { running: Arc::clone(&running), most: most.clone() }, seen: seen.clone() }).collect();
        let cfg = BatchConfig { max_batch_size: 32, max_queue_delay: Duration::from_millis(20), queue_capacity: 64, max_queue_time: None, nice: 0, max_batch_weight: None };
        let b = Batcher::spawn_instances("spread", "1".into(), cfg, workers);
        until(|| b.idle_instances() == 2).await;
        let handles: Vec<_> = (0..8).map(|i| { let b = b.clone(); tokio::spawn(async move { b.submit(i, None).await.unwrap().value }) }).collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), i as i64 + 1);
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().sum::<usize>(), 8, "{seen:?}");
        assert!(seen.iter().all(|&n| n < 8), "one instance took the whole burst: {seen:?}");
        assert_eq!(most.load(Ordering::SeqCst), 2, "both instances computed at once: {seen:?}");
    }

    /// An [`Overlap`] that records its batch sizes.
    struct Spread {
        overlap: Overlap,
        seen: Arc<Mutex<Vec<usize>>>,
    }

    impl BatchWorker for Spread {
        type Input = i64;
        type Output = i64;
        fn run(&mut self, inputs: Vec<i64>) -> Result<Vec<Result<i64, ServeError>>, ServeError> {
            self.seen.lock().unwrap().push(inputs.len());
            self.overlap.run(inputs)
        }
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
