//! Every error a request can meet, mapped once to a gRPC status whose message says what to fix.

use imagesearch_compliance::RegionError;
use imagesearch_model::{ImageError, ModelError, TextError};
use tonic::{Code, Status};

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
    Overloaded { queue: &'static str, expected: std::time::Duration, budget: std::time::Duration },
    /// The call's deadline falls before the queue's expected wait is over (the work is not started).
    #[error("the call's deadline is {} ms away, nearer than the {queue} queue's expected wait of about {} ms: not started", .left.as_millis(), .expected.as_millis())]
    WouldMissDeadline { queue: &'static str, expected: std::time::Duration, left: std::time::Duration },
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

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        Status::new(e.code(), e.to_string())
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
}
