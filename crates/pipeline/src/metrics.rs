//! Counters the node keeps for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub sync_micros_total: AtomicU64,
    pub sync_micros_max: AtomicU64,
    /// Syncs by how long they took: one count per bound of [`SYNC_BOUNDS_SECONDS`]
    /// (at most that long, above the bound before), and the last for longer ones.
    pub sync_buckets: [AtomicU64; SYNC_BOUNDS_SECONDS.len() + 1],
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

/// The upper bounds of the syncs' histogram, in seconds: from half a millisecond,
/// doubling, to about a second (what a log's sync takes on a good disk, up to what
/// stalls every caller).
pub const SYNC_BOUNDS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
];

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
        let seconds = sync.as_secs_f64();
        let bucket = SYNC_BOUNDS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(SYNC_BOUNDS_SECONDS.len());
        self.sync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        for (counter, count) in self.decisions.iter().zip(decisions) {
            counter.fetch_add(*count, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sync_counts_in_the_first_bucket_that_holds_it() {
        let metrics = Metrics::default();
        for micros in [10, 500, 501, 3_000, 1_024_000, 5_000_000] {
            metrics.record_batch(1, Duration::from_micros(micros), &[0; 6]);
        }
        let counts: Vec<u64> = metrics
            .sync_buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(metrics.sync_micros_max.load(Ordering::Relaxed), 5_000_000);
    }
}
