//! `GET /v1/dashboard`: what the dashboard's overview shows, in one request.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::limits::LimitView;

/// `GET /v1/dashboard?since_ms=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// Only history points taken after this time (Unix milliseconds); all of the
    /// kept history when absent.
    pub since_ms: Option<u64>,
}

/// The colony at a glance: limits with their recent history, tasks, workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    /// The node's time of this answer.
    pub at: String,
    pub at_ms: u64,
    /// The last command applied.
    pub seq: u64,
    pub limits: Vec<LimitView>,
    /// How often the node samples the limits' usage.
    pub sample_interval_ms: u64,
    /// Each limit's usage over the last half hour (at most), oldest first.
    pub history: Vec<LimitHistory>,
    pub tasks: TaskCounts,
    /// Tasks claimable now (pending).
    pub queue_depth: u64,
    pub workers: WorkerCounts,
    /// Active principals, by kind.
    pub principals: PrincipalCounts,
    /// Proposals waiting for the end of their review.
    pub proposals_in_review: u64,
    pub artifacts: u64,
    /// What MCP clients are doing on this node now.
    pub mcp: McpActivity,
    /// The node's cluster, when it is in one (absent on an embedded node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

/// A cluster as one of its nodes sees it now (`GET /v1/cluster` has the details).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterHealth {
    /// This node's name.
    pub node: String,
    /// False while this node has no connection to NATS (its reads are stale).
    pub connected: bool,
    /// Commands of the cluster's log this node has yet to apply.
    pub lag: u64,
    /// Nodes heard from in the last 3 s, this one included.
    pub live_nodes: u64,
    /// Checkpoints of other nodes that disagreed with this node's at the same
    /// record since it started: must stay 0.
    pub divergences: u64,
    /// The newest divergence's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
}

/// MCP on this node now (`/mcp` keeps no sessions: what it holds open are calls and
/// subscriptions).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct McpActivity {
    /// `tools/call` requests being answered.
    pub tool_calls_in_flight: u64,
    /// Upstream tool calls waiting for a person's approval.
    pub waiting_for_approval: u64,
    /// Open `subscriptions/listen` streams.
    pub subscriptions: u64,
    /// Who holds them, most first.
    pub subscribers: Vec<McpSubscriber>,
    /// The upstream servers of `mcp.toml`.
    pub servers: Vec<McpServerView>,
}

/// One principal's open subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct McpSubscriber {
    pub principal: String,
    pub subscriptions: u64,
}

/// One upstream MCP server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct McpServerView {
    pub name: String,
    pub up: bool,
    /// Tools it lists (none while it is down).
    pub tools: u64,
    pub calls_in_flight: u64,
    /// Why it is down, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_because: Option<String>,
}

/// One limit's sampled usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitHistory {
    pub name: String,
    /// `[at_ms, usage]` pairs, oldest first.
    pub points: Vec<[u64; 2]>,
}

/// Tasks by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskCounts {
    pub pending: u64,
    pub blocked: u64,
    pub claimed: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Finished tasks that left the live state for the task archive (the counts
    /// above are of live tasks).
    #[serde(default)]
    pub archived: u64,
}

/// Worker sessions by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerCounts {
    pub active: u64,
    pub lost: u64,
    pub left: u64,
}

/// Active principals by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalCounts {
    pub human: u64,
    pub ai: u64,
    pub artifact: u64,
    /// Nodes and the system itself.
    pub system: u64,
    /// Of the above, those quarantined now.
    pub quarantined: u64,
}
