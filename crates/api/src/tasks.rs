//! `/v1/tasks...`: the task board.

use colony_kernel::tasks::ChildDeathPolicy;
use colony_kernel::{Priority, TaskAddress};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Explained;

/// Dollars: a JSON number (`1.5`) or a decimal string (`"1.50"`, exact to the
/// micro-dollar).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Usd {
    Number(f64),
    Text(String),
}

/// `POST /v1/tasks`, and each subtask of a decomposition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Priority,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Addresses of tasks that must complete first (in a decomposition, also `"1"`,
    /// `"2"`... for siblings).
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// How long one attempt may take (`"30m"`, or milliseconds; 1 s to the board's
    /// `attempt_timeout_max`): past it the attempt fails as timed out, however often
    /// its lease is renewed. The board's `attempt_timeout` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_timeout: Option<crate::streams::Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// `POST /v1/tasks/{address}/priority`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityRequest {
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// `POST /v1/tasks/claim`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// The worker session the claim is for (`POST /v1/workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// When nothing is claimable now, wait up to this long (at most
    /// [`CLAIM_WAIT_MS_MAX`]) for a matching task to become claimable instead of
    /// answering `204` at once: a long poll. A waiting claim is not counted among the
    /// requests being served (`concurrent_api_requests`, the principal's requests in
    /// flight); past as many waiting claims as the principal may have requests in
    /// flight, a claim answers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// The longest a claim waits for work (`wait_ms`).
pub const CLAIM_WAIT_MS_MAX: u64 = 30_000;

/// `200` of a claim (`204` when nothing is claimable).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Claimed {
    pub task: TaskView,
    pub lease: LeaseGranted,
    pub warnings: Vec<Explained>,
}

/// The lease a claim holds: present `token` on every later call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseGranted {
    pub token: u64,
    pub expires_at: String,
    pub expires_at_ms: u64,
    /// When the attempt fails as timed out, however often the lease is renewed:
    /// a worker stops the work then.
    pub attempt_deadline_ms: u64,
}

/// `POST /v1/tasks/{address}/{action}` for `heartbeat`, `checkpoint`, `complete`,
/// `fail`, `release` and `spend`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub lease_token: u64,
    /// Opaque JSON to resume from (`checkpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// Any JSON (`complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the attempt failed (`fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Dollars to charge to the task's budget (`spend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_usd: Option<Usd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// `POST /v1/tasks/{address}/decompose`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecomposeRequest {
    pub lease_token: u64,
    pub subtasks: Vec<TaskRequest>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::child_death_policy)]
    pub on_child_death: ChildDeathPolicy,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// `GET /v1/tasks` filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `blocked`, `claimed`, `in_progress`, `completed`, `failed`, `dead`.
    pub status: Option<String>,
    pub capability: Option<String>,
    /// 1 to 1000 (100 by default).
    pub limit: Option<usize>,
    /// Tasks after this address.
    pub after: Option<String>,
}

/// `GET /v1/tasks`, `GET /v1/tasks/dead`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// A task as clients see it. `children`, `attempts` and `history` are in the answers
/// about one task (`GET /v1/tasks/{address}`, posting, decomposing), not in lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    #[schema(value_type = String)]
    pub address: TaskAddress,
    #[schema(value_type = Option<String>)]
    pub parent: Option<TaskAddress>,
    pub title: String,
    pub description: String,
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Priority,
    /// The priority with aging, as the board orders claims.
    pub effective_priority: u32,
    pub capabilities: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub depends_on: Vec<TaskAddress>,
    /// `pending`, `blocked`, `claimed`, `in_progress`, `completed`, `failed`, `dead`,
    /// `cancelled`.
    pub status: String,
    pub budget: Option<BudgetView>,
    pub max_attempts: u32,
    /// How long one attempt may take, in milliseconds.
    pub attempt_timeout_ms: u64,
    pub failures: u32,
    pub attempt_count: usize,
    pub lease: Option<LeaseView>,
    /// Claimable again from then (after a failed attempt).
    pub not_before: Option<String>,
    /// The last checkpoint (any JSON).
    #[serde(default)]
    pub checkpoint: Value,
    /// The result (any JSON).
    #[serde(default)]
    pub result: Value,
    pub created_at: String,
    pub created_by: String,
    pub dead_reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<ChildView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TransitionView>>,
    /// The task's tree left the live state by the retention rule: read from the
    /// task archive, as it last stood.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
    /// Soft-limit warnings (posting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<Explained>>,
    /// What the action did (`/{action}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub effect: Option<colony_kernel::Effect>,
}

/// Money that travels with a task, in micro-dollars.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    pub total_micro_usd: u64,
    pub spent_micro_usd: u64,
    pub remaining_micro_usd: u64,
}

/// Who holds a task, under which fencing token, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    pub holder: String,
    pub token: u64,
    pub expires_at: String,
    /// When the attempt fails as timed out, renewed or not.
    pub attempt_deadline: String,
}

/// A subtask of the current decomposition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChildView {
    #[schema(value_type = String)]
    pub address: TaskAddress,
    pub title: String,
    pub status: String,
}

/// One try at a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub number: u32,
    pub worker: String,
    pub token: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `completed`, `failed`, `released`, `lease_expired`, `decomposed`.
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

/// A change of status, with who made it and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransitionView {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub by: String,
    pub justification: String,
}
