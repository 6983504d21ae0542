//! What a call answers when it does not succeed.

use std::time::Duration;

use serde_json::Value;

/// A refusal of the node (its status and the error it explained), or a failure to
/// reach it or to read its answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered an error: `code` and `message` as it explained them (a
    /// refusal names the limit, quota or scope, and how to get more).
    #[error("{code} (HTTP {status}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        /// The whole error body, as the node answered it.
        body: Value,
        /// When the node said to try again (`Retry-After`: a limit's window, an
        /// overloaded or unreachable cluster).
        retry_after: Option<Duration>,
    },
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach the node at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The node answered a shape this client does not know (another version?).
    #[error("the node's answer to {what} is not what this client expects: {message}")]
    Unexpected { what: String, message: String },
    /// The client was set up wrong (a URL, a token, a CA file).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of a refusal (`hard_limit`, `insufficient_resource`,
    /// `stale_lease`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// When the node said to try again, for a refusal that carries `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same call may succeed later without anything changed: the node
    /// could not be reached, was overloaded or had lost its cluster (`429`, `502`,
    /// `503`, `504`), as opposed to a refusal that stands.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Refused { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            Error::Unexpected { .. } | Error::Setup(_) => false,
        }
    }

    /// Whether the work this call was about went to someone else or is over: a
    /// lease that is no longer the caller's (`409`), a session or task that is gone
    /// (`404`, `410`). A worker stops that task, never retries the call.
    pub fn is_gone(&self) -> bool {
        matches!(self.status(), Some(404 | 409 | 410))
    }
}
