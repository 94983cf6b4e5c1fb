//! The bounded pool that decodes photos: at most `workers` decodes run at once (on the blocking
//! pool), at most `max_waiting` more wait for a worker. Score and Search shed with
//! RESOURCE_EXHAUSTED when the wait is full; gallery adds wait their turn instead (their stream
//! is already bounded by its own in-flight limit).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::ServeError;
use crate::metrics as m;

/// Whether a caller sheds or waits when the pool is busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Refuse at once when `max_waiting` callers already wait (interactive calls).
    Shed,
    /// Wait for a worker however long (gallery adds).
    Wait,
}

/// The decode pool.
pub struct DecodePool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    workers: usize,
}

/// Counts a waiting caller until dropped (also when its future is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DecodePool {
    pub fn new(workers: usize, max_waiting: usize) -> Self {
        let workers = workers.max(1);
        DecodePool { permits: Arc::new(Semaphore::new(workers)), waiting: AtomicUsize::new(0), max_waiting, workers }
    }

    /// Decodes run at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on the blocking pool once a worker is free.
    pub async fn run<T, F>(&self, admission: Admission, f: F) -> Result<T, ServeError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let before = self.waiting.fetch_add(1, Ordering::AcqRel);
                let _waiting = Waiting(&self.waiting);
                if admission == Admission::Shed && before >= self.max_waiting {
                    metrics::counter!(m::DECODE_REJECTED).increment(1);
                    return Err(ServeError::QueueFull { queue: "image decode", capacity: self.max_waiting });
                }
                self.permits.clone().acquire_owned().await.map_err(|e| ServeError::Internal(e.to_string()))?
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| ServeError::Internal(format!("decode task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sheds_past_the_wait_limit_and_admits_again_after() {
        let pool = Arc::new(DecodePool::new(1, 1));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        // One running (blocked until released), one waiting.
        let busy = {
            let (pool, rx) = (pool.clone(), release_rx.clone());
            tokio::spawn(async move { pool.run(Admission::Shed, move || rx.lock().unwrap().recv().unwrap()).await })
        };
        while pool.permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(Admission::Shed, || 2).await })
        };
        while pool.waiting.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let shed = pool.run(Admission::Shed, || 3).await.unwrap_err();
        assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed}");
        assert!(shed.to_string().contains("image decode"), "{shed}");
        // Gallery adds wait instead of shedding.
        let patient = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(Admission::Wait, || 4).await })
        };
        release_tx.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), 2);
        assert_eq!(patient.await.unwrap().unwrap(), 4);
        assert_eq!(pool.run(Admission::Shed, || 5).await.unwrap(), 5);
        assert_eq!(pool.waiting.load(Ordering::Acquire), 0);
    }
}
