//! `/v1/limits...`, and the Hypernet swarm's `/limits...` in their old shapes.

use std::collections::BTreeMap;

use colony_kernel::{Enforcement, OnSoft};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/limits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitList {
    pub limits: Vec<LimitView>,
}

/// A system-wide limit as it stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitView {
    pub name: String,
    pub unit: String,
    /// `null`: none.
    pub soft: Option<u64>,
    /// `null`: none.
    pub hard: Option<u64>,
    pub usage: u64,
    pub reserved: u64,
    /// `ok`, `warn` or `queue` (past the soft value, by `on_soft`), `blocked` (at
    /// the hard value).
    pub state: String,
    /// What crossing the soft value does: `warn` or `queue`.
    #[schema(value_type = String)]
    pub on_soft: OnSoft,
    /// The window of a rate, in milliseconds.
    pub window_ms: Option<u64>,
    /// Requests waiting in its admission queue.
    pub queued: usize,
    /// Where it is enforced: `kernel`, `edge`, or `pending` (governed now, enforced
    /// by a feature to come).
    #[schema(value_type = String)]
    pub enforcement: Enforcement,
    pub description: String,
    pub set_by: String,
    pub set_at: String,
    pub set_via: String,
}

/// `GET /limits`: the old swarm's shape, keyed by the old names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HypernetLimits {
    pub limits: BTreeMap<String, HypernetLimit>,
}

/// A limit in the old swarm's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HypernetLimit {
    pub name: String,
    pub colony_name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    pub description: String,
    pub adjustable: bool,
}

/// `GET /limits/check/{name}?current=N`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    /// The count to check; the live usage when absent.
    pub current: Option<u64>,
}

/// Blocked at or past hard, warned at or past soft, as the old `limits.py` answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HypernetCheck {
    pub name: String,
    pub current: u64,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    pub allowed: bool,
    pub warning: bool,
    /// `ok`, `warning` or `blocked`.
    pub status: String,
    pub message: String,
}
