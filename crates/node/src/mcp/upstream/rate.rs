//! `rate_per_minute`: calls per principal per tool rule, counted in one-minute
//! windows on this node.

use std::collections::HashMap;
use std::sync::Mutex;

use colony_kernel::PrincipalId;

/// Counters kept at most; past it, those of ended windows are forgotten, and a call
/// that still finds no room is refused (never let through uncounted).
pub const RATE_COUNTERS_MAX: usize = 65_536;

const WINDOW_MS: u64 = 60_000;

#[derive(Default)]
pub(crate) struct Rates {
    counters: Mutex<HashMap<(PrincipalId, String), (u64, u32)>>,
}

impl Rates {
    /// Counts one call of `key` by `who` at `now_ms`, or says when the next may be.
    pub(crate) fn take(
        &self,
        who: PrincipalId,
        key: &str,
        per_minute: u32,
        now_ms: u64,
    ) -> Result<(), String> {
        let window = now_ms / WINDOW_MS;
        let mut counters = self.counters.lock().expect("rates lock");
        if counters.len() >= RATE_COUNTERS_MAX && !counters.contains_key(&(who, key.to_string())) {
            counters.retain(|_, (at, _)| *at == window);
            if counters.len() >= RATE_COUNTERS_MAX {
                return Err(format!(
                    "this node counts calls of {RATE_COUNTERS_MAX} principals and tools this minute, its most; try again within a minute"
                ));
            }
        }
        let counter = counters
            .entry((who, key.to_string()))
            .or_insert((window, 0));
        if counter.0 != window {
            *counter = (window, 0);
        }
        if counter.1 >= per_minute {
            let wait_s = ((window + 1) * WINDOW_MS - now_ms).div_ceil(1_000);
            return Err(format!(
                "rate: at most {per_minute} calls a minute of {key}; the next in {wait_s} s"
            ));
        }
        counter.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_rate_and_the_next_starts_afresh() {
        let rates = Rates::default();
        let who = PrincipalId(7);
        for _ in 0..3 {
            rates.take(who, "files__read", 3, 60_500).unwrap();
        }
        let refused = rates.take(who, "files__read", 3, 61_000).unwrap_err();
        assert!(refused.contains("the next in 59 s"), "{refused}");
        // Another principal, another tool: their own counts.
        rates
            .take(PrincipalId(8), "files__read", 3, 61_000)
            .unwrap();
        rates.take(who, "files__write", 3, 61_000).unwrap();
        rates.take(who, "files__read", 3, 120_000).unwrap();
    }
}
