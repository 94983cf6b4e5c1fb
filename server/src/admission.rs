//! Admission at the front door: how many Score (unary calls and stream messages alike) and
//! Search calls may be in flight at once. Past the limit a call is refused with
//! RESOURCE_EXHAUSTED before any work is done (text-embeddings-inference's
//! `--max-concurrent-requests`); the model queues behind it admit by expected wait
//! ([`crate::batcher`]).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServeError;
use crate::metrics as m;

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
