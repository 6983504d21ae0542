//! `/v1/artifacts`: WebAssembly artifacts deployed by principals and run inside
//! Colony, metered through the kernel (docs/artifacts.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ledger::BalanceView;

/// `POST /v1/artifacts`: the module as `wasm_base64` (binary) or `wat` (text).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployArtifact {
    /// 1 to 64 letters, digits, `-`, `_` or `.`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wat: Option<String>,
    /// Quotas of its own by resource, in the resource's unit (micro-dollars for
    /// `llm_budget_usd`), each at most the deployer's own; the others come from
    /// `[defaults.artifact]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<BTreeMap<String, u64>>,
    /// Whether it starts at once (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<bool>,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// What an artifact used since it was last started on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactUsage {
    pub turns: u64,
    /// Calls of its `run`.
    pub runs: u64,
    pub fuel: u64,
    /// Fuel charged as compute, in milliseconds.
    pub compute_ms: u64,
    pub host_calls: u64,
    /// Linear memory it holds now.
    pub memory_bytes: u64,
    /// Bytes in its key-value store.
    pub kv_bytes: u64,
}

/// An artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    pub address: String,
    pub name: String,
    /// SHA-256 of the module's bytes.
    pub digest: String,
    pub bytes: u64,
    pub deployer: String,
    pub deployed_at: String,
    /// Whether it is meant to run (`start`/`stop`).
    pub run: bool,
    /// `running`, `idle`, `exhausted`, `stopped` or `failed`.
    pub state: String,
    /// The resource it is exhausted of.
    pub exhausted: Option<String>,
    /// When that flow refills.
    pub refill_at: Option<String>,
    pub last_error: Option<String>,
    pub usage: ArtifactUsage,
    /// Its ledger balances by resource.
    pub balances: BTreeMap<String, BalanceView>,
    /// The decision's sequence number, on a deploy, start or stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `GET /v1/artifacts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<ArtifactView>,
}

/// One line an artifact logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactLogLine {
    pub seq: u64,
    pub at: String,
    pub text: String,
}

/// `GET /v1/artifacts/{address}/logs[?after=SEQ]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactLogs {
    pub address: String,
    pub lines: Vec<ArtifactLogLine>,
}

/// `?after=SEQ`: only lines after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    pub after: Option<u64>,
}
