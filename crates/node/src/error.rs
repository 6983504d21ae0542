//! Errors: structured API errors, and what can stop a node from starting.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use colony_kernel::Reason;
use serde_json::{json, Map, Value};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::genesis::ConfigError),
    #[error(transparent)]
    Store(#[from] colony_log::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// An error answered to an HTTP client as `{"error":{"code","message",...}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.details.insert(key.to_string(), value.into());
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn overloaded() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the node's command queue is full; retry shortly",
        );
        error.retry_after_secs = Some(1);
        error
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        )
    }

    /// The node cannot go on (see [`crate::fatal`]); its process is exiting.
    pub fn node_failed(reason: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_failed",
            format!("the node cannot go on and is stopping: {reason}"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The error for a kernel denial: the reason's fields, a status, and a message
    /// that explains the decision to a person.
    pub fn from_denial(reason: &Reason, now_ms: u64) -> ApiError {
        let denial = colony_api::Denial::of(reason);
        let status = match denial.class {
            colony_api::DenialClass::TooMany => StatusCode::TOO_MANY_REQUESTS,
            colony_api::DenialClass::Forbidden => StatusCode::FORBIDDEN,
            colony_api::DenialClass::NotFound => StatusCode::NOT_FOUND,
            colony_api::DenialClass::Conflict => StatusCode::CONFLICT,
            colony_api::DenialClass::Gone => StatusCode::GONE,
            colony_api::DenialClass::Invalid => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            retry_after_secs: denial.retry_after_secs(now_ms),
            code: denial.code,
            message: denial.message,
            details: denial.details,
        }
    }
}

pub use colony_api::explain;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = self.details;
        error.insert("code".into(), Value::String(self.code));
        error.insert("message".into(), Value::String(self.message));
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// A command the pipeline did not decide: 503, with `Retry-After` when it was only
/// full.
impl From<colony_pipeline::SubmitError> for ApiError {
    fn from(error: colony_pipeline::SubmitError) -> ApiError {
        let mut api = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.code, error.message);
        if error.code == "overloaded" || error.code == "cluster_unavailable" {
            api.retry_after_secs = Some(1);
        }
        api
    }
}
