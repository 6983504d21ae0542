//! Counters the node keeps for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub sync_micros_total: AtomicU64,
    pub sync_micros_max: AtomicU64,
    /// Events by decision: allowed, warned, queued, admitted, denied, expired.
    pub decisions: [AtomicU64; 6],
    pub snapshots: AtomicU64,
    /// Log segments pruned (`retention.toml` `[logs]`), both logs.
    pub pruned_segments: AtomicU64,
    pub http_requests: AtomicU64,
    /// Requests turned away by the `concurrent_api_requests` hard limit.
    pub http_rejected: AtomicU64,
    /// Requests refused because their principal had its maximum being served.
    pub http_refused_per_principal: AtomicU64,
    /// Requests that declared a priority above what their caller may claim.
    pub http_priority_capped: AtomicU64,
    /// Since the last health report to the kernel: requests, 5xx answers, and
    /// authentication failures (anomalies).
    pub health_requests: AtomicU64,
    pub health_errors: AtomicU64,
    pub health_anomalies: AtomicU64,
}

pub const DECISION_NAMES: [&str; 6] = [
    "allowed", "warned", "queued", "admitted", "denied", "expired",
];

impl Metrics {
    /// Takes the figures gathered since the last report, if there are any.
    pub fn take_health(&self) -> Option<colony_kernel::NodeHealth> {
        let health = colony_kernel::NodeHealth {
            requests: self.health_requests.swap(0, Ordering::Relaxed),
            errors: self.health_errors.swap(0, Ordering::Relaxed),
            anomalies: self.health_anomalies.swap(0, Ordering::Relaxed),
        };
        (health != colony_kernel::NodeHealth::default()).then_some(health)
    }

    pub fn record_batch(&self, commands: u64, sync: Duration, decisions: &[u64; 6]) {
        self.commands.fetch_add(commands, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let micros = sync.as_micros() as u64;
        self.sync_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.sync_micros_max.fetch_max(micros, Ordering::Relaxed);
        for (counter, count) in self.decisions.iter().zip(decisions) {
            counter.fetch_add(*count, Ordering::Relaxed);
        }
    }
}
