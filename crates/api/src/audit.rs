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
