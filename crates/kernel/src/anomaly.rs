//! Anomalous behaviour: per-principal baselines of what each principal does, and the
//! quarantine of one far outside its own baseline or a fixed ceiling
//! (`config/genesis/anomaly.toml`).
//!
//! Every figure is an integer count per window of stamped time, so every node decides
//! the same. A principal's baseline of each signal is a moving average of its past
//! windows (each closed window moves it an eighth of the way), kept in sixteenths.
//! Within the current window a signal is anomalous when its count passes the
//! signal's `ceiling`, or, once the principal has `warmup_windows` of history, when it
//! passes both the signal's `min` and `factor` times its baseline. A steady principal,
//! however busy, stays near its own baseline; a burst far beyond it does not.

use serde::{Deserialize, Serialize};

use crate::principal::PrincipalId;

/// What is watched, per principal and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Commands it made.
    Commands,
    /// Commands of it that were denied.
    Denials,
    /// Micro-dollars of LLM spend charged to it.
    SpendMicroUsd,
    /// Task attempts it failed.
    FailedTasks,
    /// Messages it published on the bus (reported by the node's edge).
    Publishes,
}

impl Signal {
    pub const ALL: [Signal; 5] = [
        Signal::Commands,
        Signal::Denials,
        Signal::SpendMicroUsd,
        Signal::FailedTasks,
        Signal::Publishes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Commands => "commands",
            Signal::Denials => "denials",
            Signal::SpendMicroUsd => "spend_micro_usd",
            Signal::FailedTasks => "failed_tasks",
            Signal::Publishes => "publishes",
        }
    }

    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The bounds of one signal, per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalBound {
    /// Anomalous past this, whatever the baseline.
    pub ceiling: u64,
    /// Below this, never anomalous against the baseline (a tiny baseline times
    /// `factor` is still small).
    pub min: u64,
}

/// `anomaly.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyConfig {
    pub window_ms: u64,
    /// Windows of history before the baseline is trusted (only ceilings apply).
    pub warmup_windows: u32,
    /// A count this many times the baseline (and past `min`) is anomalous.
    pub factor: u64,
    /// Bounds by signal, in the order of [`Signal::ALL`].
    pub bounds: [SignalBound; 5],
}

impl AnomalyConfig {
    /// The shipped defaults (the same as the repository's anomaly.toml).
    pub fn defaults() -> AnomalyConfig {
        AnomalyConfig {
            window_ms: 60_000,
            warmup_windows: 3,
            factor: 20,
            bounds: [
                SignalBound {
                    ceiling: 30_000,
                    min: 1_200,
                },
                SignalBound {
                    ceiling: 3_000,
                    min: 300,
                },
                SignalBound {
                    ceiling: 2_000_000,
                    min: 200_000,
                },
                SignalBound {
                    ceiling: 500,
                    min: 60,
                },
                SignalBound {
                    ceiling: 600_000,
                    min: 60_000,
                },
            ],
        }
    }

    /// Bookkeeping that never triggers (benchmarks measure its cost).
    pub fn never() -> AnomalyConfig {
        AnomalyConfig {
            bounds: [SignalBound {
                ceiling: u64::MAX,
                min: u64::MAX,
            }; 5],
            ..AnomalyConfig::defaults()
        }
    }

    pub fn bound(&self, signal: Signal) -> SignalBound {
        self.bounds[signal.index()]
    }
}

/// Baselines are kept in sixteenths, so that small averages are not rounded to 0.
pub const BASELINE_SCALE: u64 = 16;
/// Windows closed in one step at most; after a longer silence the baseline is
/// treated as having decayed to nothing (an eighth per window: 64 windows leave
/// under a thousandth).
const SILENT_WINDOWS_MAX: u64 = 64;

/// One principal's recent activity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub window_start_ms: u64,
    pub counts: [u64; 5],
    /// Moving averages of past windows, times [`BASELINE_SCALE`].
    pub baselines: [u64; 5],
    /// Windows of history (saturating).
    pub windows: u32,
    /// An admin's (or the system's): watched by people, never quarantined. Kept here
    /// so that the hot path looks the principal up once, not at every command.
    pub exempt: bool,
}

impl Activity {
    /// Closes the windows that ended before `now_ms`, moving the baselines.
    pub fn roll(&mut self, now_ms: u64, window_ms: u64) {
        let window_ms = window_ms.max(1);
        if self.window_start_ms == 0 && self.windows == 0 {
            self.window_start_ms = now_ms - now_ms % window_ms;
            return;
        }
        if now_ms < self.window_start_ms + window_ms {
            return;
        }
        let elapsed = (now_ms - self.window_start_ms) / window_ms;
        // The window that just ended, then the silent ones after it.
        for (index, baseline) in self.baselines.iter_mut().enumerate() {
            let count = self.counts[index].saturating_mul(BASELINE_SCALE);
            *baseline = move_average(*baseline, count);
            for _ in 1..elapsed.min(SILENT_WINDOWS_MAX) {
                *baseline = move_average(*baseline, 0);
            }
            if elapsed >= SILENT_WINDOWS_MAX {
                *baseline = 0;
            }
        }
        self.counts = [0; 5];
        self.windows = self
            .windows
            .saturating_add(elapsed.min(u32::MAX as u64) as u32);
        self.window_start_ms += elapsed * window_ms;
    }

    /// Adds `amount` to a signal and says whether the window is now anomalous.
    pub fn add(&mut self, signal: Signal, amount: u64, config: &AnomalyConfig) -> Option<Evidence> {
        let index = signal.index();
        self.counts[index] = self.counts[index].saturating_add(amount);
        let count = self.counts[index];
        let bound = config.bound(signal);
        if count > bound.ceiling {
            return Some(Evidence {
                signal,
                count,
                threshold: bound.ceiling,
                baseline_sixteenths: self.baselines[index],
                rule: EvidenceRule::Ceiling,
                window_start_ms: self.window_start_ms,
                window_ms: config.window_ms,
            });
        }
        if self.windows >= config.warmup_windows && count > bound.min {
            let threshold = (self.baselines[index].saturating_mul(config.factor))
                .div_ceil(BASELINE_SCALE)
                .max(bound.min);
            if count > threshold {
                return Some(Evidence {
                    signal,
                    count,
                    threshold,
                    baseline_sixteenths: self.baselines[index],
                    rule: EvidenceRule::Baseline,
                    window_start_ms: self.window_start_ms,
                    window_ms: config.window_ms,
                });
            }
        }
        None
    }
}

/// An eighth of the way from `average` to `sample`.
fn move_average(average: u64, sample: u64) -> u64 {
    if sample >= average {
        average + (sample - average) / 8
    } else {
        average - (average - sample).div_ceil(8)
    }
}

/// Which rule a count broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceRule {
    /// Past the signal's fixed ceiling.
    Ceiling,
    /// Past `factor` times the principal's own baseline (and past `min`).
    Baseline,
}

/// Why a principal was quarantined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub signal: Signal,
    /// The count in the window so far.
    pub count: u64,
    /// What it passed.
    pub threshold: u64,
    /// The principal's baseline for the signal, in sixteenths of a count per window.
    pub baseline_sixteenths: u64,
    pub rule: EvidenceRule,
    pub window_start_ms: u64,
    pub window_ms: u64,
}

/// A quarantined principal: its tokens only read until a human releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub principal: PrincipalId,
    pub since_ms: u64,
    pub evidence: Evidence,
    /// Reservations released, leases revoked and worker sessions ended by it.
    pub released_reservations: u32,
    pub revoked_leases: Vec<crate::TaskAddress>,
    pub ended_workers: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_signal_settles_at_its_baseline_and_a_burst_stands_out() {
        let config = AnomalyConfig::defaults();
        let mut activity = Activity::default();
        let mut now = 60_000;
        activity.roll(now, config.window_ms);
        for _ in 0..40 {
            for _ in 0..1_000 {
                assert!(activity.add(Signal::Commands, 1, &config).is_none());
            }
            now += 60_000;
            activity.roll(now, config.window_ms);
        }
        // About 1 000 a window, in sixteenths.
        let baseline = activity.baselines[0] / BASELINE_SCALE;
        assert!((950..=1_000).contains(&baseline), "{baseline}");
        let mut evidence = None;
        for _ in 0..25_000 {
            if let Some(found) = activity.add(Signal::Commands, 1, &config) {
                evidence = Some(found);
                break;
            }
        }
        let evidence = evidence.expect("20 times the baseline is anomalous");
        assert_eq!(evidence.rule, EvidenceRule::Baseline);
        assert!(
            evidence.count > 19_000 && evidence.count <= 20_001,
            "{evidence:?}"
        );
    }

    #[test]
    fn a_long_silence_forgets_the_baseline_without_looping_over_it() {
        let config = AnomalyConfig::defaults();
        let mut activity = Activity::default();
        activity.roll(60_000, 60_000);
        activity.add(Signal::Commands, 5_000, &config);
        activity.roll(120_000, 60_000);
        assert!(activity.baselines[0] > 0);
        activity.roll(u64::MAX / 2, 60_000);
        assert_eq!(activity.baselines[0], 0);
    }
}
