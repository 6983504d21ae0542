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

    /// When the node said to try again: its `Retry-After`, or else the
    /// `retry_after` (seconds) of its error body (the API's, or the gateway's under
    /// `colony`).
    pub fn retry_after(&self) -> Option<Duration> {
        let Error::Refused {
            retry_after, body, ..
        } = self
        else {
            return None;
        };
        retry_after.or_else(|| colony_api::retry_after_secs(body).map(Duration::from_secs))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value, header: Option<u64>) -> Error {
        Error::Refused {
            status: 429,
            code: "rate_limited".into(),
            message: "later".into(),
            body,
            retry_after: header.map(Duration::from_secs),
        }
    }

    #[test]
    fn when_to_try_again_is_read_from_the_header_then_the_body() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(refused(json!({}), Some(4)).retry_after(), secs(4));
        let api = json!({"error": {"code": "rate_limited", "message": "m", "retry_after": 3}});
        assert_eq!(refused(api.clone(), None).retry_after(), secs(3));
        assert_eq!(
            refused(api, Some(9)).retry_after(),
            secs(9),
            "the header first"
        );
        let gateway = json!({"error": {"message": "m", "type": "t", "code": "c",
                                       "colony": {"retry_after": 12}}});
        assert_eq!(refused(gateway, None).retry_after(), secs(12));
        for silent in [
            json!({}),
            json!("busy"),
            json!({"error": {"retry_after": "soon"}}),
        ] {
            assert_eq!(refused(silent, None).retry_after(), None);
        }
        assert_eq!(Error::Setup("x".into()).retry_after(), None);
    }
}
