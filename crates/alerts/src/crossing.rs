//! Which thresholds a figure crosses, with hysteresis: a threshold is raised when the
//! figure reaches it, and cleared only when the figure falls the hysteresis below it,
//! so that a value hovering at a threshold alerts once.

use colony_kernel::alerts::{AlertReport, AlertScope, Threshold};

use crate::Rules;

/// A watched figure now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    pub scope: AlertScope,
    pub usage: u64,
    pub soft: Option<u64>,
    /// The hard value, or the quota: what percentages are of.
    pub hard: Option<u64>,
}

/// The value of `threshold` for `figure`, if it has one (none for a percentage of
/// an unlimited figure, or a soft value it lacks; none when it would be 0).
fn value(figure: &Figure, threshold: Threshold) -> Option<u64> {
    let value = match threshold {
        Threshold::Soft => figure.soft?,
        Threshold::Percent(p) => {
            let hard = figure.hard?;
            // Rounded up: 80% of 5 is reached at 4, 95% of 5 at 5.
            ((u128::from(hard) * u128::from(p)).div_ceil(100)) as u64
        }
    };
    (value > 0).then_some(value)
}

/// The crossings of `figure` under `rules`: raises of thresholds not raised that it
/// reached, clearings of raised ones it fell `hysteresis_pct` percent below.
pub fn crossings(
    figure: &Figure,
    rules: &Rules,
    hysteresis_pct: u8,
    raised: impl Fn(Threshold) -> bool,
) -> Vec<AlertReport> {
    let mut thresholds: Vec<Threshold> = rules
        .percents
        .iter()
        .map(|p| Threshold::Percent(*p))
        .collect();
    if rules.soft {
        thresholds.push(Threshold::Soft);
    }
    let mut reports = Vec::new();
    for threshold in thresholds {
        let up = raised(threshold);
        let Some(at) = value(figure, threshold) else {
            if up {
                // The limit became unlimited (or lost its soft value): nothing to
                // stand raised against.
                reports.push(report(figure, threshold, false, 0));
            }
            continue;
        };
        // Below `at` less the hysteresis, compared exactly (usage * 100 < at * (100 - h)).
        let below = u128::from(figure.usage) * 100
            < u128::from(at) * u128::from(100 - hysteresis_pct.min(100));
        if !up && figure.usage >= at {
            reports.push(report(figure, threshold, true, at));
        } else if up && below {
            reports.push(report(figure, threshold, false, at));
        }
    }
    reports
}

/// When each threshold last cleared, to hold back a raise within the cooldown.
/// Bounded: entries older than the cooldown are forgotten as they are met.
#[derive(Debug, Default)]
pub struct Cooldown {
    cleared: std::collections::BTreeMap<(AlertScope, Threshold), u64>,
}

/// Thresholds remembered at most (the oldest clearings go first past it).
pub const COOLDOWN_ENTRIES_MAX: usize = 65_536;

impl Cooldown {
    /// Whether `report` may go to the kernel now; remembers clearings.
    pub fn admit(&mut self, report: &AlertReport, now_ms: u64, cooldown_ms: u64) -> bool {
        let key = (report.scope.clone(), report.threshold);
        if !report.raised {
            if self.cleared.len() >= COOLDOWN_ENTRIES_MAX {
                self.cleared
                    .retain(|_, at| now_ms.saturating_sub(*at) < cooldown_ms);
                if self.cleared.len() >= COOLDOWN_ENTRIES_MAX {
                    let oldest = self
                        .cleared
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        self.cleared.remove(&oldest);
                    }
                }
            }
            self.cleared.insert(key, now_ms);
            return true;
        }
        match self.cleared.get(&key) {
            Some(at) if now_ms.saturating_sub(*at) < cooldown_ms => false,
            Some(_) => {
                self.cleared.remove(&key);
                true
            }
            None => true,
        }
    }
}

fn report(figure: &Figure, threshold: Threshold, raised: bool, at: u64) -> AlertReport {
    AlertReport {
        scope: figure.scope.clone(),
        threshold,
        raised,
        usage: figure.usage,
        at,
        of: figure.hard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn figure(usage: u64) -> Figure {
        Figure {
            scope: AlertScope::Limit {
                limit: "ai_accounts".into(),
            },
            usage,
            soft: Some(2),
            hard: Some(5),
        }
    }

    /// Feeds `path` through `crossings`, applying each report as the kernel would;
    /// returns the raises and clears as (usage, threshold, raised).
    fn walk(path: &[u64], hysteresis: u8) -> Vec<(u64, String, bool)> {
        let rules = Rules {
            percents: vec![80, 95],
            soft: true,
        };
        let standing = RefCell::new(BTreeSet::new());
        let mut seen = Vec::new();
        for usage in path {
            let reports = crossings(&figure(*usage), &rules, hysteresis, |t| {
                standing.borrow().contains(&t)
            });
            for r in reports {
                if r.raised {
                    standing.borrow_mut().insert(r.threshold);
                } else {
                    standing.borrow_mut().remove(&r.threshold);
                }
                seen.push((*usage, r.threshold.to_string(), r.raised));
            }
        }
        seen
    }

    #[test]
    fn each_threshold_raises_once_on_the_way_up() {
        let seen = walk(&[0, 1, 2, 3, 4, 5, 5], 5);
        assert_eq!(
            seen,
            vec![
                (2, "soft".into(), true),
                (4, "80%".into(), true),
                (5, "95%".into(), true),
            ]
        );
    }

    #[test]
    fn a_value_hovering_at_a_threshold_alerts_once() {
        // 80% of 100 is 80; with 10% hysteresis it clears below 72.
        let rules = Rules {
            percents: vec![80],
            soft: false,
        };
        let mut f = figure(0);
        f.hard = Some(100);
        let standing = RefCell::new(BTreeSet::new());
        let mut raises = 0;
        for usage in [79, 80, 79, 80, 75, 81, 73, 80, 71, 80] {
            f.usage = usage;
            for r in crossings(&f, &rules, 10, |t| standing.borrow().contains(&t)) {
                if r.raised {
                    raises += 1;
                    standing.borrow_mut().insert(r.threshold);
                } else {
                    standing.borrow_mut().remove(&r.threshold);
                }
            }
        }
        // Raised at the first 80, cleared at 71, raised again at the last 80.
        assert_eq!(raises, 2);
    }

    #[test]
    fn the_hysteresis_is_compared_exactly() {
        // 80% of 5 is 4; 30% below it is 2.8: 2 clears, 3 does not.
        let rules = Rules {
            percents: vec![80],
            soft: false,
        };
        assert!(crossings(&figure(3), &rules, 30, |_| true).is_empty());
        assert_eq!(crossings(&figure(2), &rules, 30, |_| true).len(), 1);
    }

    #[test]
    fn a_threshold_swung_across_raises_once_per_cooldown() {
        let mut cooldown = Cooldown::default();
        let raise = report(&figure(4), Threshold::Percent(80), true, 4);
        let clear = report(&figure(2), Threshold::Percent(80), false, 4);
        assert!(cooldown.admit(&raise, 0, 1_000));
        assert!(cooldown.admit(&clear, 100, 1_000));
        // Swung back up within the cooldown: held back.
        assert!(!cooldown.admit(&raise, 500, 1_000));
        assert!(!cooldown.admit(&raise, 1_099, 1_000));
        // After it, the raise goes through.
        assert!(cooldown.admit(&raise, 1_100, 1_000));
        // Another threshold is its own.
        let soft = report(&figure(2), Threshold::Soft, true, 2);
        assert!(cooldown.admit(&soft, 1_100, 1_000));
    }

    #[test]
    fn an_unlimited_figure_has_no_percent_thresholds_and_clears_what_stood() {
        let rules = Rules {
            percents: vec![80],
            soft: false,
        };
        let mut f = figure(1_000);
        f.hard = None;
        assert!(crossings(&f, &rules, 5, |_| false).is_empty());
        let cleared = crossings(&f, &rules, 5, |_| true);
        assert_eq!(cleared.len(), 1);
        assert!(!cleared[0].raised);
    }
}
