//! The one error type every backend returns.
//!
//! A `BackendError` says which backend and which secret it is about, what happened (its
//! [`ErrorKind`], which callers branch on) and what to do next, and keeps the underlying cause
//! as its `source`. It never contains a secret value: backends build the message from names,
//! status codes and server error codes only.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// What went wrong, coarse enough to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The secret does not exist (distinct from an existing, empty secret).
    NotFound,
    /// The secret exists but the requested `#field` is not in it.
    FieldNotFound,
    /// The secret value has the wrong shape (e.g. a `#field` was asked of a value that is not a JSON object).
    InvalidValue,
    /// The secret name breaks the backend's naming rules; refused before any network call.
    InvalidName,
    /// The value to write is larger than the backend accepts; refused before any network call.
    ValueTooLarge,
    /// The backend's options are unusable (e.g. plain http to a remote address).
    InvalidConfig,
    /// The server refused our credentials (missing, wrong or expired).
    Unauthorized,
    /// The credentials are valid but lack permission for this secret.
    Forbidden,
    /// The server could not be reached (connection refused, DNS, TLS, timeout).
    Unreachable,
    /// The server asked us to slow down.
    Throttled,
    /// The server failed temporarily (HTTP 5xx, sealed, standby).
    Unavailable,
    /// The write conflicts with the secret's current state (e.g. scheduled for deletion, a concurrent write).
    Conflict,
    /// A local file-system operation failed.
    Io,
    /// The server answered something we do not understand.
    Protocol,
}

impl ErrorKind {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unreachable | ErrorKind::Throttled | ErrorKind::Unavailable
        )
    }
}

/// An error from a secret backend.
///
/// Display: `backend "NAME", secret "SECRET": WHAT HAPPENED[: CAUSE]`; the cause chain is also
/// available through [`std::error::Error::source`].
#[derive(Debug)]
pub struct BackendError {
    kind: ErrorKind,
    backend: String,
    secret: Option<String>,
    message: String,
    retry_after: Option<Duration>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl BackendError {
    /// A new error of `kind` for the backend named `backend`. `message` says what happened and
    /// what to do; it must never contain a secret value.
    pub fn new(kind: ErrorKind, backend: impl Into<String>, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            backend: backend.into(),
            secret: None,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Names the secret the error is about.
    #[must_use]
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Keeps the underlying cause (it must not contain a secret value either).
    #[must_use]
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records how long the server asked us to wait before retrying.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Adds advice to the end of the message.
    #[must_use]
    pub(crate) fn with_advice(mut self, advice: &str) -> Self {
        self.message.push_str("; ");
        self.message.push_str(advice);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The configured name of the backend.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The secret the error is about, when there is one.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// What happened and what to do, without backend/secret prefix or cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long the server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether trying again later may succeed (see [`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// True for [`ErrorKind::NotFound`].
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend \"{}\"", self.backend)?;
        if let Some(secret) = &self.secret {
            write!(f, ", secret \"{secret}\"")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_backend_and_secret_and_keeps_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = BackendError::new(
            ErrorKind::Io,
            "local",
            "cannot write the file: check the directory's permissions",
        )
        .with_secret("graph.json")
        .with_source(io);
        assert_eq!(
            err.to_string(),
            "backend \"local\", secret \"graph.json\": cannot write the file: check the directory's permissions"
        );
        assert_eq!(
            err.source().map(|s| s.to_string()).as_deref(),
            Some("denied")
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn retryable_kinds() {
        let retryable: Vec<ErrorKind> = [
            ErrorKind::NotFound,
            ErrorKind::Unauthorized,
            ErrorKind::Unreachable,
            ErrorKind::Throttled,
            ErrorKind::Unavailable,
            ErrorKind::Conflict,
        ]
        .into_iter()
        .filter(|k| k.is_retryable())
        .collect();
        assert_eq!(
            retryable,
            vec![
                ErrorKind::Unreachable,
                ErrorKind::Throttled,
                ErrorKind::Unavailable
            ]
        );
    }
}
