//! The gateway's one error: what kind of refusal or failure it is, a stable machine-readable
//! code, words for a person, and (for a rate limit or a lock) when to retry. It names no
//! protocol: each face maps [`ErrorKind`] to its own (an HTTP status, a JSON-RPC error, a
//! console page). Messages never hold a secret.

use writ_store::StoreError;

/// What kind of refusal or failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule of its own shape.
    Invalid,
    /// No credential, or one that is not accepted.
    Unauthenticated,
    /// The caller is known but may not do this.
    Forbidden,
    NotFound,
    /// The state moved on, a name is taken, a decision was already made.
    Conflict,
    /// Something over a size limit.
    TooLarge,
    /// Too many attempts: retry after [`Error::retry_after`].
    RateLimited,
    /// The store, the vault or another dependency cannot answer now; nothing was done.
    Unavailable,
    /// A fault of the gateway itself.
    Internal,
}

/// A refusal or failure. Messages never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// Stable and machine-readable: `invalid_request`, `self_approval`, `rate_limited`, …
    pub code: &'static str,
    pub message: String,
    /// Seconds, for [`ErrorKind::RateLimited`].
    pub retry_after: Option<u64>,
}

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, "invalid_request", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, "unauthenticated", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, "conflict", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, "unavailable", message)
    }
    /// A rate limit or a lock, with the seconds after which a retry may succeed.
    pub fn rate_limited(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Error {
            retry_after: Some(retry_after),
            ..Self::new(ErrorKind::RateLimited, code, message)
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Error::not_found(format!("{m} does not exist")),
            StoreError::AlreadyExists(m) => Error::conflict(format!("{m} already exists")),
            e @ StoreError::NameTaken { .. } => {
                Error::new(ErrorKind::Conflict, "name_taken", e.to_string())
            }
            StoreError::Conflict(m) | StoreError::GrantRefused(m) => Error::conflict(m),
            StoreError::InvalidRequest(m) => Error::invalid(m),
            other => {
                tracing::error!(error = %other, "store error");
                Error::unavailable("the store is unavailable; nothing was executed; retry later")
            }
        }
    }
}

impl From<writ_core::EntryError> for Error {
    fn from(e: writ_core::EntryError) -> Self {
        Error::invalid(e.to_string())
    }
}
