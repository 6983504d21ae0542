//! The one error body every route answers, and soft-limit warnings, which have the
//! same shape: a code, a message a person can act on, and the reason's fields.

use colony_kernel::Reason;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A reason told: `code` (machine-readable, stable), `message` (for a person), and
/// the fields of the reason (a limit's name, the amounts, who set it...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Explained {
    pub code: String,
    pub message: String,
    /// The reason's own fields (they differ by `code`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

impl Explained {
    /// A kernel reason (a denial or a warning), told.
    pub fn of(reason: &Reason) -> Explained {
        let denial = crate::Denial::of(reason);
        Explained {
            code: denial.code,
            message: denial.message,
            details: denial.details,
        }
    }

    /// Each reason told.
    pub fn all(reasons: &[Reason]) -> Vec<Explained> {
        reasons.iter().map(Explained::of).collect()
    }

    /// A field of the details, as a string, if it is one.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.details.get(key).and_then(Value::as_str)
    }
}

/// `{"error": {"code", "message", ...}}`: what every failed request answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: Explained,
}

/// How many seconds an error body says to wait before trying again: the API's
/// `error.retry_after`, or the LLM gateway's `error.colony.retry_after` (its
/// refusals keep OpenAI's shape). What a client reads when the answer carried no
/// `Retry-After` header.
pub fn retry_after_secs(body: &Value) -> Option<u64> {
    let error = body.get("error")?;
    error
        .get("retry_after")
        .or_else(|| error.get("colony")?.get("retry_after"))
        .and_then(Value::as_u64)
}
