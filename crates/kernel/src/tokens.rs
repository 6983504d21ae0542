//! Tokens: a principal may hold several, each with a name, scopes, an optional
//! expiry, and a state (live or revoked). The kernel keeps only their hashes; it
//! decides who may create and revoke them and checks their scopes' syntax. Which
//! route needs which scope is the node's (a token is presented at its edge).

use serde::{Deserialize, Serialize};

use crate::principal::{PrincipalId, TokenHash};

/// Live (unrevoked, unexpired at creation) tokens one principal may hold.
pub const TOKENS_PER_PRINCIPAL_MAX: usize = 32;
/// Token records kept per principal, revoked and expired ones included (the oldest
/// of those are forgotten past this: a forgotten token is then simply unknown).
pub const TOKEN_RECORDS_PER_PRINCIPAL_MAX: usize = 64;
/// Scopes one token may carry.
pub const SCOPES_PER_TOKEN_MAX: usize = 16;
/// Longest token name, in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 64;
/// Longest time to live: a year and a day.
pub const TOKEN_TTL_MAX_MS: u64 = 366 * 24 * 3_600 * 1_000;

/// The scopes a token may name. `*` (every scope its principal's roles allow) is
/// the principal's first token's; `bus:PATTERN` limits the bus to subjects matching
/// a pattern; `task:ADDRESS` allows acting on one task (and its subtasks) and LLM
/// calls made for it; `mcp:SERVER` or `mcp:SERVER__TOOL` allows calling an upstream
/// MCP server's tools through the node's MCP gateway.
pub const SCOPE_NAMES: [&str; 9] = [
    "llm",
    "bus",
    "tasks",
    "ledger",
    "governance",
    "read",
    "admin",
    "spawn",
    "tokens",
];

/// A scope, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every scope the principal's roles allow.
    All,
    /// One of [`SCOPE_NAMES`].
    Named(&'a str),
    /// Publishing and subscribing on subjects matching the pattern.
    Subjects(&'a str),
    /// One task and its subtasks.
    Task(&'a str),
    /// The tools of one upstream MCP server (`mcp:SERVER`) or one of them
    /// (`mcp:SERVER__TOOL`), as `mcp.toml` names them.
    Mcp(&'a str),
}

impl<'a> Scope<'a> {
    /// The scope `text` names, or why it names none.
    pub fn parse(text: &'a str) -> Result<Scope<'a>, String> {
        if text == "*" {
            return Ok(Scope::All);
        }
        if let Some(pattern) = text.strip_prefix("bus:") {
            crate::subject::check_pattern(pattern)
                .map_err(|error| format!("scope {text:?}: {error}"))?;
            return Ok(Scope::Subjects(pattern));
        }
        if let Some(address) = text.strip_prefix("task:") {
            crate::TaskAddress::parse(address)
                .map_err(|error| format!("scope {text:?}: {error}"))?;
            return Ok(Scope::Task(address));
        }
        if let Some(name) = text.strip_prefix("mcp:") {
            crate::tool_calls::check_tool_name(name)
                .map_err(|error| format!("scope {text:?}: {error}"))?;
            return Ok(Scope::Mcp(name));
        }
        SCOPE_NAMES
            .iter()
            .find(|name| **name == text)
            .map(|name| Scope::Named(name))
            .ok_or_else(|| {
                format!(
                    "no scope {text:?}; scopes are {}, bus:PATTERN, task:ADDRESS and mcp:SERVER[__TOOL]",
                    SCOPE_NAMES.join(", ")
                )
            })
    }
}

/// One token of a principal, as the kernel keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Numbered from 1 in the order tokens are made.
    pub id: u64,
    pub principal: PrincipalId,
    pub name: String,
    /// Checked by [`Scope::parse`]; `["*"]` for a principal's first token.
    pub scopes: Vec<String>,
    pub created_at_ms: u64,
    /// Who made it (an address).
    pub created_by: String,
    pub expires_at_ms: Option<u64>,
    /// When it was revoked, and by whom (an address).
    pub revoked: Option<(u64, String)>,
    pub hash: TokenHash,
}

impl Token {
    /// Neither revoked nor expired at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.revoked.is_none() && self.expires_at_ms.is_none_or(|at| now_ms < at)
    }
}

/// A token to make (its secret's hash only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// Whose token it is.
    pub principal: PrincipalId,
    pub name: String,
    pub scopes: Vec<String>,
    pub ttl_ms: Option<u64>,
    pub hash: TokenHash,
}
