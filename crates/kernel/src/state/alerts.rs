//! Recording proximity alerts: which thresholds stand raised, and the latest alerts.

use super::*;
use crate::alerts::{Alert, AlertReport, AlertScope, ALERTS_KEPT_MAX, RAISED_MAX};

impl State {
    /// The latest alerts, oldest first.
    pub fn alerts(&self) -> impl DoubleEndedIterator<Item = &Alert> {
        self.alerts.iter()
    }

    /// Whether `threshold` of `scope` stands raised.
    pub fn alert_raised(&self, scope: &AlertScope, threshold: crate::alerts::Threshold) -> bool {
        self.raised_alerts.contains(&(scope.clone(), threshold))
    }

    /// Every threshold standing raised.
    pub fn raised_alerts(&self) -> impl Iterator<Item = &(AlertScope, crate::alerts::Threshold)> {
        self.raised_alerts.iter()
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
                if !self.limits.keys().any(|name| name.as_str() == limit) {
                    return Event::denied(action, limit.clone(), not_found("limit", limit));
                }
                (limit.clone(), None)
            }
            AlertScope::Quota { principal, .. } => match self.principals.get(principal) {
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
        if let crate::alerts::Threshold::Percent(p) = report.threshold {
            if p == 0 || p > 100 {
                return Event::denied(action, subject, invalid("a percentage is 1 to 100"));
            }
        }
        let key = (report.scope.clone(), report.threshold);
        let standing = self.raised_alerts.contains(&key);
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
        if report.raised {
            if self.raised_alerts.len() >= RAISED_MAX {
                return Event::denied(
                    action,
                    subject,
                    invalid(format!("at most {RAISED_MAX} thresholds stand raised")),
                );
            }
            self.raised_alerts.insert(key);
        } else {
            self.raised_alerts.remove(&key);
        }
        self.next_alert_id += 1;
        let alert = Alert {
            id: self.next_alert_id,
            seq: command.seq,
            at_ms: command.at_ms,
            principal,
            report: report.clone(),
        };
        if self.alerts.len() == ALERTS_KEPT_MAX {
            self.alerts.pop_front();
        }
        self.alerts.push_back(alert.clone());
        Event::allowed(
            action,
            subject,
            Effect::AlertRecorded {
                alert: Box::new(alert),
            },
        )
    }

    /// A removed principal's quota alerts stand raised no more.
    pub(super) fn forget_alerts_of(&mut self, principal: PrincipalId) {
        self.raised_alerts.retain(|(scope, _)| {
            !matches!(scope, AlertScope::Quota { principal: p, .. } if *p == principal)
        });
    }
}
