//! Commands: the only way anything changes in Colony.

use serde::{Deserialize, Serialize};

use crate::genesis::Genesis;
use crate::governance::{ProposalTarget, VoteChoice};
use crate::ledger::{ReservationId, Resource};
use crate::principal::{PrincipalId, PrincipalKind, Role, TokenHash};
use crate::task_address::TaskAddress;
use crate::tasks::{ChildDeathPolicy, NewTask};

/// One action, as it stands in the command log.
///
/// `seq` and `at_ms` are stamped by the log when the command is sequenced, never read
/// from a clock inside the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Position in the command log, from 1, without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, assigned when logged; never decreases.
    pub at_ms: u64,
    /// Who asks. Bound to the caller's token by the node, never taken from the body.
    pub actor: PrincipalId,
    /// Why the actor asks; recorded with the decision.
    pub justification: String,
    pub body: CommandBody,
    /// In a cluster, the node that proposed it, as its signature was verified
    /// (see [`crate::cluster`]); `None` on an embedded node.
    pub origin: Option<crate::cluster::Origin>,
    /// In a cluster, where the command stood in the cluster's log; `None` on an
    /// embedded node.
    pub place: Option<crate::cluster::LogPlace>,
}

impl Command {
    pub fn new(
        seq: u64,
        at_ms: u64,
        actor: PrincipalId,
        justification: impl Into<String>,
        body: CommandBody,
    ) -> Command {
        Command {
            seq,
            at_ms,
            actor,
            justification: justification.into(),
            body,
            origin: None,
            place: None,
        }
    }
}

/// What a command asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// The first command of every log: installs limits, quota defaults, the system
    /// principal (`0.1`) and the first admin (`1.1`).
    Genesis(Box<Genesis>),
    CreatePrincipal(CreatePrincipal),
    /// Takes standing away: the token stops working, reservations and holds are
    /// released, and account limits count one fewer.
    RemovePrincipal {
        principal: PrincipalId,
    },
    /// Makes another token for a principal (its own, or any as an admin).
    CreateToken(Box<crate::tokens::NewToken>),
    /// Asks for more (a scope, a role, a quota) for `ttl_ms`.
    RequestGrant {
        what: crate::grants::GrantWhat,
        ttl_ms: u64,
    },
    /// Approves (or denies) a pending grant.
    DecideGrant {
        grant: u64,
        approve: bool,
    },
    /// Revokes one of a principal's tokens at once.
    RevokeToken {
        principal: PrincipalId,
        token: u64,
    },
    /// Sets aside `amount` of a resource before an action.
    Reserve {
        resource: Resource,
        amount: u64,
        ttl_ms: Option<u64>,
    },
    /// Charges the actual amount of a reservation and refunds the rest.
    Commit {
        reservation: ReservationId,
        actual: u64,
    },
    /// Settles an LLM call in one decision: commits `actual` to the reservation
    /// that covered it and, for a call made for a task whose lease the caller still
    /// holds (`task`: address and fencing token), charges the task's budget too; the
    /// system's `llm_spend_usd` counts the spend once.
    Settle {
        reservation: ReservationId,
        actual: u64,
        task: Option<(TaskAddress, u64)>,
    },
    /// Gives a reservation (or a gauge hold) back in full.
    Release {
        reservation: ReservationId,
    },
    /// Sets the quota of a child principal (one whose parent is the actor).
    Grant {
        to: PrincipalId,
        resource: Resource,
        amount: u64,
    },
    /// Returns allocated stock (disk bytes) when data is deleted.
    Free {
        resource: Resource,
        amount: u64,
    },
    /// Proposes a change of a limit or a quota default. One that only lowers values is
    /// a brake and applies at once; `brake_only` refuses anything else.
    Propose {
        target: ProposalTarget,
        brake_only: bool,
    },
    /// A vote on a proposal in review.
    Vote {
        proposal: u64,
        choice: VoteChoice,
    },
    /// Posts a root task on the board (`0.7.1.NNNNN`).
    PostTask(Box<NewTask>),
    /// Hands the actor the best claimable task its capabilities cover, under a lease.
    /// With a `worker` session, the lease belongs to it (and its capabilities are
    /// used when none are given).
    ClaimTask {
        capabilities: Vec<String>,
        lease_ms: Option<u64>,
        worker: Option<u64>,
    },
    /// Registers a worker session; holds one unit of `active_workers`.
    RegisterWorker(Box<crate::workers::NewWorker>),
    WorkerHeartbeat {
        worker: u64,
    },
    /// A graceful leave: the session's tasks go back on the board.
    LeaveWorker {
        worker: u64,
    },
    /// Claims one named task (the Hypernet swarm's `POST /tasks/{address}/claim`):
    /// granted only if it is claimable now; no capability check.
    ClaimSpecificTask {
        address: TaskAddress,
        lease_ms: Option<u64>,
    },
    /// Something the lease holder does with its task, fenced by the lease's token.
    UpdateTask {
        address: TaskAddress,
        token: u64,
        update: TaskUpdate,
    },
    /// Lifts a principal's quarantine (a human member or admin).
    ReleaseQuarantine {
        principal: PrincipalId,
    },
    /// Takes a task out of the dead-letter queue (admins).
    RequeueTask {
        address: TaskAddress,
    },
    /// The node's own figures since its last report, for stability windows.
    ReportHealth(NodeHealth),
    /// The node's supervisor records what it did with its worker processes, and why
    /// (the justification). System only.
    Supervise {
        profile: String,
        action: SupervisorAction,
        pid: Option<u32>,
    },
    /// Lets time pass: expires reservations whose time is up. Logged by the node
    /// only when [`crate::State::next_due_ms`] says something is due.
    Tick,
    /// Defines (or redefines) a durable bus stream. Admins only.
    DefineStream(Box<crate::streams::StreamSpec>),
    /// Deletes a stream and, in the node, its stored messages. Admins only.
    DeleteStream {
        name: String,
    },
    /// The node reports that a worker's bus connection dropped at
    /// `disconnected_at_ms` without a graceful leave, `grace_ms` ago. The worker is
    /// declared lost unless it heartbeat (or said `hello` again) since. System only.
    WorkerDisconnected {
        worker: u64,
        disconnected_at_ms: u64,
        grace_ms: u64,
    },
    /// The node reports what it let through at the edge (bus publishes): io_ops per
    /// principal and bytes toward `data_creation_bytes`. System only.
    ChargeEdge {
        usage: Vec<crate::streams::EdgeUsage>,
    },
    /// Deploys a WebAssembly artifact: a principal of kind `artifact` under the
    /// actor, its module's bytes charged to the actor's `disk_bytes`.
    DeployArtifact(Box<crate::artifacts::NewArtifact>),
    /// Starts or stops an artifact (its deployer, an ancestor of it, or an admin).
    SetArtifactRun {
        artifact: PrincipalId,
        run: bool,
    },
    /// The node's alert watcher reports a threshold crossed (up, or back down past
    /// the hysteresis). System only.
    Alert(Box<crate::alerts::AlertReport>),
    /// A node of a cluster reports what it spent at the edge and renews its lease
    /// of allowances (see [`crate::edge`]). System only.
    LeaseEdge(Box<crate::edge::EdgeLeaseRequest>),
    /// Cancels an open task and its open subtasks (the poster of the task or of an
    /// ancestor task, a principal ancestor of such a poster, or an admin): leases
    /// end, budgets go back to whoever funded them.
    CancelTask {
        address: TaskAddress,
    },
    /// Changes an open task's base priority (who may cancel it may).
    SetTaskPriority {
        address: TaskAddress,
        priority: Priority,
    },
    /// Records a call of an upstream MCP server's tool once it ended, settling the
    /// reservations its price was reserved with and using the approval it ran
    /// under (see [`crate::tool_calls`]).
    RecordToolCall(Box<crate::tool_calls::ToolCallRecord>),
    /// Admits a node's key to a cluster: its commands are applied from then on.
    /// Admins only.
    AdmitNode {
        name: String,
        key: crate::cluster::NodeKey,
    },
    /// Removes a node's key: its commands are refused from then on. Admins only;
    /// never the last key.
    RemoveNode {
        key: crate::cluster::NodeKey,
    },
    /// The node heard these worker sessions (soft liveness: heartbeats are answered
    /// in memory, not logged): each is kept until its `at_ms` plus
    /// [`crate::workers::SOFT_SESSION_LEASE_MS`]. One command renews many sessions,
    /// each about every half hour. System only.
    RenewWorkers {
        heard: Vec<crate::workers::WorkerHeard>,
    },
    /// The node declares a session lost: it heard nothing from it since
    /// `last_heard_ms`, longer ago than the workers' timeout. Refused when the log
    /// holds a later heartbeat. System only.
    DeclareWorkerLost {
        worker: u64,
        last_heard_ms: u64,
    },
    /// The node heard the holders of these task leases heartbeat (soft lease
    /// renewals): each in-progress lease whose token still holds is extended as a
    /// heartbeat at its `at_ms` would have extended it. One command renews many.
    /// System only.
    RenewLeases {
        heard: Vec<crate::tasks::LeaseHeard>,
    },
}

/// Who may make a command, besides standing and a role that may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Required {
    /// Any principal that may act (the command checks the rest itself).
    Anyone,
    /// An admin; the text says why not, to anyone else.
    Admin(&'static str),
    /// The system (the node itself); the text says why not, to anyone else.
    System(&'static str),
}

impl CommandBody {
    /// Who may make this command: the one table the kernel checks roles by.
    pub fn required(&self) -> Required {
        match self {
            // Members may spawn children under themselves and remove them: checked
            // where they are decided (`state/principals.rs`).
            CommandBody::RequeueTask { .. } => Required::Admin("only admins requeue dead tasks"),
            CommandBody::DefineStream(_) => Required::Admin("only admins define streams"),
            CommandBody::AdmitNode { .. } | CommandBody::RemoveNode { .. } => {
                Required::Admin("only admins admit and remove a cluster's nodes")
            }
            CommandBody::DeleteStream { .. } => Required::Admin("only admins delete streams"),
            CommandBody::Genesis(_) => Required::System("only the system applies genesis"),
            CommandBody::Supervise { .. } => {
                Required::System("only the node's supervisor records this")
            }
            CommandBody::ReportHealth(_) => Required::System("only the node reports its health"),
            CommandBody::Tick => Required::System("only the system logs ticks"),
            CommandBody::WorkerDisconnected { .. } => {
                Required::System("only the node reports dropped connections")
            }
            CommandBody::RenewWorkers { .. }
            | CommandBody::DeclareWorkerLost { .. }
            | CommandBody::RenewLeases { .. } => {
                Required::System("only the node reports what it heard from workers")
            }
            CommandBody::ChargeEdge { .. } | CommandBody::LeaseEdge(_) => {
                Required::System("only the node reports edge usage")
            }
            CommandBody::Alert(_) => {
                Required::System("only the node's alert watcher reports crossings")
            }
            _ => Required::Anyone,
        }
    }

    /// Whether deciding this command a second time changes nothing more (the second
    /// is refused, or finds its work done): what may be sent again after an answer
    /// that left it uncertain whether the first was decided. A reservation is
    /// committed, settled or released once; a worker is disconnected once; an
    /// artifact's run is set to a value.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            CommandBody::Commit { .. }
                | CommandBody::Settle { .. }
                | CommandBody::Release { .. }
                | CommandBody::WorkerDisconnected { .. }
                | CommandBody::RenewWorkers { .. }
                | CommandBody::RenewLeases { .. }
                | CommandBody::DeclareWorkerLost { .. }
                | CommandBody::SetArtifactRun { .. }
        ) || matches!(self, CommandBody::RecordToolCall(record)
            // A second record settles nothing twice: its reservations are settled
            // (or its approval used) and it is refused.
            if !record.charges.is_empty() || record.grant.is_some())
    }

    /// Whether the command travels in the governance lane, which no quota or limit
    /// closes: proposals (brakes included) and votes, and the administration an
    /// admin does (principals, dead tasks, streams).
    pub fn in_governance_lane(&self, actor_is_admin: bool) -> bool {
        match self {
            CommandBody::Propose { .. }
            | CommandBody::Vote { .. }
            | CommandBody::RequestGrant { .. }
            | CommandBody::DecideGrant { .. }
            | CommandBody::ReleaseQuarantine { .. } => true,
            CommandBody::CreatePrincipal(_)
            | CommandBody::RemovePrincipal { .. }
            | CommandBody::RequeueTask { .. }
            | CommandBody::DefineStream(_)
            | CommandBody::DeleteStream { .. }
            | CommandBody::AdmitNode { .. }
            | CommandBody::RemoveNode { .. } => actor_is_admin,
            _ => false,
        }
    }

    /// Bytes the command stores besides its justification and what it creates
    /// (counted toward `data_creation_bytes` where the command enters).
    pub fn stored_bytes(&self) -> u64 {
        match self {
            CommandBody::UpdateTask { update, .. } => update.stored_bytes(),
            CommandBody::CreateToken(new) => {
                (new.name.len() + new.scopes.iter().map(String::len).sum::<usize>()) as u64
            }
            _ => 0,
        }
    }

    /// A short machine name, as used in the decision log's `action` field.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Genesis(_) => "genesis",
            CommandBody::CreatePrincipal(_) => "principal.create",
            CommandBody::RemovePrincipal { .. } => "principal.remove",
            CommandBody::CreateToken(_) => "token.create",
            CommandBody::RequestGrant { .. } => "grant.request",
            CommandBody::DecideGrant { approve: true, .. } => "grant.approve",
            CommandBody::DecideGrant { approve: false, .. } => "grant.deny",
            CommandBody::RevokeToken { .. } => "token.revoke",
            CommandBody::Reserve { .. } => "ledger.reserve",
            CommandBody::Commit { .. } => "ledger.commit",
            CommandBody::Settle { .. } => "llm.settle",
            CommandBody::Release { .. } => "ledger.release",
            CommandBody::Grant { .. } => "ledger.grant",
            CommandBody::Free { .. } => "ledger.free",
            CommandBody::PostTask(_) => "task.post",
            CommandBody::ClaimTask { .. } | CommandBody::ClaimSpecificTask { .. } => "task.claim",
            CommandBody::UpdateTask { update, .. } => update.name(),
            CommandBody::RequeueTask { .. } => "task.requeue",
            CommandBody::CancelTask { .. } => "task.cancel",
            CommandBody::SetTaskPriority { .. } => "task.priority",
            CommandBody::RecordToolCall(_) => "mcp.tool_call",
            CommandBody::AdmitNode { .. } => "cluster.admit",
            CommandBody::RemoveNode { .. } => "cluster.remove",
            CommandBody::ReleaseQuarantine { .. } => "principal.release",
            CommandBody::RegisterWorker(_) => "worker.register",
            CommandBody::WorkerHeartbeat { .. } => "worker.heartbeat",
            CommandBody::LeaveWorker { .. } => "worker.leave",
            CommandBody::Propose { .. } => "governance.propose",
            CommandBody::Vote { .. } => "governance.vote",
            CommandBody::ReportHealth(_) => "node.health",
            CommandBody::Supervise { action, .. } => action.name(),
            CommandBody::Tick => "time.tick",
            CommandBody::DefineStream(_) => "stream.define",
            CommandBody::DeleteStream { .. } => "stream.delete",
            CommandBody::ChargeEdge { .. } => "edge.charge",
            CommandBody::LeaseEdge(_) => "edge.lease",
            CommandBody::DeployArtifact(_) => "artifact.deploy",
            CommandBody::SetArtifactRun { run: true, .. } => "artifact.start",
            CommandBody::SetArtifactRun { run: false, .. } => "artifact.stop",
            CommandBody::WorkerDisconnected { .. } => "worker.disconnected",
            CommandBody::RenewWorkers { .. } => "worker.renew",
            CommandBody::DeclareWorkerLost { .. } => "worker.lost",
            CommandBody::RenewLeases { .. } => "task.renew_leases",
            CommandBody::Alert(report) if report.raised => "alert.raise",
            CommandBody::Alert(_) => "alert.clear",
        }
    }
}

/// What a lease holder does with its task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskUpdate {
    /// Renews the lease (and marks the task in progress).
    Heartbeat,
    /// Stores opaque JSON to resume from, and renews the lease.
    Checkpoint(String),
    Complete(String),
    /// A failed attempt, with its reason.
    Fail(String),
    /// Gives the task back without counting a failure.
    Release,
    /// Splits the task into subtasks; it completes when they all have.
    Decompose {
        subtasks: Vec<NewTask>,
        on_child_death: ChildDeathPolicy,
    },
    /// Charges micro-dollars to the task's budget.
    Spend(u64),
}

impl TaskUpdate {
    /// Bytes the update makes Colony keep: a checkpoint, a result, a reason.
    pub fn stored_bytes(&self) -> u64 {
        match self {
            TaskUpdate::Checkpoint(text) | TaskUpdate::Complete(text) | TaskUpdate::Fail(text) => {
                text.len() as u64
            }
            _ => 0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TaskUpdate::Heartbeat => "task.heartbeat",
            TaskUpdate::Checkpoint(_) => "task.checkpoint",
            TaskUpdate::Complete(_) => "task.complete",
            TaskUpdate::Fail(_) => "task.fail",
            TaskUpdate::Release => "task.release",
            TaskUpdate::Decompose { .. } => "task.decompose",
            TaskUpdate::Spend(_) => "task.spend",
        }
    }
}

/// What the supervisor did with a worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorAction {
    /// Started a worker (to reach the desired count).
    Spawn,
    /// Started a worker in place of one that crashed.
    Replace,
    /// Saw a worker process exit on its own.
    Crash,
    /// Stopped an idle worker (scaling down).
    Despawn,
    /// Stopped restarting a profile whose workers keep crashing.
    CrashLoop,
}

impl SupervisorAction {
    pub fn name(self) -> &'static str {
        match self {
            SupervisorAction::Spawn => "supervisor.spawn",
            SupervisorAction::Replace => "supervisor.replace",
            SupervisorAction::Crash => "supervisor.crash",
            SupervisorAction::Despawn => "supervisor.despawn",
            SupervisorAction::CrashLoop => "supervisor.crash_loop",
        }
    }
}

/// What the node observed since its last report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// Authentication failures.
    pub anomalies: u64,
}

/// Priority of a request that may wait in a soft-limit admission queue.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    /// The priority named `name` (`low`, `normal`, `high`, `critical`).
    pub fn parse(name: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// The old swarm's numeric priorities (HYPERNET.md).
    pub fn numeric(self) -> u32 {
        match self {
            Priority::Low => 100,
            Priority::Normal => 200,
            Priority::High => 300,
            Priority::Critical => 400,
        }
    }
}

/// Asks for a new principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePrincipal {
    pub name: String,
    pub kind: PrincipalKind,
    /// Empty means `[member]`.
    pub roles: Vec<Role>,
    pub token_hash: TokenHash,
    pub parent: Option<PrincipalId>,
    /// A specific address under the kind's prefix; `None` takes the next number.
    pub address: Option<String>,
    /// Order in the admission queue when the account limit's `on_soft` is `queue`.
    pub priority: Priority,
    /// The scopes of its first token; empty means `*` (everything its roles allow).
    /// A principal spawning a child passes those of the token it used.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl CreatePrincipal {
    pub fn new(name: impl Into<String>, kind: PrincipalKind, token_hash: TokenHash) -> Self {
        CreatePrincipal {
            name: name.into(),
            kind,
            roles: Vec::new(),
            token_hash,
            parent: None,
            address: None,
            priority: Priority::Normal,
            scopes: Vec::new(),
        }
    }

    /// Bytes of data this creation adds (counted toward `data_creation_bytes`).
    pub fn data_bytes(&self) -> u64 {
        (self.name.len()
            + self.address.as_ref().map_or(0, String::len)
            + self.scopes.iter().map(String::len).sum::<usize>()
            + 64) as u64
    }
}
