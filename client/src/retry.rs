//! Retries with exponential back-off and full jitter, for UNAVAILABLE and RESOURCE_EXHAUSTED
//! only (the server is restarting or full: the same request may succeed later), and never past
//! the caller's deadline. Every other status is final. Where the server says how long to wait
//! (its `grpc-retry-pushback-ms`, gRPC's retry design A6), that wait replaces the back-off.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use tonic::{Code, Status};

/// How to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Most attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Back-off ceiling of the first retry; doubles each time.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(2) }
    }
}

pub use imagesearch_proto::metadata::RETRY_PUSHBACK;

/// The wait a refused call's server asked for, when it asked (a malformed or negative value
/// means none, as in gRPC's retry design).
pub fn pushback(status: &Status) -> Option<Duration> {
    let ms: u64 = status.metadata().get(RETRY_PUSHBACK)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// `wait` stretched by a random 0–25%, so callers told the same wait do not return together.
pub fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::thread_rng().gen_range(1.0..=1.25))
}

/// Whether a status may be retried.
pub fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::ResourceExhausted)
}

impl RetryPolicy {
    /// The back-off ceiling before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// Runs `call` until it succeeds, fails with a final status, runs out of attempts, or the
    /// next wait would pass `deadline`. Returns the last status and the attempts made.
    pub async fn run<T, F, Fut>(&self, deadline: Option<Instant>, mut call: F) -> (Result<T, Status>, u32)
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match call(attempt).await {
                Ok(v) => return (Ok(v), attempt),
                Err(e) => e,
            };
            if !retryable(err.code()) || attempt >= self.max_attempts.max(1) {
                return (Err(err), attempt);
            }
            let wait = match pushback(&err) {
                Some(asked) => jittered(asked),
                None => Duration::from_secs_f64(rand::thread_rng().gen_range(0.0..=self.ceiling(attempt).as_secs_f64())),
            };
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return (Err(err), attempt);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(4) }
    }

    #[tokio::test]
    async fn retries_unavailable_and_exhausted_until_success() {
        for code in [Code::Unavailable, Code::ResourceExhausted] {
            let calls = AtomicU32::new(0);
            let (r, attempts) = fast()
                .run(None, |_| async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(Status::new(code, "busy")) } else { Ok(7) }
                })
                .await;
            assert_eq!(r.unwrap(), 7);
            assert_eq!(attempts, 3);
        }
    }

    #[tokio::test]
    async fn never_retries_other_codes() {
        for code in [Code::InvalidArgument, Code::NotFound, Code::PermissionDenied, Code::Unauthenticated, Code::DeadlineExceeded, Code::Internal] {
            let (r, attempts) = fast().run(None, |_| async { Err::<(), _>(Status::new(code, "no")) }).await;
            assert_eq!(r.unwrap_err().code(), code);
            assert_eq!(attempts, 1, "{code:?} was retried");
        }
    }

    #[tokio::test]
    async fn stops_at_max_attempts_and_at_the_deadline() {
        let (r, attempts) = fast().run(None, |_| async { Err::<(), _>(Status::unavailable("down")) }).await;
        assert_eq!((r.unwrap_err().code(), attempts), (Code::Unavailable, 5));
        // Each attempt takes at least 30 ms and none starts after the 100 ms deadline: attempt k
        // starts at (k - 1) * 30 ms or later, so at most 4 of the 100 allowed are made.
        let slow = RetryPolicy { max_attempts: 100, initial_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(1) };
        let deadline = Instant::now() + Duration::from_millis(100);
        let (r, attempts) = slow
            .run(Some(deadline), |_| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Err::<(), _>(Status::unavailable("down"))
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::Unavailable, "the last status is returned");
        assert!((1..=4).contains(&attempts), "{attempts} attempts of at least 30 ms each within 100 ms");
    }

    fn pushed_back(ms: &str) -> Status {
        let mut s = Status::resource_exhausted("busy");
        s.metadata_mut().insert(RETRY_PUSHBACK, ms.parse().unwrap());
        s
    }

    #[test]
    fn pushback_is_read_only_when_well_formed() {
        assert_eq!(pushback(&pushed_back("120")), Some(Duration::from_millis(120)));
        for bad in ["-5", "soon", "1.5", ""] {
            assert_eq!(pushback(&pushed_back(bad)), None, "{bad:?}");
        }
        assert_eq!(pushback(&Status::resource_exhausted("busy")), None);
    }

    #[tokio::test]
    async fn the_servers_pushback_replaces_the_backoff() {
        // A back-off of at most 1 ms would retry at once; the server asked for 40 ms.
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let (r, attempts) = fast()
            .run(None, |_| async { if calls.fetch_add(1, Ordering::SeqCst) == 0 { Err(pushed_back("40")) } else { Ok(1) } })
            .await;
        assert_eq!((r.unwrap(), attempts), (1, 2));
        assert!(start.elapsed() >= Duration::from_millis(40), "retried after {:?}", start.elapsed());
        // A pushback that would pass the deadline ends the call with the refusal.
        let deadline = Instant::now() + Duration::from_millis(20);
        let (r, attempts) = fast().run(Some(deadline), |_| async { Err::<(), _>(pushed_back("1000")) }).await;
        assert_eq!((r.unwrap_err().code(), attempts), (Code::ResourceExhausted, 1));
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let p = RetryPolicy { max_attempts: 10, initial_backoff: Duration::from_millis(50), max_backoff: Duration::from_millis(300) };
        let c: Vec<u128> = (1..=5).map(|i| p.ceiling(i).as_millis()).collect();
        assert_eq!(c, vec![50, 100, 200, 300, 300]);
    }
}
