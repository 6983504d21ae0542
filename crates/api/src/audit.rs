//! `GET /v1/audit`: the hash-chained decision log, paged.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Filters and paging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records after this index.
    #[serde(default)]
    pub after: u64,
    /// 1 to 1000 (100 by default).
    pub limit: Option<usize>,
    /// Only decisions on commands of this principal (by address).
    pub actor: Option<String>,
    /// Only decisions that name this address.
    pub address: Option<String>,
}

/// A page of records, oldest first, each exactly as stored (so that a client can
/// check the hashes itself: `docs/audit.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Decision records: `seq`, `index`, `at`, `actor`, `decision`, `reason`,
    /// `justification`, `detail`, `prev_hash`, `hash`...
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
    /// Ask for `after=next_after` to read on.
    pub next_after: u64,
    /// The index of the last record the node holds.
    pub last_seq: u64,
}

/// The same page read as typed records, for a client that shows them rather than
/// checks their hashes (which needs each record exactly as stored: [`AuditPage`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DecisionPage {
    pub records: Vec<DecisionRecord>,
    pub next_after: u64,
    pub last_seq: u64,
}

/// One decision record as a reader needs it: who did what to what, the decision,
/// why, and the soft limits it crossed. Fields a reader does not need (the effect,
/// the hashes) are left out; a record from an older node reads the same.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DecisionRecord {
    pub seq: u64,
    /// When the command was logged, RFC 3339 in UTC.
    pub at: String,
    pub at_ms: u64,
    /// The principal that acted.
    pub actor: String,
    pub action: String,
    pub subject: String,
    /// `allowed`, `warned`, `queued`, `denied`...
    pub decision: String,
    pub justification: String,
    pub reason: ReasonView,
    #[serde(default)]
    pub detail: DetailView,
}

/// A decision's reason: its code, and a limit's figures when it is about one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ReasonView {
    pub code: String,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub usage: Option<u64>,
    #[serde(default)]
    pub soft: Option<u64>,
    #[serde(default)]
    pub hard: Option<u64>,
}

/// What a decision crossed on its way: soft limits (`soft_limit` reasons).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct DetailView {
    #[serde(default)]
    pub warnings: Vec<ReasonView>,
}

/// `GET /v1/audit/head`: the node's newest signed head of the decision log. The
/// signature covers exactly the UTF-8 bytes `colony-audit-head/v1\n{seq}\n{head}\n{at_ms}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedHeadView {
    /// The record the head is the chain hash of.
    pub seq: u64,
    /// Its chain hash, lowercase hex.
    pub head: String,
    /// When it was signed, Unix milliseconds.
    pub at_ms: u64,
    /// The node's raw 32-byte Ed25519 public key, standard base64.
    pub public_key: String,
    /// The raw 64-byte Ed25519 signature, standard base64.
    pub signature: String,
}
