//! Proximity alerts: a watched figure (a system-wide limit's usage, or a principal's
//! use of a quota) crossing a threshold. The node's watcher decides when a figure
//! crosses (with hysteresis, from `alerts.toml`); the kernel records each crossing as
//! a decision, keeps which thresholds stand raised (so that a value hovering at a
//! threshold alerts once, across restarts too), and keeps the latest alerts.

use serde::{Deserialize, Serialize};

use crate::{PrincipalId, Resource};

/// Alerts the kernel keeps (the oldest go first).
pub const ALERTS_KEPT_MAX: usize = 1_000;
/// Thresholds that may stand raised at once across every figure.
pub const RAISED_MAX: usize = 65_536;

/// What an alert watches. Externally tagged (`{"limit":{"limit":"ai_accounts"}}`):
/// commands and the state are stored with postcard, which cannot read an internally
/// tagged enum back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertScope {
    /// A system-wide limit's usage.
    Limit { limit: String },
    /// A principal's use of its quota of a resource.
    Quota {
        principal: PrincipalId,
        resource: Resource,
    },
}

/// Which threshold was crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// The limit's soft value.
    Soft,
    /// This percentage of the hard value (or of the quota), 1 to 100.
    Percent(u8),
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Soft => f.write_str("soft"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What the watcher reports: a threshold crossed upward (`raised`) or, past the
/// hysteresis, back down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertReport {
    pub scope: AlertScope,
    pub threshold: Threshold,
    pub raised: bool,
    /// The figure when it crossed.
    pub usage: u64,
    /// The threshold's value in the figure's unit.
    pub at: u64,
    /// The hard value (or the quota) the percentages are of.
    pub of: Option<u64>,
}

/// A recorded alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Numbered from 1, in the order decided.
    pub id: u64,
    pub seq: u64,
    pub at_ms: u64,
    /// The address of the principal of a quota alert.
    pub principal: Option<String>,
    /// Nested, not flattened: postcard cannot write a flattened struct.
    pub report: AlertReport,
}

impl Alert {
    /// The figure's name as in subjects: the limit, or `quota.<resource>`.
    pub fn figure(&self) -> String {
        match &self.report.scope {
            AlertScope::Limit { limit } => limit.clone(),
            AlertScope::Quota { resource, .. } => format!("quota.{resource}"),
        }
    }

    /// One line a person reads.
    pub fn summary(&self) -> String {
        let r = &self.report;
        let what = match (&r.scope, &self.principal) {
            (AlertScope::Limit { limit }, _) => format!("limit {limit}"),
            (AlertScope::Quota { resource, .. }, Some(address)) => {
                format!("{address}'s quota of {resource}")
            }
            (AlertScope::Quota { resource, .. }, None) => format!("a quota of {resource}"),
        };
        let of = r.of.map(|of| format!(" of {of}")).unwrap_or_default();
        if r.raised {
            format!(
                "{what} reached its {} threshold ({} at {}{of})",
                r.threshold, r.usage, r.at
            )
        } else {
            format!(
                "{what} is back below its {} threshold ({}{of})",
                r.threshold, r.usage
            )
        }
    }
}
