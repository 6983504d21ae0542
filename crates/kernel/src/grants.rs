//! Permission escalation (seed 001): a principal asks for more than it has (a scope
//! on the token it asks with, a role, or a quota increase) for a while, with a
//! justification; who may approve is set in `governance.toml` `[governance.grants]`;
//! an approved grant applies at once and ends by itself at its `ttl`, its effect
//! reverted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::governance::Side;
use crate::ledger::Resource;
use crate::principal::{PrincipalId, Role};

/// Longest a grant may last: thirty days.
pub const GRANT_TTL_MAX_MS: u64 = 30 * 24 * 3_600 * 1_000;
/// Requests one principal may have pending at once.
pub const PENDING_GRANTS_PER_PRINCIPAL_MAX: usize = 8;
/// Ended grants kept for reading (the decision log keeps them all).
pub const ENDED_GRANTS_KEPT_MAX: usize = 4_096;

/// What a grant gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantWhat {
    /// One more scope on the token the request was made with.
    Scope { token: u64, scope: String },
    /// A role.
    Role { role: Role },
    /// More quota of a resource.
    Quota { resource: Resource, amount: u64 },
    /// One call of an upstream MCP server's tool marked `approval = "human"`, with
    /// exactly these arguments (their SHA-256, lowercase hex): decided by a human
    /// member or admin of another lineage before `ttl` passes (the request ends by
    /// itself then), and used once by the [`crate::tool_calls::ToolCallRecord`] that
    /// names it.
    ToolCall {
        tool: String,
        arguments_sha256: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Waiting for its approvals.
    Pending,
    /// In force until `expires_at_ms`.
    Active,
    Denied,
    /// Ended at its `ttl`, its effect reverted (a tool call's request: never decided
    /// in time).
    Expired,
    /// A tool call's approval, used by the call it approved.
    Used,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Active => "active",
            GrantState::Denied => "denied",
            GrantState::Expired => "expired",
            GrantState::Used => "used",
        }
    }
}

/// A request for more, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The sequence number of the request.
    pub id: u64,
    pub requester: PrincipalId,
    pub requester_address: String,
    pub what: GrantWhat,
    pub ttl_ms: u64,
    pub justification: String,
    pub state: GrantState,
    pub created_at_ms: u64,
    /// Who approved, on which side (a quota above the bound needs both sides).
    pub approvals: Vec<(String, Side)>,
    /// Who ended it (the last approver, or who denied it).
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    /// Whether applying it changed anything (a role or scope already held is not
    /// taken away when the grant ends).
    pub applied: bool,
}

/// Who approves what (`[governance.grants]`): roles and scopes by an admin; quotas
/// up to `quota_bound` by any human member or admin; above it, by an approving
/// human and an approving AI (members or admins), one of each side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRules {
    pub quota_bound: BTreeMap<Resource, u64>,
}

impl Default for GrantRules {
    fn default() -> Self {
        GrantRules {
            quota_bound: BTreeMap::from([
                (Resource::LlmBudgetUsd, 5 * crate::MICRO_USD_PER_USD),
                (Resource::ComputeMs, 3_600_000),
                (Resource::IoOps, 10_000),
                (Resource::DiskBytes, 1 << 30),
                (Resource::MemoryBytes, 1 << 30),
            ]),
        }
    }
}
