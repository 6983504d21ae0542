//! Events: the decisions the kernel takes, with machine-readable reasons.

use serde::{Deserialize, Serialize};

use crate::governance::{ChangeKind, ProposalState, StabilityFigures, Tally, VoteChoice};
use crate::ledger::{ReservationId, Resource};
use crate::principal::{PrincipalId, PrincipalKind};
use crate::task_address::TaskAddress;

/// What the kernel decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Done, within every limit.
    Allowed,
    /// Done, but a soft limit was crossed; see the event's warnings.
    Warned,
    /// Waiting in a soft-limit admission queue.
    Queued,
    /// A queued request that has now been admitted and done.
    Admitted,
    /// Not done; the reason says why.
    Denied,
    /// Undone because its time ran out (a reservation).
    Expired,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        matches!(
            self,
            Decision::Allowed | Decision::Warned | Decision::Admitted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Warned => "warned",
            Decision::Queued => "queued",
            Decision::Admitted => "admitted",
            Decision::Denied => "denied",
            Decision::Expired => "expired",
        }
    }
}

/// Which action an event is about; the same names as [`crate::CommandBody::name`],
/// plus consequences that no command asked for directly.
pub type Action = &'static str;

/// Why the kernel decided as it did. Serialized with a `code` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// Within every limit and quota.
    Ok,
    /// Soft limit crossed or reached (a warning, or the cause of queueing).
    SoftLimit {
        limit: String,
        usage: u64,
        requested: u64,
        soft: u64,
        hard: Option<u64>,
    },
    /// Hard limit would be crossed: denied.
    HardLimit {
        limit: String,
        usage: u64,
        requested: u64,
        hard: u64,
        set_by: String,
        set_at_ms: u64,
        set_via: String,
    },
    /// The soft-limit admission queue of `limit` is full.
    QueueFull { limit: String, queue_max: u32 },
    /// Not enough of a resource at `principal` (the actor, or an ancestor whose
    /// quota bounds it).
    InsufficientResource {
        resource: Resource,
        requested: u64,
        available: u64,
        principal: String,
        /// When a flow quota refills, if it is a flow.
        refill_at_ms: Option<u64>,
    },
    /// The actor lacks the role or the relation the action needs.
    Forbidden { message: String },
    /// The actor has no standing (removed, or never existed).
    NoStanding { actor: PrincipalId },
    /// Something named in the command does not exist.
    NotFound { what: String, id: String },
    /// The command is malformed or conflicts with the state.
    Invalid { message: String },
    /// A reservation's time ran out before it was committed or released.
    ReservationExpired { expired_at_ms: u64 },
    /// A queued request was admitted because the limit now allows it.
    LimitAllows {
        limit: String,
        ticket: u64,
        waited_ms: u64,
    },
    /// Both sides reached their quorum and approval threshold.
    ConsensusReached { tally: Box<Tally> },
    /// A side missed its quorum or its approval threshold.
    ConsensusNotReached { tally: Box<Tally> },
    /// A veto by an allowed role.
    Vetoed { by: String },
    /// A brake would take a limit below its floor.
    BrakeFloor {
        limit: String,
        floor: u64,
        requested: u64,
    },
    /// The principal applied its most brakes for the hour.
    BrakeRate {
        max: u32,
        window_ms: u64,
        retry_at_ms: u64,
    },
    /// The principal already holds its fair share of an admission queue.
    QueueShare {
        limit: String,
        held: u32,
        share: u32,
    },
    /// The principal has its most proposals in review.
    TooManyProposals { max: u32 },
    /// A brake's time ran out before the other side confirmed it.
    BrakeExpired {
        proposal: u64,
        applied_at_ms: u64,
        ttl_ms: u64,
    },
    /// A signal of the principal's was far outside its baseline or past a ceiling.
    Anomalous {
        evidence: Box<crate::anomaly::Evidence>,
    },
    /// The actor is quarantined: it may only read until a human releases it.
    Quarantined {
        since_ms: u64,
        evidence: Box<crate::anomaly::Evidence>,
    },
    /// The other side confirmed a brake: it holds until changed.
    BrakeConfirmed { proposal: u64, by: String },
    /// The stability window met every threshold.
    Stable { figures: StabilityFigures },
    /// The stability window broke a threshold after a raise.
    StabilityDegraded {
        figures: StabilityFigures,
        breaches: Vec<String>,
    },
    /// A lease call with a token that is not the task's current one: the caller's
    /// claim was lost (expired and reassigned, or never held).
    StaleLease {
        task: TaskAddress,
        presented: u64,
        current: Option<u64>,
        status: String,
    },
    /// Someone else holds the task (or it is not claimable now).
    NotClaimable {
        task: TaskAddress,
        status: String,
        holder: Option<String>,
    },
    /// The worker session is not active (it left or was declared lost): register again.
    WorkerGone { worker: u64, state: String },
    /// A worker was silent past its timeout.
    WorkerSilent {
        worker: u64,
        last_heartbeat_ms: u64,
        timeout_ms: u64,
        revoked: Vec<TaskAddress>,
    },
    /// The principal already holds as many open reservations as allowed.
    TooManyReservations { max: u32 },
    /// A worker's bus connection dropped without a graceful leave and the worker
    /// did not come back (heartbeat or `hello`) within the grace period.
    WorkerDisconnected {
        worker: u64,
        disconnected_at_ms: u64,
        grace_ms: u64,
        revoked: Vec<TaskAddress>,
    },
    /// An attempt ran past its task's `attempt_timeout`: it failed as timed out at
    /// its deadline, however often its lease was renewed.
    AttemptTimedOut {
        task: TaskAddress,
        attempt: u32,
        holder: String,
        started_at_ms: u64,
        deadline_ms: u64,
        timeout_ms: u64,
        /// The last heartbeat or checkpoint the holder sent (the claim if none).
        last_renewed_at_ms: u64,
    },
    /// The task was cancelled (with its open subtasks); its lease ended with it.
    Cancelled {
        task: TaskAddress,
        by: String,
        at_ms: u64,
        /// The task whose cancellation ended this one (itself, or an ancestor).
        cancelled: TaskAddress,
    },
}

impl Reason {
    /// The `code` under which this reason is serialized.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::SoftLimit { .. } => "soft_limit",
            Reason::HardLimit { .. } => "hard_limit",
            Reason::QueueFull { .. } => "queue_full",
            Reason::InsufficientResource { .. } => "insufficient_resource",
            Reason::Forbidden { .. } => "forbidden",
            Reason::NoStanding { .. } => "no_standing",
            Reason::NotFound { .. } => "not_found",
            Reason::Invalid { .. } => "invalid",
            Reason::ReservationExpired { .. } => "reservation_expired",
            Reason::LimitAllows { .. } => "limit_allows",
            Reason::TooManyReservations { .. } => "too_many_reservations",
            Reason::StaleLease { .. } => "stale_lease",
            Reason::NotClaimable { .. } => "not_claimable",
            Reason::WorkerGone { .. } => "worker_gone",
            Reason::WorkerSilent { .. } => "worker_silent",
            Reason::WorkerDisconnected { .. } => "worker_disconnected",
            Reason::AttemptTimedOut { .. } => "attempt_timed_out",
            Reason::Cancelled { .. } => "cancelled",
            Reason::ConsensusReached { .. } => "consensus_reached",
            Reason::ConsensusNotReached { .. } => "consensus_not_reached",
            Reason::Vetoed { .. } => "vetoed",
            Reason::BrakeFloor { .. } => "brake_floor",
            Reason::BrakeRate { .. } => "brake_rate",
            Reason::TooManyProposals { .. } => "too_many_proposals",
            Reason::QueueShare { .. } => "queue_share",
            Reason::Anomalous { .. } => "anomalous",
            Reason::Quarantined { .. } => "quarantined",
            Reason::BrakeExpired { .. } => "brake_expired",
            Reason::BrakeConfirmed { .. } => "brake_confirmed",
            Reason::Stable { .. } => "stable",
            Reason::StabilityDegraded { .. } => "stability_degraded",
        }
    }
}

/// What an allowed action did, for the response and the decision log's `detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    None,
    AlertRecorded {
        alert: Box<crate::alerts::Alert>,
    },
    GenesisApplied {
        limits: usize,
        admin: String,
    },
    PrincipalCreated {
        id: PrincipalId,
        address: String,
        kind: PrincipalKind,
        parent: Option<String>,
    },
    PrincipalQueued {
        ticket: u64,
        limit: String,
        position: usize,
    },
    PrincipalRemoved {
        id: PrincipalId,
        address: String,
        released_reservations: usize,
    },
    TokenCreated {
        principal: String,
        token: u64,
        expires_at_ms: Option<u64>,
    },
    TokenRevoked {
        principal: String,
        token: u64,
    },
    GrantRequested {
        grant: u64,
        requester: String,
    },
    /// An approval; `active` once the grant is in force (a quota above the bound
    /// needs a human's and an AI's).
    GrantApproved {
        grant: u64,
        active: bool,
        expires_at_ms: Option<u64>,
    },
    GrantDenied {
        grant: u64,
    },
    GrantExpired {
        grant: u64,
    },
    Reserved {
        reservation: ReservationId,
        resource: Resource,
        amount: u64,
        expires_at_ms: u64,
    },
    Committed {
        reservation: ReservationId,
        resource: Resource,
        reserved: u64,
        actual: u64,
        charged: u64,
        refunded: u64,
        shortfall: u64,
    },
    Released {
        reservation: ReservationId,
        resource: Resource,
        amount: u64,
    },
    Granted {
        to: String,
        resource: Resource,
        amount: u64,
    },
    Freed {
        resource: Resource,
        amount: u64,
    },
    ArtifactDeployed {
        id: PrincipalId,
        address: String,
        digest: String,
    },
    ArtifactRun {
        address: String,
        run: bool,
    },
    ProposalOpened {
        proposal: u64,
        change: ChangeKind,
        review_ends_at_ms: u64,
    },
    /// A limit's values changed (brake, passed proposal, or rollback).
    LimitChanged {
        proposal: u64,
        limit: String,
        soft: Option<u64>,
        hard: Option<u64>,
        previous_soft: Option<u64>,
        previous_hard: Option<u64>,
    },
    QuotaDefaultChanged {
        proposal: u64,
        kind: PrincipalKind,
        resource: Resource,
        amount: Option<u64>,
        previous: Option<u64>,
    },
    VoteRecorded {
        proposal: u64,
        choice: VoteChoice,
    },
    ProposalClosed {
        proposal: u64,
        state: ProposalState,
    },
    TaskChanged {
        address: TaskAddress,
        status: crate::tasks::TaskStatus,
    },
    /// A finished task tree left the live state for the archive.
    TasksRetired {
        root: TaskAddress,
        /// The tree's tasks (the root and every subtask).
        tasks: u64,
        finished_at_ms: u64,
        cause: crate::retention::RetireCause,
    },
    TaskClaimed {
        address: TaskAddress,
        token: u64,
        expires_at_ms: u64,
    },
    WorkerRegistered {
        worker: u64,
        deadline_ms: u64,
    },
    /// Waiting for `active_workers` to drop below soft; the session's id will be the ticket.
    WorkerQueued {
        ticket: u64,
        position: usize,
    },
    WorkerEnded {
        worker: u64,
        state: crate::workers::WorkerState,
        released: Vec<TaskAddress>,
    },
    /// A queued registration taken out of the queue: its connection is gone.
    WorkerWithdrawn {
        ticket: u64,
    },
    /// A supervisor action on a worker process.
    Supervised {
        pid: Option<u32>,
    },
    /// A claim found nothing the worker can do now.
    NothingToClaim,
    TaskDecomposed {
        address: TaskAddress,
        children: Vec<TaskAddress>,
    },
    Quarantined {
        principal: PrincipalId,
        address: String,
        released_reservations: usize,
        revoked_leases: Vec<TaskAddress>,
        ended_workers: Vec<u64>,
    },
    QuarantineReleased {
        principal: PrincipalId,
        address: String,
        quarantined_at_ms: u64,
    },
    TaskBudgetSpent {
        address: TaskAddress,
        charged: u64,
        shortfall: u64,
        remaining: u64,
    },
    StreamDefined {
        name: String,
        subjects: Vec<String>,
        replaced: bool,
    },
    StreamDeleted {
        name: String,
    },
    /// Edge usage charged: principals, operations and bytes, and io_ops that went
    /// beyond a quota (possible only when the edge and the kernel raced).
    EdgeCharged {
        principals: usize,
        io_ops: u64,
        data_bytes: u64,
        shortfall: u64,
    },
    /// A node's edge lease renewed (in a cluster): what it spent charged as in
    /// `edge_charged`, its previous lease released and a new one granted.
    EdgeLeased {
        node: String,
        principals: usize,
        io_ops: u64,
        data_bytes: u64,
        shortfall: u64,
        granted: Vec<crate::edge::EdgeGrant>,
        data_bytes_granted: u64,
        expires_at_ms: u64,
    },
    /// A node's lease ended without being renewed: what it held is available again.
    EdgeLeaseExpired {
        node: String,
        io_ops: u64,
        data_bytes: u64,
    },
    /// A task was cancelled with its open subtasks (`cancelled`, the task first);
    /// what was left of their budgets went back to whoever funded them.
    TaskCancelled {
        address: TaskAddress,
        cancelled: Vec<TaskAddress>,
        /// Leases that ended with it: `(task, holder)`.
        leases_ended: Vec<(TaskAddress, String)>,
        refunded_micro_usd: u64,
    },
    /// A task's base priority changed.
    TaskPriorityChanged {
        address: TaskAddress,
        priority: crate::command::Priority,
        previous: crate::command::Priority,
    },
    /// A node's key admitted to the cluster (`key` in lowercase hex).
    NodeAdmitted {
        name: String,
        key: String,
    },
    /// A node's key removed: its commands are refused from now on.
    NodeRemoved {
        name: String,
        key: String,
    },
    /// A call of an upstream MCP server's tool, recorded (its charges are the
    /// `ledger.commit` consequences that follow).
    ToolCalled {
        tool: String,
        arguments_sha256: String,
        outcome: crate::tool_calls::ToolOutcome,
        result_bytes: u64,
        duration_ms: u64,
        charged: Vec<(Resource, u64)>,
        grant: Option<u64>,
    },
    /// The retention rule for finished tasks changed (a passed proposal). (Last,
    /// as new variants go.)
    RetentionChanged {
        proposal: u64,
        rule: crate::retention::RetentionConfig,
        previous: crate::retention::RetentionConfig,
    },
}

/// One decision of the kernel. A command yields one primary event and possibly
/// consequences (expiries before it, admissions after it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub action: Action,
    /// What the decision is about: an address, a limit, or `reservation:N`.
    pub subject: String,
    pub decision: Decision,
    pub reason: Reason,
    /// Soft limits crossed by an allowed action.
    pub warnings: Vec<Reason>,
    pub effect: Effect,
}

impl Event {
    pub fn allowed(action: Action, subject: impl Into<String>, effect: Effect) -> Event {
        Event {
            action,
            subject: subject.into(),
            decision: Decision::Allowed,
            reason: Reason::Ok,
            warnings: Vec::new(),
            effect,
        }
    }

    pub fn denied(action: Action, subject: impl Into<String>, reason: Reason) -> Event {
        Event {
            action,
            subject: subject.into(),
            decision: Decision::Denied,
            reason,
            warnings: Vec::new(),
            effect: Effect::None,
        }
    }

    /// Adds soft-limit warnings, turning `allowed` into `warned`.
    pub fn with_warnings(mut self, warnings: Vec<Reason>) -> Event {
        if !warnings.is_empty() && self.decision == Decision::Allowed {
            self.decision = Decision::Warned;
        }
        self.warnings.extend(warnings);
        self
    }
}

/// The events one command produced, and which of them answers the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub events: Vec<Event>,
    pub primary_index: usize,
    /// Tasks that became claimable (`pending`) through this command, in order: what
    /// the node offers to workers on the bus.
    pub offered: Vec<TaskAddress>,
    /// Tasks that left the live state through this command (finished trees, whole,
    /// as they last stood): what the node writes to its task archive.
    pub retired: Vec<crate::tasks::Task>,
}

impl Applied {
    pub fn primary(&self) -> &Event {
        &self.events[self.primary_index]
    }
}
