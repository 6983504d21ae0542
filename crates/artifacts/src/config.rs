//! How the runtime runs artifacts: `[runtime]` in `config/genesis/artifacts.toml`.

use serde::Deserialize;

/// How turns are given out when several artifacts are busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Every artifact with quota runs its turns as soon as a thread is free.
    #[default]
    Parallel,
    /// Busy artifacts take equal turns: one turn each, in the order they asked.
    RoundRobin,
}

/// The runtime's settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Wasmtime fuel per millisecond of compute: the calibrated rate at which fuel
    /// is charged as `compute_ms` (`cargo bench -p colony-artifacts --bench
    /// artifacts` measures it on the machine at hand).
    pub fuel_per_ms: u64,
    /// Compute reserved for one turn, in milliseconds: a call to `run` that is still
    /// going when its turn's fuel runs out is stopped and charged.
    pub turn_ms: u64,
    /// Host calls one turn may make (reserved as `io_ops` at its first host call).
    pub host_calls_per_turn: u64,
    /// An idle artifact is woken by a message, or after this long; after each such
    /// wake that found nothing to do the wait doubles, up to `idle_wake_max_ms` (so
    /// that an idle artifact does not fill the decision log with turns that do
    /// nothing); a message or a turn with work starts over.
    pub idle_wake_ms: u64,
    pub idle_wake_max_ms: u64,
    /// An artifact out of a stock quota looks again this often for a grant.
    pub exhausted_retry_ms: u64,
    /// Turns running at once (threads).
    pub turns_concurrent_max: usize,
    pub scheduler: Scheduler,
    /// Log lines kept per artifact (the oldest go first).
    pub log_lines_max: usize,
    /// Longest log line, in bytes (longer ones are cut).
    pub log_line_bytes_max: usize,
    /// Keys in an artifact's key-value store.
    pub kv_keys_max: usize,
    pub kv_key_bytes_max: usize,
    pub kv_value_bytes_max: usize,
    /// Largest request or message a host call takes from the guest, in bytes.
    pub host_input_bytes_max: usize,
    /// Subscriptions one artifact holds.
    pub subscriptions_max: usize,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            fuel_per_ms: 5_000_000,
            turn_ms: 20,
            host_calls_per_turn: 64,
            idle_wake_ms: 5_000,
            idle_wake_max_ms: 300_000,
            exhausted_retry_ms: 1_000,
            turns_concurrent_max: 2,
            scheduler: Scheduler::Parallel,
            log_lines_max: 200,
            log_line_bytes_max: 1_024,
            kv_keys_max: 1_000,
            kv_key_bytes_max: 256,
            kv_value_bytes_max: 64 << 10,
            host_input_bytes_max: 256 << 10,
            subscriptions_max: 16,
        }
    }
}

impl RuntimeConfig {
    /// Checks the values that would make the runtime useless or unbounded.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("fuel_per_ms", self.fuel_per_ms),
            ("turn_ms", self.turn_ms),
            ("host_calls_per_turn", self.host_calls_per_turn),
            ("idle_wake_ms", self.idle_wake_ms),
            ("exhausted_retry_ms", self.exhausted_retry_ms),
            ("turns_concurrent_max", self.turns_concurrent_max as u64),
            ("log_lines_max", self.log_lines_max as u64),
            ("kv_keys_max", self.kv_keys_max as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.idle_wake_max_ms < self.idle_wake_ms {
            return Err("idle_wake_max_ms is at least idle_wake_ms".into());
        }
        if self.turn_ms > 10_000 {
            return Err("turn_ms is at most 10000 (ten seconds of compute)".into());
        }
        if self.fuel_per_ms.checked_mul(self.turn_ms).is_none() {
            return Err("fuel_per_ms x turn_ms overflows".into());
        }
        if self.turns_concurrent_max > 1_024 {
            return Err("turns_concurrent_max is at most 1024".into());
        }
        Ok(())
    }

    /// How long an idle artifact waits for a message after `quiet_wakes` wakes in a
    /// row that found nothing to do.
    pub fn idle_wait_ms(&self, quiet_wakes: u32) -> u64 {
        let doubled = 1u64
            .checked_shl(quiet_wakes)
            .map_or(u64::MAX, |factor| self.idle_wake_ms.saturating_mul(factor));
        doubled.min(self.idle_wake_max_ms)
    }

    /// The fuel of `ms` milliseconds of compute.
    pub fn fuel_of(&self, ms: u64) -> u64 {
        ms.saturating_mul(self.fuel_per_ms)
    }

    /// The compute of `fuel`, in whole milliseconds rounded up.
    pub fn ms_of(&self, fuel: u64) -> u64 {
        fuel.div_ceil(self.fuel_per_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_wait_doubles_up_to_its_bound() {
        let config = RuntimeConfig::default();
        let waits: Vec<u64> = [0, 1, 2, 5, 6, 7, 63, 64, 65, u32::MAX]
            .into_iter()
            .map(|n| config.idle_wait_ms(n))
            .collect();
        assert_eq!(
            waits,
            [
                5_000, 10_000, 20_000, 160_000, 300_000, 300_000, 300_000, 300_000, 300_000,
                300_000
            ]
        );
        let bad = RuntimeConfig {
            idle_wake_max_ms: 1_000,
            ..RuntimeConfig::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn fuel_and_milliseconds_convert_rounding_up() {
        let config = RuntimeConfig {
            fuel_per_ms: 1_000,
            ..RuntimeConfig::default()
        };
        assert_eq!(config.fuel_of(20), 20_000);
        assert_eq!(config.ms_of(0), 0);
        assert_eq!(config.ms_of(1), 1);
        assert_eq!(config.ms_of(20_000), 20);
        assert_eq!(config.ms_of(20_001), 21);
        assert_eq!(config.fuel_of(u64::MAX), u64::MAX);
    }

    #[test]
    fn useless_or_unbounded_settings_are_refused() {
        assert!(RuntimeConfig::default().check().is_ok());
        for broken in [
            RuntimeConfig {
                fuel_per_ms: 0,
                ..RuntimeConfig::default()
            },
            RuntimeConfig {
                turn_ms: 0,
                ..RuntimeConfig::default()
            },
            RuntimeConfig {
                turn_ms: 10_001,
                ..RuntimeConfig::default()
            },
            RuntimeConfig {
                turns_concurrent_max: 0,
                ..RuntimeConfig::default()
            },
            RuntimeConfig {
                fuel_per_ms: u64::MAX,
                turn_ms: 2,
                ..RuntimeConfig::default()
            },
        ] {
            assert!(broken.check().is_err(), "{broken:?}");
        }
    }
}
