//! `GET /v1/reports/summary`: what happened in a window, for people, from the
//! decision log: spend, denials, tasks, workers, governance, anomalies. Every figure
//! names decision records behind it (`/v1/audit?after=SEQ-1&limit=1` shows one).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `?since=24h&format=json|md`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// How far back: text like `"24h"` (default) or `"30m"`, at most 30 days.
    pub since: Option<String>,
    /// `json` (default) or `md` (Markdown).
    pub format: Option<String>,
}

/// A count, and some of the decision records behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Figure {
    pub count: u64,
    /// Sequence numbers of up to five of its decision records (the first ones).
    pub records: Vec<u64>,
}

/// Money spent by one principal or on one model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Spend {
    /// A principal's address or a model's name.
    pub who: String,
    pub calls: u64,
    pub micro_usd: u64,
    pub records: Vec<u64>,
}

/// Calls of one upstream MCP tool by one principal (`mcp.tool_call`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCalls {
    /// `{server}__{tool}`.
    pub tool: String,
    /// The caller's address.
    pub who: String,
    pub calls: u64,
    /// Calls whose outcome was not `ok`.
    pub failed: u64,
    pub records: Vec<u64>,
}

/// Denials for one reason (and limit, when a limit denied).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DenialCount {
    pub code: String,
    pub limit: Option<String>,
    pub count: u64,
    pub records: Vec<u64>,
}

/// `GET /v1/reports/summary`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub since: String,
    pub until: String,
    /// Decision records read.
    pub records: u64,
    /// Whether the window held more records than one report reads (the newest are read).
    pub truncated: bool,
    pub llm_calls: u64,
    pub llm_micro_usd: u64,
    pub spend_by_principal: Vec<Spend>,
    pub spend_by_model: Vec<Spend>,
    pub denials: u64,
    /// Commonest first.
    pub denials_by_reason: Vec<DenialCount>,
    pub tasks_posted: Figure,
    pub tasks_completed: Figure,
    pub tasks_failed: Figure,
    pub tasks_dead: Figure,
    /// Attempts that ran past their `attempt_timeout`.
    #[serde(default)]
    pub attempts_timed_out: Figure,
    /// Cancellations (each of a task with its open subtasks).
    #[serde(default)]
    pub tasks_cancelled: Figure,
    pub workers_registered: Figure,
    pub workers_lost: Figure,
    pub workers_replaced: Figure,
    pub proposals_opened: Figure,
    pub proposals_decided: Figure,
    pub brakes_expired: Figure,
    pub quarantines: Figure,
    pub principals_created: Figure,
    /// Proximity alerts raised (`alert.raise`).
    #[serde(default)]
    pub alerts_raised: Figure,
    /// Decisions on commands made through MCP tools (justification `[mcp] ...`).
    #[serde(default)]
    pub mcp_calls: Figure,
    /// Calls of upstream MCP tools by tool and principal, most first.
    #[serde(default)]
    pub tool_calls: Vec<ToolCalls>,
}
