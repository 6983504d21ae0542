//! Why a call is refused, in the shapes OpenAI's and Anthropic's clients parse, and
//! a kernel denial of a reservation told that way.

use colony_kernel::Reason;
use serde_json::Value;

/// Why a call is refused before it reaches an upstream.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// Colony's code.
    pub code: String,
    pub message: String,
    pub details: serde_json::Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    pub fn new(status: u16, kind: &'static str, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            code: code.into(),
            message: message.into(),
            details: Default::default(),
            retry_after_secs: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Refusal {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The body OpenAI clients parse: `{"error":{"message","type","param","code"}}`,
    /// with Colony's numbers under `colony`.
    pub fn openai_body(&self) -> colony_api::gateway::OpenAiError {
        colony_api::gateway::OpenAiError {
            error: colony_api::gateway::OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: None,
                code: self.code.to_string(),
                colony: self.details.clone(),
            },
        }
    }

    /// The body Anthropic clients parse.
    pub fn anthropic_body(&self) -> colony_api::gateway::AnthropicError {
        let kind = match self.status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        colony_api::gateway::AnthropicError {
            kind: "error".into(),
            error: colony_api::gateway::AnthropicErrorDetail {
                kind: kind.into(),
                message: self.message.clone(),
                code: self.code.to_string(),
                colony: self.details.clone(),
            },
        }
    }
}

/// A kernel denial of the reservation, as OpenAI and Anthropic clients surface it.
pub fn denial(reason: &Reason, now_ms: u64) -> Refusal {
    let told = colony_api::Denial::of(reason);
    let (status, kind) = match reason {
        Reason::InsufficientResource { .. } | Reason::HardLimit { .. } => {
            (429, "insufficient_quota")
        }
        Reason::TooManyReservations { .. } => (429, "rate_limit_exceeded"),
        Reason::Forbidden { .. } | Reason::NoStanding { .. } | Reason::Quarantined { .. } => {
            (403, "permission_error")
        }
        _ => (400, "invalid_request_error"),
    };
    let mut refusal = Refusal::new(status, kind, reason.code(), told.message.clone());
    refusal.details = told.details.clone();
    if let Some(secs) = told.retry_after_secs(now_ms) {
        refusal.retry_after_secs = Some(secs);
        refusal.details.insert("retry_after".into(), secs.into());
    }
    refusal
}

/// The request itself is wrong (400).
pub fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(400, "invalid_request_error", "invalid", message)
}
