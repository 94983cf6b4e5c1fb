//! Every error a request can meet, mapped once to a gRPC status whose message says what to fix.

use imagesearch_compliance::RegionError;
use imagesearch_model::{ImageError, ModelError, TextError};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

pub use imagesearch_proto::metadata::RETRY_PUSHBACK;

/// The shortest pushback given: a caller told to come back sooner would mostly be refused again,
/// and a storm of instant retries costs the cores the admitted requests need.
const MIN_PUSHBACK: Duration = Duration::from_millis(50);
/// The longest: past it a caller would rather be told to look elsewhere.
const MAX_PUSHBACK: Duration = Duration::from_secs(5);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("pair {index}: {source}")]
    BadImage { index: usize, source: ImageError },
    #[error("{what}: {source}")]
    BadText { what: String, source: TextError },
    #[error("bad region: {0}")]
    BadRegion(#[from] RegionError),
    #[error("{0}")]
    Refused(String),
    #[error("scorer version {0} is not loaded (see ModelAdmin.ListVersions)")]
    UnknownVersion(u32),
    #[error("{0}")]
    NotFound(String),
    #[error("{queue} queue is full ({capacity} waiting); retry with back-off")]
    QueueFull { queue: &'static str, capacity: usize },
    #[error("deadline passed while waiting in the {0} queue")]
    DeadlineExceeded(&'static str),
    /// Admission control: the queue's expected wait is past its budget (the work is not queued).
    #[error("{queue} is overloaded: a new request would wait about {} ms, past the budget of {} ms; retry with back-off", .expected.as_millis(), .budget.as_millis())]
    Overloaded { queue: &'static str, expected: Duration, budget: Duration },
    /// The call's deadline falls before the queue's expected wait is over (the work is not started).
    #[error("the call's deadline is {} ms away, nearer than the {queue} queue's expected wait of about {} ms: not started", .left.as_millis(), .expected.as_millis())]
    WouldMissDeadline { queue: &'static str, expected: Duration, left: Duration },
    /// Too many calls of one method in flight (--max-concurrent-requests).
    #[error("{limit} {method} calls are in flight, the server's limit; retry with back-off")]
    TooManyRequests { method: &'static str, limit: usize },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A compare-and-set lost to a concurrent change (read again, then retry).
    #[error("{0}")]
    Conflict(String),
    #[error("{0} call needs 'authorization: Bearer <token>' with the server's {0} token")]
    Unauthenticated(&'static str),
    #[error("the gallery's disk is full: nothing was stored (searches still work); free space, then retry")]
    DiskFull,
    #[error("{what} too large: {detail}")]
    TooLarge { what: &'static str, detail: String },
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("internal: {0}")]
    Internal(String),
    /// Another error, as told to each of several waiters (a failed batch): its code and message.
    #[error("{message}")]
    Replicated { code: Code, message: String },
}

impl ServeError {
    /// The same error again, for another waiter of a failed batch: its code and message kept
    /// (the sources inside some errors cannot be cloned).
    pub fn replicate(&self) -> ServeError {
        ServeError::Replicated { code: self.code(), message: self.to_string() }
    }

    /// The gRPC code this error means.
    pub fn code(&self) -> Code {
        match self {
            ServeError::InvalidArgument(_)
            | ServeError::BadImage { .. }
            | ServeError::BadText { .. }
            | ServeError::BadRegion(_) => Code::InvalidArgument,
            ServeError::Refused(_) => Code::PermissionDenied,
            ServeError::UnknownVersion(_) | ServeError::NotFound(_) => Code::NotFound,
            ServeError::QueueFull { .. }
            | ServeError::Overloaded { .. }
            | ServeError::TooManyRequests { .. }
            | ServeError::DiskFull => Code::ResourceExhausted,
            ServeError::TooLarge { .. } => Code::OutOfRange,
            ServeError::DeadlineExceeded(_) | ServeError::WouldMissDeadline { .. } => Code::DeadlineExceeded,
            ServeError::Unavailable(_) => Code::Unavailable,
            ServeError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServeError::Conflict(_) => Code::Aborted,
            ServeError::Unauthenticated(_) => Code::Unauthenticated,
            ServeError::Model(ModelError::Image(_) | ModelError::Text(_)) => Code::InvalidArgument,
            // A version's files missing, unreadable, tampered or made for other encoders: the
            // repository is not in a state to load it (nothing is wrong with the server).
            ServeError::Model(ModelError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Code::NotFound,
            ServeError::Model(ModelError::Io { .. } | ModelError::Manifest { .. } | ModelError::Checksum { .. } | ModelError::Incompatible(_)) => {
                Code::FailedPrecondition
            }
            ServeError::Model(_) | ServeError::Storage(_) | ServeError::Internal(_) => Code::Internal,
            ServeError::Replicated { code, .. } => *code,
        }
    }
}

impl ServeError {
    /// How long a refused caller should wait before sending the same request again: for an
    /// overloaded queue, until the work ahead has drained to within the budget; for a full queue
    /// or too many calls in flight, the shortest pushback. None where waiting would not help
    /// (every other error, a full disk, a deadline too near).
    pub fn retry_after(&self) -> Option<Duration> {
        let wait = match self {
            ServeError::Overloaded { expected, budget, .. } => expected.saturating_sub(*budget),
            ServeError::QueueFull { .. } | ServeError::TooManyRequests { .. } => Duration::ZERO,
            _ => return None,
        };
        Some(wait.clamp(MIN_PUSHBACK, MAX_PUSHBACK))
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        let mut status = Status::new(e.code(), e.to_string());
        if let Some(wait) = e.retry_after() {
            status.metadata_mut().insert(RETRY_PUSHBACK, MetadataValue::from(wait.as_millis() as u64));
        }
        status
    }
}

/// A short, stable label for a gRPC code (metrics).
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_precise_codes() {
        let cases: Vec<(ServeError, Code)> = vec![
            (ServeError::BadImage { index: 2, source: ImageError::Empty }, Code::InvalidArgument),
            (ServeError::BadText { what: "query".into(), source: TextError::Empty }, Code::InvalidArgument),
            (ServeError::UnknownVersion(9), Code::NotFound),
            (ServeError::QueueFull { queue: "text encoder", capacity: 4 }, Code::ResourceExhausted),
            (ServeError::Unauthenticated("admin"), Code::Unauthenticated),
            (ServeError::DiskFull, Code::ResourceExhausted),
            (ServeError::Unavailable("warming".into()), Code::Unavailable),
            (ServeError::Refused("law".into()), Code::PermissionDenied),
        ];
        for (e, code) in cases {
            let status = Status::from(e);
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(!status.message().is_empty());
        }
        let s = Status::from(ServeError::BadImage { index: 2, source: ImageError::Empty });
        assert_eq!(s.message(), "pair 2: image is empty (0 bytes)");
    }

    fn pushback_ms(e: ServeError) -> Option<String> {
        Status::from(e).metadata().get(RETRY_PUSHBACK).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn refusals_that_waiting_cures_carry_a_pushback() {
        let ms = Duration::from_millis;
        let over = |expected, budget| ServeError::Overloaded { queue: "scorer", expected: ms(expected), budget: ms(budget) };
        // Until the work ahead is within the budget, never under the floor nor past the ceiling.
        assert_eq!(pushback_ms(over(1_400, 1_000)).as_deref(), Some("400"));
        assert_eq!(pushback_ms(over(1_010, 1_000)).as_deref(), Some("50"));
        assert_eq!(pushback_ms(over(60_000, 1_000)).as_deref(), Some("5000"));
        assert_eq!(pushback_ms(ServeError::TooManyRequests { method: "Score", limit: 64 }).as_deref(), Some("50"));
        assert_eq!(pushback_ms(ServeError::QueueFull { queue: "scorer", capacity: 4 }).as_deref(), Some("50"));
        // Waiting does not cure these: no pushback, so a polite client does not come back.
        let deadline = ServeError::WouldMissDeadline { queue: "scorer", expected: ms(900), left: ms(10) };
        for e in [ServeError::DiskFull, deadline, ServeError::Unavailable("warming".into()), ServeError::InvalidArgument("x".into())] {
            assert_eq!(pushback_ms(e), None);
        }
    }
}
