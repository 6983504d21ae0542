//! `/v1/workers...` (worker sessions) and `/v1/supervisor`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Explained;

/// `POST /v1/workers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// `201`: the session is active; heartbeat every `heartbeat_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerRegistered {
    pub worker: u64,
    pub heartbeat_ms: u64,
    pub timeout_ms: u64,
    pub lease_ms: u64,
    pub warnings: Vec<Explained>,
}

/// `202`: past `active_workers`' soft limit; the session starts, with this id, when a
/// place frees up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerQueued {
    /// `queued`.
    pub status: String,
    pub ticket: u64,
    pub worker: u64,
    pub position: usize,
    pub message: String,
    pub warnings: Vec<Explained>,
}

/// What `POST /v1/workers` answers: queued (202) or registered (201).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegisterAnswer {
    Queued(WorkerQueued),
    Registered(WorkerRegistered),
}

/// `POST /v1/workers/{id}/heartbeat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerHeartbeat {
    pub worker: u64,
    /// `active`.
    pub state: String,
    pub deadline: String,
}

/// `DELETE /v1/workers/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerLeft {
    pub worker: u64,
    /// `left`, or `withdrawn` for a session that was still waiting for a place.
    pub state: String,
    #[schema(value_type = Object)]
    pub effect: colony_kernel::Effect,
}

/// `GET /v1/workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// A worker session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub worker: u64,
    pub principal: String,
    pub capabilities: Vec<String>,
    pub model: Option<String>,
    pub profile: Option<String>,
    /// `active`, `left`, `dead`.
    pub state: String,
    /// `healthy`, `late` (a heartbeat overdue), or the state when not active.
    pub health: String,
    pub registered_at: String,
    pub last_heartbeat: String,
    pub deadline: Option<String>,
    /// The tasks it holds.
    #[schema(value_type = Vec<String>)]
    pub tasks: Vec<colony_kernel::TaskAddress>,
    /// Why it ended, when it did.
    pub evidence: Option<String>,
}

/// `GET /v1/supervisor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupervisorView {
    pub profiles: Vec<ProfileStatus>,
}

/// One supervised profile: processes running, desired count, crashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProfileStatus {
    pub name: String,
    pub principal: String,
    pub pids: Vec<u32>,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    pub crashes_in_window: usize,
    pub halted: bool,
}
