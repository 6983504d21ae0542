//! `/v1/principals`: creating, listing, removing principals and releasing a
//! quarantine.

use colony_kernel::Priority;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Explained;

/// `POST /v1/principals`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    pub name: String,
    /// `human`, `ai`, `artifact` or `node`.
    pub kind: String,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
    /// `admin`, `member`, `observer`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Address of the principal whose quotas bound the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// A specific address under the kind's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Priority,
}

/// `201`: the principal exists; its token is shown this once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalCreated {
    pub id: u64,
    pub address: String,
    pub token: String,
    pub warnings: Vec<Explained>,
    /// `allowed`.
    pub decision: String,
    pub seq: u64,
}

/// `202`: past a soft limit; created when usage drops (the token works from then on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalQueued {
    /// `queued`.
    pub status: String,
    pub ticket: u64,
    pub limit: String,
    pub position: usize,
    pub token: String,
    pub message: String,
    pub warnings: Vec<Explained>,
}

/// `?all=true` includes removed principals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub all: bool,
}

/// `GET /v1/principals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalList {
    pub principals: Vec<PrincipalView>,
}

/// A principal as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalView {
    pub id: u64,
    pub address: String,
    pub name: String,
    /// `human`, `ai`, `artifact`, `node`.
    pub kind: String,
    pub roles: Vec<String>,
    pub standing: bool,
    /// `active`, `quarantined` (see `quarantine`) or `removed`.
    pub state: String,
    pub quarantine: Option<QuarantineView>,
    /// The address of the principal whose quotas bound this one.
    pub parent: Option<String>,
    pub created_at: String,
}

/// Why and since when a principal is quarantined, and what was taken from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuarantineView {
    pub since: String,
    /// The signal, its count in the window, the threshold and the baseline.
    #[schema(value_type = Object)]
    pub evidence: colony_kernel::anomaly::Evidence,
    pub released_reservations: u32,
    #[schema(value_type = Vec<String>)]
    pub revoked_leases: Vec<colony_kernel::TaskAddress>,
    pub ended_workers: Vec<u64>,
}

/// `POST /v1/principals/{address}/remove` and `.../release`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalAction {
    /// The address removed (`remove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// The address released from quarantine (`release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// What the kernel did.
    #[schema(value_type = Object)]
    pub effect: colony_kernel::Effect,
    pub seq: u64,
}

/// What `POST /v1/principals` answers: queued (202) or created (201).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CreateAnswer {
    Queued(PrincipalQueued),
    Created(PrincipalCreated),
}
