//! `/v1/principals/{address}/tokens`: a principal's tokens, each with scopes, an
//! optional expiry and a name; the secret is shown once, when it is made.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::streams::Duration;

/// `POST /v1/principals/{address}/tokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for (1 to 64 bytes).
    pub name: String,
    /// `llm`, `bus`, `tasks`, `ledger`, `governance`, `read`, `admin`, `spawn`,
    /// `tokens`, `bus:PATTERN`, `task:ADDRESS`; no wider than the token making it.
    pub scopes: Vec<String>,
    /// How long it works: milliseconds or text like `"24h"` (none: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// `201`: the token, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub id: u64,
    pub token: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub expires_at_ms: Option<u64>,
    pub seq: u64,
}

/// A token as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: u64,
    pub name: String,
    pub scopes: Vec<String>,
    /// `live`, `expired` or `revoked`.
    pub state: String,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub expires_at_ms: Option<u64>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

/// `GET /v1/principals/{address}/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub principal: String,
    pub tokens: Vec<TokenView>,
}

/// `DELETE /v1/principals/{address}/tokens/{id}`: revoked at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRevoked {
    pub principal: String,
    pub token: u64,
    /// Bus connections that were using it, closed.
    pub closed_connections: usize,
    pub seq: u64,
}

/// `DELETE ...?justification=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    pub justification: Option<String>,
}
