//! Calls of tools of upstream MCP servers, which the node's MCP gateway makes for
//! agents (`node/src/mcp/upstream/`). The gateway reserves a call's price before it
//! calls (`Reserve`, one command per priced resource) and, once the call ended,
//! records it with [`ToolCallRecord`]: who called which tool with which arguments
//! (their digest), what came of it, how large the result was and how long it took,
//! the charges settled, and the human approval it used, in one decision.

use serde::{Deserialize, Serialize};

use crate::ledger::ReservationId;

/// Longest tool name, `{server}__{tool}` (MCP names a tool in at most 128 characters).
pub const TOOL_NAME_CHARS_MAX: usize = 200;
/// Most reservations one call settles (`io_ops`, `compute_ms`, `llm_budget_usd`).
pub const TOOL_CALL_CHARGES_MAX: usize = 4;

/// What came of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// The upstream answered a result.
    Ok,
    /// The upstream answered a tool error (`isError: true`).
    ToolError,
    /// The upstream failed (an MCP error, a broken connection, a process that died).
    UpstreamError,
    /// The upstream did not answer before the call's deadline.
    Timeout,
    /// The result was larger than the tool's bound, and was not passed on.
    TooLarge,
    /// The upstream was never called (no free slot before the deadline, the caller
    /// left): nothing is charged.
    NotCalled,
}

impl ToolOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::ToolError => "tool_error",
            ToolOutcome::UpstreamError => "upstream_error",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::TooLarge => "too_large",
            ToolOutcome::NotCalled => "not_called",
        }
    }
}

/// One call, as the gateway records it when it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// As agents see it: `{server}__{tool}`.
    pub tool: String,
    /// SHA-256 of the arguments' JSON as the caller sent them, lowercase hex.
    pub arguments_sha256: String,
    pub arguments_bytes: u64,
    pub outcome: ToolOutcome,
    pub result_bytes: u64,
    pub duration_ms: u64,
    /// The reservations made before the call, each with what it is charged (all of
    /// them the caller's; each is committed, the rest refunded).
    pub charges: Vec<(ReservationId, u64)>,
    /// The approval the call used (a [`crate::grants::GrantWhat::ToolCall`] grant,
    /// active, the caller's, for this tool and these arguments).
    pub grant: Option<u64>,
}

/// Whether `name` can name a tool: 1 to [`TOOL_NAME_CHARS_MAX`] ASCII letters,
/// digits, `_`, `-` and `.`.
pub fn check_tool_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= TOOL_NAME_CHARS_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "a tool's name is 1 to {TOOL_NAME_CHARS_MAX} letters, digits, `_`, `-` or `.`"
        ))
    }
}

/// Whether `digest` is a SHA-256 in lowercase hex.
pub fn check_sha256(digest: &str) -> Result<(), String> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err("arguments_sha256 is 64 lowercase hex digits".to_string())
    }
}
