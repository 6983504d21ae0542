//! The recent usage of each limit, sampled by the node at a fixed interval, kept in
//! a bounded ring per limit.

use std::collections::{BTreeMap, VecDeque};

/// How often the node samples the limits.
pub const SAMPLE_INTERVAL_MS: u64 = 2_000;
/// Points kept per limit: half an hour at the sampling interval.
pub const HISTORY_POINTS_MAX: usize = 900;
/// Limits tracked at most (a limit past this count is not charted).
pub const HISTORY_SERIES_MAX: usize = 256;

/// One sample: a limit's usage at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub at_ms: u64,
    pub usage: u64,
}

/// The bounded history of every limit's usage.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    series: BTreeMap<String, VecDeque<Point>>,
}

impl Default for History {
    fn default() -> Self {
        History::new(HISTORY_POINTS_MAX)
    }
}

impl History {
    /// A history keeping at most `capacity` points per limit (at least one).
    pub fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(1),
            series: BTreeMap::new(),
        }
    }

    /// Records one sample of every limit taken at `at_ms`. A sample older than the
    /// last of its series is dropped (time never runs backwards in a chart).
    pub fn record<'a>(&mut self, at_ms: u64, samples: impl IntoIterator<Item = (&'a str, u64)>) {
        for (name, usage) in samples {
            if !self.series.contains_key(name) && self.series.len() >= HISTORY_SERIES_MAX {
                continue;
            }
            let series = self.series.entry(name.to_string()).or_default();
            if series.back().is_some_and(|last| last.at_ms > at_ms) {
                continue;
            }
            if series.len() == self.capacity {
                series.pop_front();
            }
            series.push_back(Point { at_ms, usage });
        }
    }

    /// Every limit's points, oldest first.
    pub fn series(&self) -> impl Iterator<Item = (&str, &VecDeque<Point>)> {
        self.series
            .iter()
            .map(|(name, points)| (name.as_str(), points))
    }

    /// One limit's points, oldest first.
    pub fn points(&self, name: &str) -> Option<&VecDeque<Point>> {
        self.series.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_keeps_its_newest_points_in_order() {
        let mut history = History::new(3);
        for at in 0..5 {
            history.record(at * 10, [("ai_accounts", at), ("disk", 100 - at)]);
        }
        let ai: Vec<u64> = history
            .points("ai_accounts")
            .unwrap()
            .iter()
            .map(|p| p.usage)
            .collect();
        assert_eq!(ai, vec![2, 3, 4]);
        assert_eq!(history.points("disk").unwrap().front().unwrap().at_ms, 20);
        // A late sample does not go back in time.
        history.record(5, [("ai_accounts", 99)]);
        assert_eq!(
            history.points("ai_accounts").unwrap().back().unwrap().usage,
            4
        );
    }

    #[test]
    fn the_number_of_series_is_bounded() {
        let mut history = History::new(2);
        let names: Vec<String> = (0..HISTORY_SERIES_MAX + 10)
            .map(|i| format!("l{i}"))
            .collect();
        history.record(1, names.iter().map(|n| (n.as_str(), 1)));
        assert_eq!(history.series().count(), HISTORY_SERIES_MAX);
    }
}
