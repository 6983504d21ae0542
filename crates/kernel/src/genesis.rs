//! Genesis: what the first command of a log installs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::governance::GovernanceConfig;
use crate::ledger::Resource;
use crate::limits::LimitSpec;
#[cfg(any(test, feature = "test-support"))]
use crate::limits::{builtin_limit, OnSoft};
use crate::principal::{PrincipalKind, TokenHash};

/// Limits, quota defaults and the first admin, as read from `config/genesis/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub limits: Vec<LimitSpec>,
    pub quotas: QuotaConfig,
    pub governance: GovernanceConfig,
    pub tasks: crate::tasks::TaskConfig,
    /// `anomaly.toml`; `None` watches nothing.
    pub anomaly: Option<crate::anomaly::AnomalyConfig>,
    /// `retention.toml`'s `[tasks]`: when finished tasks leave the live state.
    pub retention: crate::retention::RetentionConfig,
    /// Where the values came from, recorded as `set_via` on every limit.
    pub source: String,
    pub admin_name: String,
    pub admin_token_hash: TokenHash,
}

/// Per-kind quota defaults and the ledger's timing rules (`quotas.toml`).
///
/// Its `Default` is the empty state's, before genesis: no quota defaults and no
/// reservation allowed. Nobody acts in that state (there are no principals); genesis
/// replaces it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaConfig {
    /// Quota of each resource for a new principal of each kind; `None` is unlimited.
    /// A resource missing for a kind is unlimited.
    pub defaults: BTreeMap<PrincipalKind, BTreeMap<Resource, Option<u64>>>,
    /// Refill window of each flow resource.
    pub flow_window_ms: BTreeMap<Resource, u64>,
    /// How long a reservation lives when the request names no `ttl_ms`.
    pub reservation_ttl_ms: u64,
    /// Longest `ttl_ms` a request may ask for.
    pub reservation_ttl_max_ms: u64,
    /// Most open reservations one principal may hold at once.
    pub reservations_per_principal_max: u32,
}

impl QuotaConfig {
    pub fn default_quota(&self, kind: PrincipalKind, resource: Resource) -> Option<u64> {
        if kind == PrincipalKind::System {
            return None;
        }
        self.defaults
            .get(&kind)
            .and_then(|map| map.get(&resource).copied())
            .flatten()
    }

    pub fn window_ms(&self, resource: Resource) -> u64 {
        self.flow_window_ms
            .get(&resource)
            .copied()
            .unwrap_or(60_000)
    }
}

impl Genesis {
    /// A genesis without limits or quotas, for benchmarks that measure the machinery
    /// rather than the denials. Test support (the `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn unlimited_for_benchmarks(admin_token_hash: TokenHash) -> Genesis {
        let mut genesis = Genesis::for_tests(admin_token_hash);
        for quotas in genesis.quotas.defaults.values_mut() {
            quotas.values_mut().for_each(|quota| *quota = None);
        }
        for limit in &mut genesis.limits {
            limit.soft = None;
            limit.hard = None;
        }
        // The bookkeeping runs (its cost is measured), but never quarantines.
        genesis.anomaly = Some(crate::anomaly::AnomalyConfig::never());
        genesis
    }

    /// A small genesis for examples and tests: accounts soft 8 / hard 10, generous
    /// quotas, one-minute flow windows. Test support (the `test-support` feature):
    /// a node's genesis comes from `config/genesis/`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_tests(admin_token_hash: TokenHash) -> Genesis {
        let limit = |name: &str, soft: Option<u64>, hard: Option<u64>| {
            let builtin = builtin_limit(name).expect("builtin limit");
            LimitSpec {
                name: name.to_string(),
                unit: builtin.unit.to_string(),
                description: builtin.description.to_string(),
                soft,
                hard,
                on_soft: OnSoft::Warn,
                window_ms: builtin.default_window_ms,
                queue_max: 100,
                brake_floor: 0,
            }
        };
        let mut defaults = BTreeMap::new();
        for kind in [PrincipalKind::Human, PrincipalKind::Ai] {
            let mut quotas = BTreeMap::new();
            quotas.insert(Resource::LlmBudgetUsd, Some(10 * crate::MICRO_USD_PER_USD));
            quotas.insert(Resource::DiskBytes, Some(1 << 20));
            quotas.insert(Resource::ComputeMs, Some(60_000));
            quotas.insert(Resource::IoOps, Some(10_000));
            quotas.insert(Resource::MemoryBytes, Some(256 << 20));
            defaults.insert(kind, quotas);
        }
        let mut flow_window_ms = BTreeMap::new();
        flow_window_ms.insert(Resource::ComputeMs, 60_000);
        flow_window_ms.insert(Resource::IoOps, 60_000);
        Genesis {
            limits: vec![
                limit("ai_accounts", Some(8), Some(10)),
                limit("human_accounts", Some(8), Some(10)),
                limit(
                    "llm_spend_usd",
                    Some(40 * crate::MICRO_USD_PER_USD),
                    Some(50 * crate::MICRO_USD_PER_USD),
                ),
                limit("data_creation_bytes", None, None),
                limit("total_nodes", None, None),
                limit("task_queue_depth", Some(80), Some(100)),
                limit("tasks_per_worker", Some(4), Some(5)),
                limit("active_workers", Some(2), Some(3)),
            ],
            quotas: QuotaConfig {
                defaults,
                flow_window_ms,
                reservation_ttl_ms: 300_000,
                reservation_ttl_max_ms: 3_600_000,
                reservations_per_principal_max: 1_000,
            },
            governance: GovernanceConfig {
                review_period_ms: 10_000,
                ..GovernanceConfig::defaults()
            },
            tasks: crate::tasks::TaskConfig::defaults(),
            anomaly: Some({
                // The defaults, with room for the tests' dollars-at-once ledgers.
                let mut anomaly = crate::anomaly::AnomalyConfig::defaults();
                anomaly.bounds[2] = crate::anomaly::SignalBound {
                    ceiling: 1_000 * crate::MICRO_USD_PER_USD,
                    min: 100 * crate::MICRO_USD_PER_USD,
                };
                anomaly
            }),
            retention: crate::retention::RetentionConfig::defaults(),
            source: "tests".to_string(),
            admin_name: "admin".to_string(),
            admin_token_hash,
        }
    }
}
