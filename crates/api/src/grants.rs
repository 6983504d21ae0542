//! `/v1/grants`: asking for more than one has (a scope, a role, a quota) for a
//! while, and approving or denying it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::streams::Duration;

/// More of a resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaAsk {
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    /// In the resource's unit (micro-dollars for money).
    #[schema(maximum = 9007199254740991.0)]
    pub amount: u64,
}

/// `POST /v1/grants`: exactly one of `scope` (added to the token asking), `role`,
/// `quota`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `member`, `observer` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaAsk>,
    /// How long it lasts once approved: milliseconds or text like `"2h"` (at most 30 days).
    pub ttl: Duration,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// `GET /v1/grants?state=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantQuery {
    /// `pending`, `active`, `denied`, `expired`.
    pub state: Option<String>,
}

/// One approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub by: String,
    /// `human` or `ai`.
    pub side: String,
}

/// A request for more and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub id: u64,
    pub requester: String,
    /// `scope`, `role`, `quota` or `tool_call`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// A `tool_call`'s tool (`{server}__{tool}`) and its arguments' SHA-256: one call
    /// of a tool marked `approval = "human"` in mcp.toml, waiting while it is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    pub ttl_ms: u64,
    /// `pending`, `active`, `denied`, `expired` or (a tool call's) `used`.
    pub state: String,
    pub justification: String,
    pub created_at: String,
    pub approvals: Vec<ApprovalView>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub expires_at: Option<String>,
    pub expires_at_ms: Option<u64>,
    /// The decision that answered this request (after an action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `GET /v1/grants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantView>,
}
