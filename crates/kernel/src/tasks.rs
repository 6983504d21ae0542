//! The task board's types: tasks, leases, attempts, and how priority is computed.
//!
//! Effective priority, used to hand out work (higher first):
//!
//! ```text
//! effective = base + unblock + aging
//!   base    = 100 (low), 200 (normal), 300 (high), 400 (critical)
//!   unblock = unblock_points x (open tasks that depend on this one directly), at most unblock_points_max
//!   aging   = aging_points_per_minute x (whole minutes since it became claimable), at most aging_points_max
//! ```
//!
//! Ties go to the task waiting longest, then to the smaller address.

use serde::{Deserialize, Serialize};

use crate::command::Priority;
use crate::principal::PrincipalId;
use crate::task_address::TaskAddress;

/// Where root tasks are numbered (HYPERNET.md: `0.7.1` is the task queue).
pub const TASK_QUEUE_ADDRESS: &str = "0.7.1";
/// Largest checkpoint a task keeps, in bytes.
pub const CHECKPOINT_BYTES_MAX: usize = 64 << 10;
/// Largest result a task keeps, in bytes.
pub const RESULT_BYTES_MAX: usize = 64 << 10;
/// Most subtasks one decomposition creates.
pub const SUBTASKS_MAX: usize = 100;
/// Deepest level of decomposition: a root task is level 0, its subtasks level 1;
/// a task at this level cannot be decomposed further.
pub const TASK_DEPTH_MAX: usize = 8;
/// Most capabilities a task requires or a worker offers.
pub const CAPABILITIES_MAX: usize = 32;
/// Most dependencies of one task.
pub const DEPENDENCIES_MAX: usize = 64;
/// The shortest attempt timeout a task may ask for.
pub const ATTEMPT_TIMEOUT_MIN_MS: u64 = 1_000;
/// Most tasks one cancellation ends (a task and its open subtasks, at every level).
pub const CANCEL_TASKS_MAX: usize = 10_000;
/// Most ready tasks a claim examines per priority level before giving up on it.
pub const CLAIM_SCAN_PER_LEVEL_MAX: usize = 4_096;

/// How the board behaves; part of genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskConfig {
    pub lease_ms: u64,
    pub lease_max_ms: u64,
    /// How long one attempt may take when the task names no `attempt_timeout`:
    /// past it the attempt fails as timed out, however often its lease was renewed.
    pub attempt_timeout_ms: u64,
    /// The longest `attempt_timeout` a task may ask for.
    pub attempt_timeout_max_ms: u64,
    pub max_attempts: u32,
    /// Backoff after the n-th failed attempt: `backoff_base_ms * 2^(n-1)`, capped.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How often a worker session says it is alive.
    pub worker_heartbeat_ms: u64,
    /// A worker silent this long is declared lost and its leases revoked.
    pub worker_timeout_ms: u64,
    pub aging_points_per_minute: u32,
    pub aging_points_max: u32,
    pub unblock_points: u32,
    pub unblock_points_max: u32,
}

/// The shipped defaults: what the empty state holds until genesis installs
/// `tasks.toml`.
impl Default for TaskConfig {
    fn default() -> TaskConfig {
        TaskConfig::defaults()
    }
}

impl TaskConfig {
    pub fn defaults() -> TaskConfig {
        TaskConfig {
            lease_ms: 30_000,
            lease_max_ms: 600_000,
            attempt_timeout_ms: 30 * 60_000,
            attempt_timeout_max_ms: 7 * 86_400_000,
            max_attempts: 3,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            worker_heartbeat_ms: 2_000,
            worker_timeout_ms: 6_000,
            aging_points_per_minute: 1,
            aging_points_max: 100,
            unblock_points: 25,
            unblock_points_max: 200,
        }
    }

    pub fn backoff_ms(&self, failed_attempts: u32) -> u64 {
        let exponent = failed_attempts.saturating_sub(1).min(32);
        self.backoff_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.backoff_max_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Claimable now.
    Pending,
    /// Waiting for dependencies, or for its subtasks.
    Blocked,
    Claimed,
    InProgress,
    Completed,
    /// The last attempt failed; claimable again after its backoff.
    Failed,
    /// In the dead-letter queue.
    Dead,
    /// Cancelled by its poster (or an ancestor of the poster, or an admin).
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Claimed => "claimed",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Every status, in the board's order.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Pending,
        TaskStatus::Blocked,
        TaskStatus::Claimed,
        TaskStatus::InProgress,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Dead,
        TaskStatus::Cancelled,
    ];

    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// Still counts toward `task_queue_depth`.
    pub fn is_open(self) -> bool {
        !matches!(
            self,
            TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled
        )
    }
}

/// What a parent does when one of its subtasks dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildDeathPolicy {
    /// The parent goes to the dead-letter queue too.
    #[default]
    Fail,
    /// The parent becomes claimable again (a failed attempt), to be decomposed anew.
    Redecompose,
}

/// A claim: who holds the task, until when, and the fencing token that proves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: PrincipalId,
    pub holder_address: String,
    /// The sequence number of the claim; every later call must present it.
    pub token: u64,
    pub lease_ms: u64,
    pub expires_at_ms: u64,
    /// The worker session the claim was made for, if any.
    pub worker: Option<u64>,
    /// When the attempt fails as timed out (its start plus the task's
    /// `attempt_timeout_ms`); the lease is never renewed past it.
    pub attempt_deadline_ms: u64,
    /// The claim's time, then its last renewal (a heartbeat or a checkpoint).
    pub renewed_at_ms: u64,
}

/// One try at a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub worker: String,
    pub token: u64,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// `completed`, `failed`, `released`, `lease_expired`, `timed_out`,
    /// `decomposed`, `cancelled`.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// The holder's last heartbeat or checkpoint, once the attempt ended.
    pub last_renewed_at_ms: Option<u64>,
}

/// A change of status, with who made it and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub from: Option<TaskStatus>,
    pub to: TaskStatus,
    pub by: String,
    pub justification: String,
}

/// Money that travels with a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskBudget {
    /// Whose `llm_budget_usd` holds the reservation and is charged.
    pub payer: PrincipalId,
    pub total_micro_usd: u64,
    pub remaining_micro_usd: u64,
    pub spent_micro_usd: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub address: TaskAddress,
    pub parent: Option<TaskAddress>,
    /// The subtasks of the current decomposition.
    pub children: Vec<TaskAddress>,
    /// Subtasks ever created, so that a new decomposition numbers on.
    pub next_child: u32,
    pub title: String,
    pub description: String,
    pub priority: Priority,
    /// Sorted, without duplicates.
    pub capabilities: Vec<String>,
    pub depends_on: Vec<TaskAddress>,
    pub budget: Option<TaskBudget>,
    pub max_attempts: u32,
    /// How long one attempt may take.
    pub attempt_timeout_ms: u64,
    /// Failed attempts counted toward `max_attempts` (a requeue resets it).
    pub failures: u32,
    pub status: TaskStatus,
    pub attempts: Vec<Attempt>,
    pub checkpoint: Option<String>,
    pub result: Option<String>,
    pub history: Vec<Transition>,
    pub created_at_ms: u64,
    pub created_by: String,
    pub lease: Option<Lease>,
    /// Claimable again from then (after a failed attempt).
    pub not_before_ms: u64,
    /// Since when it has been claimable (aging starts there).
    pub ready_since_ms: u64,
    /// Why it is dead, newest last.
    pub dead_reasons: Vec<String>,
    pub on_child_death: ChildDeathPolicy,
}

/// Most leases one `RenewLeases` command renews.
pub const RENEW_LEASES_MAX: usize = 4_096;

/// A task lease whose holder the node heard heartbeat (soft lease renewals: a
/// heartbeat on a task in progress is answered in memory, not logged): kept until
/// `at_ms` plus the lease's length, as a heartbeat then would have kept it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHeard {
    pub address: TaskAddress,
    /// The lease's fencing token: a renewal of a lease that ended since is ignored.
    pub token: u64,
    pub at_ms: u64,
}

/// A task to post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub capabilities: Vec<String>,
    /// Addresses of existing tasks; in a decomposition, also `"1"`, `"2"`... for
    /// the siblings created with it.
    pub depends_on: Vec<String>,
    pub budget_micro_usd: Option<u64>,
    pub max_attempts: Option<u32>,
    /// How long one attempt may take (`ATTEMPT_TIMEOUT_MIN_MS` to the board's
    /// `attempt_timeout_max_ms`); the board's default when `None`.
    pub attempt_timeout_ms: Option<u64>,
}
