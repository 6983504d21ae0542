//! Recording proximity alerts: which thresholds stand raised, and the latest alerts.
//! [`Alerts`] is the part of the state that holds them, its fields its own; the
//! state checks what it cannot know (the limit exists, the principal has
//! standing) and hands it the rest.

use std::collections::VecDeque;

use super::*;
use crate::alerts::{Alert, AlertReport, AlertScope, Threshold, ALERTS_KEPT_MAX, RAISED_MAX};

/// The thresholds standing raised and the latest alerts (oldest first, at most
/// [`ALERTS_KEPT_MAX`]), numbered in order. Its fields are in the order the state
/// held them before it had parts: a snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alerts {
    raised: BTreeSet<(AlertScope, Threshold)>,
    latest: VecDeque<Alert>,
    last_id: u64,
}

impl Alerts {
    fn is_raised(&self, key: &(AlertScope, Threshold)) -> bool {
        self.raised.contains(key)
    }

    /// Raises or clears `key` (said not to stand, or to stand, before), and keeps
    /// the alert, numbered: refused past [`RAISED_MAX`] raised thresholds.
    fn record(
        &mut self,
        key: (AlertScope, Threshold),
        raised: bool,
        alert: impl FnOnce(u64) -> Alert,
    ) -> Result<Alert, String> {
        if raised {
            if self.raised.len() >= RAISED_MAX {
                return Err(format!("at most {RAISED_MAX} thresholds stand raised"));
            }
            self.raised.insert(key);
        } else {
            self.raised.remove(&key);
        }
        self.last_id += 1;
        let alert = alert(self.last_id);
        if self.latest.len() == ALERTS_KEPT_MAX {
            self.latest.pop_front();
        }
        self.latest.push_back(alert.clone());
        Ok(alert)
    }

    /// `principal`'s quota alerts stand raised no more.
    fn forget(&mut self, principal: PrincipalId) {
        self.raised.retain(|(scope, _)| {
            !matches!(scope, AlertScope::Quota { principal: p, .. } if *p == principal)
        });
    }

    /// Its invariants: within its bound, numbered in order, a quota alert raised
    /// only for a principal `standing` says has standing.
    pub(super) fn check(&self, standing: impl Fn(PrincipalId) -> bool) -> Result<(), String> {
        if self.latest.len() > ALERTS_KEPT_MAX {
            return Err(format!("{} alerts kept", self.latest.len()));
        }
        if !self
            .latest
            .iter()
            .zip(self.latest.iter().skip(1))
            .all(|(a, b)| a.id < b.id)
        {
            return Err("alerts out of order".into());
        }
        for (scope, threshold) in &self.raised {
            if let AlertScope::Quota { principal, .. } = scope {
                if !standing(*principal) {
                    return Err(format!("{threshold} alert raised for {principal}, gone"));
                }
            }
        }
        Ok(())
    }
}

impl State {
    /// The latest alerts, oldest first.
    pub fn alerts(&self) -> impl DoubleEndedIterator<Item = &Alert> {
        self.alerts.latest.iter()
    }

    /// Whether `threshold` of `scope` stands raised.
    pub fn alert_raised(&self, scope: &AlertScope, threshold: Threshold) -> bool {
        self.alerts.is_raised(&(scope.clone(), threshold))
    }

    /// Every threshold standing raised.
    pub fn raised_alerts(&self) -> impl Iterator<Item = &(AlertScope, Threshold)> {
        self.alerts.raised.iter()
    }

    /// Records a crossing the node's watcher reports (system only): a raise of a
    /// threshold not raised, or a clearing of one that is; anything else is refused,
    /// so that a figure hovering at a threshold alerts once.
    pub(super) fn record_alert(&mut self, command: &Command, report: &AlertReport) -> Event {
        let action = if report.raised {
            "alert.raise"
        } else {
            "alert.clear"
        };
        let (subject, principal) = match &report.scope {
            AlertScope::Limit { limit } => {
                if !self.limits.names().any(|name| name.as_str() == limit) {
                    return Event::denied(action, limit.clone(), not_found("limit", limit));
                }
                (limit.clone(), None)
            }
            AlertScope::Quota { principal, .. } => match self.principals.get(*principal) {
                Some(p) if p.standing => (p.address.clone(), Some(p.address.clone())),
                Some(p) => {
                    return Event::denied(
                        action,
                        p.address.clone(),
                        invalid(format!("{} has no standing", p.address)),
                    )
                }
                None => {
                    return Event::denied(
                        action,
                        principal.to_string(),
                        not_found("principal", principal),
                    )
                }
            },
        };
        if let Threshold::Percent(p) = report.threshold {
            if p == 0 || p > 100 {
                return Event::denied(action, subject, invalid("a percentage is 1 to 100"));
            }
        }
        let key = (report.scope.clone(), report.threshold);
        let standing = self.alerts.is_raised(&key);
        if report.raised == standing {
            let message = if standing {
                format!(
                    "the {} threshold of {subject} is already raised",
                    report.threshold
                )
            } else {
                format!(
                    "the {} threshold of {subject} is not raised",
                    report.threshold
                )
            };
            return Event::denied(action, subject, invalid(message));
        }
        let recorded = self.alerts.record(key, report.raised, |id| Alert {
            id,
            seq: command.seq,
            at_ms: command.at_ms,
            principal,
            report: report.clone(),
        });
        match recorded {
            Ok(alert) => Event::allowed(
                action,
                subject,
                Effect::AlertRecorded {
                    alert: Box::new(alert),
                },
            ),
            Err(refused) => Event::denied(action, subject, invalid(refused)),
        }
    }

    /// A removed principal's quota alerts stand raised no more.
    pub(super) fn forget_alerts_of(&mut self, principal: PrincipalId) {
        self.alerts.forget(principal);
    }
}
