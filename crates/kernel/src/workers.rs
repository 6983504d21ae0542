//! Worker sessions: registered workers, their heartbeats, and how a silent one is
//! declared lost.

use serde::{Deserialize, Serialize};

use crate::principal::PrincipalId;

/// How long a renewal by the node keeps a session (`CommandBody::RenewWorkers`):
/// the node hears heartbeats in memory and declares a silent session lost itself
/// (`CommandBody::DeclareWorkerLost`) within the configured timeout; this deadline is
/// only the backstop for a node that stopped hearing anything (it renews a session
/// it heard from once half of this is left).
pub const SOFT_SESSION_LEASE_MS: u64 = 60 * 60_000;

/// Sessions one `RenewWorkers` command renews at most.
pub const RENEW_WORKERS_MAX: usize = 4_096;

/// A session the node heard from, and when it last did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHeard {
    pub worker: u64,
    pub at_ms: u64,
}

/// A worker's registration request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorker {
    pub capabilities: Vec<String>,
    pub model: Option<String>,
    pub profile: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Active,
    /// Left gracefully.
    Left,
    /// Silent past its timeout: declared lost by the kernel.
    Lost,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Left => "left",
            WorkerState::Lost => "lost",
        }
    }
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSession {
    /// The sequence number of the registration.
    pub id: u64,
    pub principal: PrincipalId,
    pub address: String,
    /// Sorted, without duplicates.
    pub capabilities: Vec<String>,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub state: WorkerState,
    pub registered_at_ms: u64,
    pub last_heartbeat_ms: u64,
    /// Declared lost if no heartbeat comes by then.
    pub deadline_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// Why it was declared lost.
    pub evidence: Option<String>,
}
