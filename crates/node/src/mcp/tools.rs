//! The colony's MCP tools. Each is a route of the route table (`api/routes.rs`),
//! called with the caller's own token, so that it is authorized by the same scopes,
//! costs the same `io_ops`, meets the same limits, quarantine and shedding, and is
//! decided by the kernel like the HTTP call it is. A tool says only what HTTP does
//! not: its name, what a model should know to use it, its hints, and which path
//! segments it fixes. Its input and output schemas come from the OpenAPI document.

/// One tool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ToolSpec {
    /// snake_case, as MCP clients show it.
    pub name: &'static str,
    pub title: &'static str,
    /// What a model reads to decide to call it.
    pub description: &'static str,
    pub method: &'static str,
    /// The path, with `{parameter}` segments the arguments fill and fixed segments
    /// where the route has a parameter the tool decides (`/v1/tasks/{address}/complete`).
    pub path: &'static str,
    /// Changes nothing (`readOnlyHint`); otherwise a `justification` is required.
    pub read_only: bool,
    /// May end or undo work (`destructiveHint`).
    pub destructive: bool,
}

const fn read(
    name: &'static str,
    title: &'static str,
    path: &'static str,
    description: &'static str,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        method: "GET",
        path,
        read_only: true,
        destructive: false,
    }
}

const fn write(
    name: &'static str,
    title: &'static str,
    path: &'static str,
    description: &'static str,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        method: "POST",
        path,
        read_only: false,
        destructive: false,
    }
}

/// Every tool of the colony, in the order a client lists them.
pub(crate) const TOOLS: &[ToolSpec] = &[
    read("task_list", "List tasks", "/v1/tasks",
        "List tasks on the colony's board, in address order: filter by `status` (pending, blocked, claimed, in_progress, completed, failed, dead, cancelled) or `capability`; page with `after` and `limit`."),
    read("task_show", "Show a task", "/v1/tasks/{address}",
        "One task with its subtasks, attempts, lease, budget and history (who changed what, and why)."),
    write("task_post", "Post a task", "/v1/tasks",
        "Post a task on the board for any worker whose capabilities match: a title, optional description, priority (low, normal, high, critical), capabilities, dependencies, a budget in dollars that travels with it, and an attempt_timeout. Gated by task_queue_depth."),
    write("task_claim", "Claim a task", "/v1/tasks/claim",
        "Claim the best claimable task your capabilities cover. Returns the task and its lease: pass `lease.token` as `lease_token` to task_heartbeat, task_checkpoint, task_complete, task_fail and task_decompose. Heartbeat before the lease expires; the attempt also ends at `lease.attempt_deadline_ms`. Answers that nothing is claimable when none fits."),
    write("task_heartbeat", "Renew a lease", "/v1/tasks/{address}/heartbeat",
        "Renew the lease on a task you hold (`lease_token` from task_claim), and mark it in progress."),
    write("task_checkpoint", "Checkpoint a task", "/v1/tasks/{address}/checkpoint",
        "Save progress on a task you hold (`checkpoint`: any JSON, at most 64 KiB) and renew its lease; whoever takes the task after you resumes from it."),
    write("task_complete", "Complete a task", "/v1/tasks/{address}/complete",
        "Complete a task you hold, with its `result` (any JSON)."),
    write("task_fail", "Fail a task", "/v1/tasks/{address}/fail",
        "Fail the attempt on a task you hold, with its `reason`: it is retried with backoff, or goes to the dead-letter queue after its last attempt."),
    write("task_decompose", "Split a task", "/v1/tasks/{address}/decompose",
        "Split a task you hold into subtasks (each like task_post's fields; `depends_on` may name siblings \"1\", \"2\"...): it completes when they all have."),
    ToolSpec {
        destructive: true,
        ..write("task_cancel", "Cancel a task", "/v1/tasks/{address}/cancel",
            "Cancel a task you posted (or one under it) with its open subtasks: their holders are stopped and the unspent budget comes back.")
    },
    write("bus_publish", "Publish on the bus", "/v1/bus/publish",
        "Publish one message (`data`: any JSON) on a bus subject such as `work.review` for the agents subscribed to it; a durable stream capturing the subject stores it. Metered in io_ops and data_creation_bytes."),
    read("inbox_read", "Read my inbox", "/v1/inbox",
        "Messages other agents sent you (published on agents.<your address>.inbox), oldest first, from `from_seq` on (1 by default): pass the answer's `next_seq` next time to read only new ones. Answer a message with bus_publish on the sender's inbox, agents.<from>.inbox (or its `reply_to` when it names an inbox)."),
    read("stream_read", "Read a durable stream", "/v1/streams/{name}/messages",
        "Read a durable bus stream's messages from a sequence number (`from_seq`, 1 by default), oldest first, optionally only those whose subject matches `subject`; `next_seq` says where to read on."),
    read("ledger_me", "My balances", "/v1/ledger/me",
        "Your quotas and what is used and reserved of each resource (llm_budget_usd in micro-dollars, compute_ms, io_ops, disk_bytes, memory_bytes)."),
    write("ledger_reserve", "Reserve resources", "/v1/ledger/reserve",
        "Reserve an amount of a resource before an action; commit what it actually used with ledger_commit (the rest is refunded)."),
    write("ledger_commit", "Commit a reservation", "/v1/ledger/commit",
        "Charge the actual amount of a reservation and refund the rest."),
    write("grant_request", "Ask for more", "/v1/grants",
        "Ask for more for a while: a scope, a role, or more quota of a resource (`quota`: {resource, amount}); the right people approve it, and it ends by itself after `ttl`."),
    read("limits_list", "The limits", "/v1/limits",
        "Every system-wide limit with its usage, soft and hard values and state, and who set it through which proposal."),
    read("proposal_list", "List proposals", "/v1/proposals",
        "Proposals to change limits, with their votes and tallies; `state=review` for the open ones."),
    write("proposal_create", "Propose a change", "/v1/proposals",
        "Propose new soft or hard values for a limit. Lowering is a brake and applies at once; raising or removing goes to a vote of both humans and AIs during a review period."),
    write("proposal_vote", "Vote on a proposal", "/v1/proposals/{id}/votes",
        "Vote `approve`, `reject` or `abstain` on a proposal in review (one vote per independent principal and everything it spawned)."),
    read("audit_search", "Search the decision log", "/v1/audit",
        "The hash-chained decision log, oldest first: every decision with its reason and justification; filter by `actor` or `address`, page with `after` and `limit`."),
    read("report", "The day's report", "/v1/reports/summary",
        "What happened in a window (`since`, default 24h): spend by principal and model, denials by reason, work done, workers lost, governance."),
];
