//! The contract between a Colony node and its clients: every request and response
//! body of the HTTP API as a type (serialized by serde, described by an OpenAPI schema
//! through utoipa), the one error body ([`ErrorBody`]), and how the kernel's denials
//! are told to people and programs, the same over HTTP and over the bus ([`Denial`],
//! [`explain`]).
//!
//! The node's handlers answer with these types and the CLI reads them back, so the
//! compiler checks both ends. One module per resource, as the routes are grouped.
//!
//! It depends on the kernel's types only; it never serves anything and never does
//! I/O. Kernel types that appear in a body (an effect, a target) keep their own serde
//! shape; their schema is described here ([`schema`]), since the kernel depends on
//! serde alone.

mod denial;
mod error;

pub mod alerts;
pub mod artifacts;
pub mod audit;
pub mod bus;
pub mod cluster;
pub mod dashboard;
pub mod gateway;
pub mod governance;
pub mod grants;
pub mod hypernet;
pub mod ledger;
pub mod limits;
pub mod principals;
pub mod reports;
pub mod schema;
pub mod streams;
pub mod tasks;
pub mod tokens;
pub mod workers;

pub use denial::{explain, format_time, Denial, DenialClass};
pub use error::{retry_after_secs, ErrorBody, Explained};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz`: `ok` while serving; `failed` with the reason once the node cannot
/// go on (503).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `failed`.
    pub status: String,
    /// Why the node stopped (only when `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A justification alone: the body of actions that need nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Justified {
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// `text` percent-encoded for one URL path segment or query value: everything but
/// ASCII letters, digits and `-._~` (RFC 3986's unreserved characters).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
