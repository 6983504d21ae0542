//! System-wide limits: soft and hard values, usage, and the admission queue.

use serde::{Deserialize, Serialize};

use crate::command::{CreatePrincipal, Priority};
use crate::event::Reason;
use crate::principal::PrincipalId;

/// Whether a limit counts things held (accounts, workers) or a rate in a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Usage goes up and down as things are created and removed.
    Count,
    /// Usage accumulates within a fixed window and resets when the window turns.
    Rate,
}

/// Where a limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// By the kernel, exactly, as part of a command.
    Kernel,
    /// By the node in memory on a hot path (DESIGN.md, "two speeds of gating").
    Edge,
    /// Defined and governed now; enforced by the feature that will create what it counts.
    Pending,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Kernel => "kernel",
            Enforcement::Edge => "edge",
            Enforcement::Pending => "pending",
        }
    }
}

/// What crossing the soft value does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSoft {
    /// Allow, with a warning in the response and the decision log.
    #[default]
    Warn,
    /// Wait in a priority-ordered admission queue until usage drops below soft.
    Queue,
}

impl OnSoft {
    pub fn as_str(self) -> &'static str {
        match self {
            OnSoft::Warn => "warn",
            OnSoft::Queue => "queue",
        }
    }
}

/// A limit the kernel knows by name.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinLimit {
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: LimitKind,
    pub enforcement: Enforcement,
    pub default_window_ms: Option<u64>,
    /// Names the same limit had in the Hypernet swarm (`limits.py`, `swarm_config.json`).
    pub compat: &'static [&'static str],
    pub description: &'static str,
}

const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;

/// Every limit name the genesis configuration may set.
pub const BUILTIN_LIMITS: &[BuiltinLimit] = &[
    BuiltinLimit {
        name: "ai_accounts",
        unit: "accounts",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &["max_ai_accounts"],
        description: "AI principals with standing",
    },
    BuiltinLimit {
        name: "human_accounts",
        unit: "accounts",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &[],
        description: "human principals with standing",
    },
    BuiltinLimit {
        name: "active_workers",
        unit: "workers",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &[
            "max_concurrent_workers",
            "soft_max_sessions",
            "hard_max_sessions",
        ],
        description: "active worker sessions",
    },
    BuiltinLimit {
        name: "concurrent_api_requests",
        unit: "requests",
        kind: LimitKind::Count,
        enforcement: Enforcement::Edge,
        default_window_ms: None,
        compat: &[],
        description: "HTTP requests being served at once, node-wide",
    },
    BuiltinLimit {
        name: "data_creation_bytes",
        unit: "bytes",
        kind: LimitKind::Rate,
        enforcement: Enforcement::Kernel,
        default_window_ms: Some(MINUTE_MS),
        compat: &[],
        description: "bytes of data created per window (records and committed disk bytes)",
    },
    BuiltinLimit {
        name: "llm_spend_usd",
        unit: "micro_usd",
        kind: LimitKind::Rate,
        enforcement: Enforcement::Kernel,
        default_window_ms: Some(DAY_MS),
        compat: &["budget.daily_limit_usd"],
        description: "LLM spend of the whole system per window, reserved before each call",
    },
    BuiltinLimit {
        name: "task_queue_depth",
        unit: "tasks",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &["max_task_queue_depth"],
        description: "open tasks on the board (pending, blocked, claimed, in progress, failed)",
    },
    BuiltinLimit {
        name: "total_nodes",
        unit: "addresses",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &["max_total_nodes"],
        description: "addresses allocated in the whole system",
    },
    BuiltinLimit {
        name: "nodes_per_category",
        unit: "addresses",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &["nodes_per_category"],
        description: "addresses allocated under one top-level category (usage shows the fullest)",
    },
    BuiltinLimit {
        name: "links_per_node",
        unit: "links",
        kind: LimitKind::Count,
        enforcement: Enforcement::Pending,
        default_window_ms: None,
        compat: &["links_per_node"],
        description: "links from one address (enforced once links exist)",
    },
    BuiltinLimit {
        name: "pending_links_per_node",
        unit: "links",
        kind: LimitKind::Count,
        enforcement: Enforcement::Pending,
        default_window_ms: None,
        compat: &["pending_links_per_node"],
        description: "unaccepted links from one address (enforced once links exist)",
    },
    BuiltinLimit {
        name: "tasks_per_worker",
        unit: "tasks",
        kind: LimitKind::Count,
        enforcement: Enforcement::Kernel,
        default_window_ms: None,
        compat: &["tasks_per_worker"],
        description: "task leases one principal holds at once",
    },
    BuiltinLimit {
        name: "message_thread_depth",
        unit: "messages",
        kind: LimitKind::Count,
        enforcement: Enforcement::Pending,
        default_window_ms: None,
        compat: &["max_message_thread_depth"],
        description: "replies in one message thread (enforced once threads exist)",
    },
    BuiltinLimit {
        name: "unread_per_instance",
        unit: "messages",
        kind: LimitKind::Count,
        enforcement: Enforcement::Pending,
        default_window_ms: None,
        compat: &["max_unread_per_instance"],
        description: "unread messages per AI instance (enforced once inboxes exist)",
    },
    BuiltinLimit {
        name: "version_history",
        unit: "versions",
        kind: LimitKind::Count,
        enforcement: Enforcement::Pending,
        default_window_ms: None,
        compat: &["max_version_history"],
        description: "versions kept per document (enforced once versioned documents exist)",
    },
];

/// A built-in limit, by a type rather than by its name: the kernel looks limits up by
/// this; names are for people, files and the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    AiAccounts,
    HumanAccounts,
    ActiveWorkers,
    ConcurrentApiRequests,
    DataCreationBytes,
    LlmSpendUsd,
    TaskQueueDepth,
    TotalNodes,
    NodesPerCategory,
    LinksPerNode,
    PendingLinksPerNode,
    TasksPerWorker,
    MessageThreadDepth,
    UnreadPerInstance,
    VersionHistory,
}

impl LimitName {
    pub const ALL: [LimitName; 15] = [
        LimitName::AiAccounts,
        LimitName::HumanAccounts,
        LimitName::ActiveWorkers,
        LimitName::ConcurrentApiRequests,
        LimitName::DataCreationBytes,
        LimitName::LlmSpendUsd,
        LimitName::TaskQueueDepth,
        LimitName::TotalNodes,
        LimitName::NodesPerCategory,
        LimitName::LinksPerNode,
        LimitName::PendingLinksPerNode,
        LimitName::TasksPerWorker,
        LimitName::MessageThreadDepth,
        LimitName::UnreadPerInstance,
        LimitName::VersionHistory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::AiAccounts => "ai_accounts",
            LimitName::HumanAccounts => "human_accounts",
            LimitName::ActiveWorkers => "active_workers",
            LimitName::ConcurrentApiRequests => "concurrent_api_requests",
            LimitName::DataCreationBytes => "data_creation_bytes",
            LimitName::LlmSpendUsd => "llm_spend_usd",
            LimitName::TaskQueueDepth => "task_queue_depth",
            LimitName::TotalNodes => "total_nodes",
            LimitName::NodesPerCategory => "nodes_per_category",
            LimitName::LinksPerNode => "links_per_node",
            LimitName::PendingLinksPerNode => "pending_links_per_node",
            LimitName::TasksPerWorker => "tasks_per_worker",
            LimitName::MessageThreadDepth => "message_thread_depth",
            LimitName::UnreadPerInstance => "unread_per_instance",
            LimitName::VersionHistory => "version_history",
        }
    }

    /// The limit of a Colony name or a Hypernet name.
    pub fn parse(name: &str) -> Option<LimitName> {
        let builtin = builtin_limit(name)?;
        LimitName::ALL
            .into_iter()
            .find(|n| n.as_str() == builtin.name)
    }

    pub fn builtin(self) -> &'static BuiltinLimit {
        builtin_limit(self.as_str()).expect("every LimitName is built in")
    }
}

impl std::fmt::Display for LimitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Looks a limit up by its Colony name or one of its Hypernet names.
pub fn builtin_limit(name: &str) -> Option<&'static BuiltinLimit> {
    BUILTIN_LIMITS
        .iter()
        .find(|limit| limit.name == name)
        .or_else(|| {
            BUILTIN_LIMITS
                .iter()
                .find(|limit| limit.compat.contains(&name))
        })
}

/// A limit's configuration, as genesis (and later governance) sets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSpec {
    pub name: String,
    pub unit: String,
    pub description: String,
    /// `None` is unlimited.
    pub soft: Option<u64>,
    /// `None` is unlimited.
    pub hard: Option<u64>,
    pub on_soft: OnSoft,
    /// Length of the window of a rate limit.
    pub window_ms: Option<u64>,
    /// Bound of the admission queue when `on_soft` is `queue`.
    pub queue_max: u32,
    /// A brake never takes soft or hard below this value (0: no floor).
    pub brake_floor: u64,
}

/// One principal holds at most `queue_max / QUEUE_SHARE_DIVISOR` places (at least one)
/// of an admission queue.
pub const QUEUE_SHARE_DIVISOR: usize = 10;

/// A request waiting for a count limit to drop below its soft value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedAdmission {
    /// The sequence number of the command that queued it.
    pub ticket: u64,
    pub priority: Priority,
    pub queued_at_ms: u64,
    pub actor: PrincipalId,
    pub justification: String,
    pub request: AdmissionRequest,
}

/// What waits in an admission queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmissionRequest {
    CreatePrincipal(CreatePrincipal),
    RegisterWorker(crate::workers::NewWorker),
}

/// A limit with its live usage and its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub spec: LimitSpec,
    pub kind: LimitKind,
    pub enforcement: Enforcement,
    /// Held count, or amount used in the current window.
    pub usage: u64,
    /// Amount set aside by open reservations (only `llm_spend_usd` has any).
    pub reserved: u64,
    /// Start of the current window of a rate limit.
    pub window_start_ms: u64,
    /// Address of whoever set the current values.
    pub set_by: String,
    pub set_at_ms: u64,
    /// How they were set: the genesis source, or later a proposal.
    pub set_via: String,
    /// Waiting requests, best first: priority descending, then ticket ascending.
    pub queue: Vec<QueuedAdmission>,
}

/// A limit's state as shown to people: `ok`, `warn`, `queue` or `blocked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitState {
    Ok,
    Warn,
    Queue,
    Blocked,
}

impl LimitState {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitState::Ok => "ok",
            LimitState::Warn => "warn",
            LimitState::Queue => "queue",
            LimitState::Blocked => "blocked",
        }
    }
}

/// The outcome of gating an amount against one limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Allow,
    Warn(Reason),
    Queue(Reason),
    Deny(Reason),
}

impl Limit {
    pub fn new(spec: LimitSpec, set_by: String, set_at_ms: u64, set_via: String) -> Limit {
        let builtin = builtin_limit(&spec.name);
        Limit {
            kind: builtin.map_or(LimitKind::Count, |b| b.kind),
            enforcement: builtin.map_or(Enforcement::Pending, |b| b.enforcement),
            spec,
            usage: 0,
            reserved: 0,
            window_start_ms: 0,
            set_by,
            set_at_ms,
            set_via,
            queue: Vec::new(),
        }
    }

    /// Turns a rate limit's window if `now_ms` is past it. Windows are fixed and
    /// aligned to multiples of their length since the epoch.
    pub fn roll_window(&mut self, now_ms: u64) {
        if let (LimitKind::Rate, Some(window_ms)) = (self.kind, self.spec.window_ms) {
            let start = now_ms - now_ms % window_ms.max(1);
            if start > self.window_start_ms {
                self.window_start_ms = start;
                self.usage = 0;
            }
        }
    }

    /// Usage plus what open reservations hold.
    pub fn committed_and_reserved(&self) -> u64 {
        self.usage.saturating_add(self.reserved)
    }

    /// Decides whether `amount` more may be taken now. Soft is crossed when the new
    /// usage goes above it; hard is crossed likewise, so hard 50 admits exactly 50.
    pub fn gate(&self, amount: u64) -> Gate {
        let current = self.committed_and_reserved();
        let after = current.saturating_add(amount);
        if let Some(hard) = self.spec.hard {
            if after > hard {
                return Gate::Deny(Reason::HardLimit {
                    limit: self.spec.name.clone(),
                    usage: current,
                    requested: amount,
                    hard,
                    set_by: self.set_by.clone(),
                    set_at_ms: self.set_at_ms,
                    set_via: self.set_via.clone(),
                });
            }
        }
        if let Some(soft) = self.spec.soft {
            if after > soft {
                let reason = Reason::SoftLimit {
                    limit: self.spec.name.clone(),
                    usage: current,
                    requested: amount,
                    soft,
                    hard: self.spec.hard,
                };
                return match (self.spec.on_soft, self.kind) {
                    (OnSoft::Queue, LimitKind::Count) => Gate::Queue(reason),
                    _ => Gate::Warn(reason),
                };
            }
        }
        Gate::Allow
    }

    pub fn state(&self) -> LimitState {
        let usage = self.committed_and_reserved();
        if self.spec.hard.is_some_and(|hard| usage >= hard) {
            LimitState::Blocked
        } else if !self.queue.is_empty() || self.spec.soft.is_some_and(|soft| usage >= soft) {
            match (self.spec.on_soft, self.kind) {
                (OnSoft::Queue, LimitKind::Count) => LimitState::Queue,
                _ => LimitState::Warn,
            }
        } else {
            LimitState::Ok
        }
    }

    /// Places in the admission queue one principal may hold: a tenth of the queue
    /// (at least one), so that no principal can fill it alone.
    pub fn queue_share(&self) -> usize {
        (self.spec.queue_max as usize / QUEUE_SHARE_DIVISOR).max(1)
    }

    /// Whether the queue has room for one more request of `actor`, or why not. An
    /// admin's requests (administration, in the governance lane) are not held to
    /// the fair share.
    pub fn queue_room(&self, actor: PrincipalId, actor_is_admin: bool) -> Result<(), Reason> {
        if self.queue.len() >= self.spec.queue_max as usize {
            return Err(Reason::QueueFull {
                limit: self.spec.name.clone(),
                queue_max: self.spec.queue_max,
            });
        }
        let held = self.queue.iter().filter(|q| q.actor == actor).count();
        let share = self.queue_share();
        if held >= share && !actor_is_admin {
            return Err(Reason::QueueShare {
                limit: self.spec.name.clone(),
                held: held as u32,
                share: share as u32,
            });
        }
        Ok(())
    }

    /// Inserts a waiting request in priority order (stable for equal priorities).
    pub fn enqueue(&mut self, admission: QueuedAdmission) -> usize {
        let position = self
            .queue
            .iter()
            .position(|queued| queued.priority < admission.priority)
            .unwrap_or(self.queue.len());
        self.queue.insert(position, admission);
        position
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod limits_tests;
