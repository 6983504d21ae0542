//! The ledger: per-principal quotas, reservations, and the reserve/commit/release cycle.
//!
//! Every quota is an integer amount of one [`Resource`]. Stock does not refill (money,
//! disk), flow refills every window (compute, I/O), gauge is held while in use (memory).
//! Quotas nest: a reservation is checked and held at the principal and at each of its
//! ancestors that has a quota, so a child never spends beyond its parent.

use serde::{Deserialize, Serialize};

use crate::principal::PrincipalId;

/// A reservation's number: the sequence number of the command that made it.
pub type ReservationId = u64;

/// A resource the ledger accounts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Money for LLM calls, in micro-dollars. Stock.
    LlmBudgetUsd,
    /// Storage, in bytes. Stock that comes back when data is freed.
    DiskBytes,
    /// Compute time, in milliseconds. Flow.
    ComputeMs,
    /// Input/output operations (commands, messages). Flow.
    IoOps,
    /// Memory, in bytes. Gauge.
    MemoryBytes,
}

/// How a resource's quota behaves over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Stock,
    Flow,
    Gauge,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::LlmBudgetUsd,
        Resource::DiskBytes,
        Resource::ComputeMs,
        Resource::IoOps,
        Resource::MemoryBytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::LlmBudgetUsd => "llm_budget_usd",
            Resource::DiskBytes => "disk_bytes",
            Resource::ComputeMs => "compute_ms",
            Resource::IoOps => "io_ops",
            Resource::MemoryBytes => "memory_bytes",
        }
    }

    pub fn parse(text: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|resource| resource.as_str() == text)
    }

    pub fn kind(self) -> ResourceKind {
        match self {
            Resource::LlmBudgetUsd | Resource::DiskBytes => ResourceKind::Stock,
            Resource::ComputeMs | Resource::IoOps => ResourceKind::Flow,
            Resource::MemoryBytes => ResourceKind::Gauge,
        }
    }

    /// The unit amounts are counted in.
    pub fn unit(self) -> &'static str {
        match self {
            Resource::LlmBudgetUsd => "micro_usd",
            Resource::DiskBytes | Resource::MemoryBytes => "bytes",
            Resource::ComputeMs => "ms",
            Resource::IoOps => "ops",
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One principal's account of one resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// `None` is unlimited.
    pub quota: Option<u64>,
    /// Consumed (stock, flow in this window) or held (gauge).
    pub used: u64,
    /// Set aside by open reservations.
    pub reserved: u64,
    /// Start of the current window of a flow resource.
    pub window_start_ms: u64,
    /// Total that was consumed beyond the quota and could not be charged.
    pub shortfall: u64,
}

impl Balance {
    pub fn with_quota(quota: Option<u64>) -> Balance {
        Balance {
            quota,
            ..Balance::default()
        }
    }

    /// What may still be reserved.
    pub fn available(&self) -> u64 {
        match self.quota {
            None => u64::MAX,
            Some(quota) => quota.saturating_sub(self.used.saturating_add(self.reserved)),
        }
    }

    /// Refills a flow balance when its window has turned. Windows are fixed and
    /// aligned to multiples of their length since the epoch.
    pub fn roll_window(&mut self, now_ms: u64, window_ms: u64) {
        let start = now_ms - now_ms % window_ms.max(1);
        if start > self.window_start_ms {
            self.window_start_ms = start;
            self.used = 0;
        }
    }
}

/// What a reservation holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Set aside, waiting for commit or release.
    Reserved,
    /// A committed gauge: `actual` is held until released.
    Held { actual: u64 },
}

/// An amount set aside before an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    pub principal: PrincipalId,
    pub resource: Resource,
    pub amount: u64,
    pub created_at_ms: u64,
    /// A reserved (not held) reservation is released at this time.
    pub expires_at_ms: u64,
    /// The principal and each ancestor whose balance this reservation is held at.
    pub chain: Vec<PrincipalId>,
    pub state: ReservationState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_saturates_and_unlimited_is_max() {
        let mut balance = Balance::with_quota(Some(10));
        balance.used = 7;
        balance.reserved = 5;
        assert_eq!(balance.available(), 0);
        assert_eq!(Balance::with_quota(None).available(), u64::MAX);
    }

    #[test]
    fn resource_names_round_trip() {
        for resource in Resource::ALL {
            assert_eq!(Resource::parse(resource.as_str()), Some(resource));
        }
        assert_eq!(Resource::parse("llm_budget"), None);
    }
}
