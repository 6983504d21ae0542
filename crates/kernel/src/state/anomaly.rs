//! The kernel's side of anomaly detection: watching each principal's signals against
//! its baseline, quarantining one far outside it, and a human's release.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Effects;
use super::{forbidden, not_found, State};
use crate::anomaly::{Activity, AnomalyConfig, Evidence, Quarantine, Signal};
use crate::command::Command;
use crate::event::{Decision, Effect, Event, Reason};
use crate::ledger::{ReservationId, Resource};
use crate::principal::{PrincipalId, PrincipalKind, Role};
use crate::workers::WorkerState;

const QUARANTINE: &str = "principal.quarantine";
const RELEASE: &str = "principal.release";

/// The part of the state that watches: `anomaly.toml` (`None` watches nothing),
/// what each principal did in the current window with its baselines, and the
/// quarantined principals with the evidence. Its fields are in the order the state
/// held them before it had parts: a snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Watch {
    config: Option<AnomalyConfig>,
    activity: BTreeMap<PrincipalId, Activity>,
    quarantined: BTreeMap<PrincipalId, Quarantine>,
}

impl Watch {
    /// Watching as `anomaly.toml` says (genesis).
    pub(super) fn configure(&mut self, config: Option<AnomalyConfig>) {
        self.config = config;
    }

    /// Whether anything is watched.
    #[inline]
    pub(super) fn is_on(&self) -> bool {
        self.config.is_some()
    }

    #[inline]
    pub(super) fn quarantine_of(&self, principal: PrincipalId) -> Option<&Quarantine> {
        self.quarantined.get(&principal)
    }

    #[inline]
    pub(super) fn is_quarantined(&self, principal: PrincipalId) -> bool {
        !self.quarantined.is_empty() && self.quarantined.contains_key(&principal)
    }

    /// The quarantined principals.
    pub(super) fn quarantined(&self) -> impl Iterator<Item = &PrincipalId> {
        self.quarantined.keys()
    }

    /// Adds `signals` to what `principal` did in the window (at `now_ms`): the
    /// evidence when that made it anomalous. `exempt` says, the first time the
    /// principal is seen, whether it is watched by people instead (admins, the
    /// system); one already quarantined is not watched.
    #[inline]
    fn add(
        &mut self,
        principal: PrincipalId,
        now_ms: u64,
        signals: &[(Signal, u64)],
        exempt: impl FnOnce() -> bool,
    ) -> Option<Evidence> {
        let config = self.config.as_ref()?;
        if !self.quarantined.is_empty() && self.quarantined.contains_key(&principal) {
            return None;
        }
        let activity = self.activity.entry(principal).or_insert_with(|| Activity {
            // Roles never change after creation: decided once.
            exempt: exempt(),
            ..Activity::default()
        });
        if activity.exempt {
            return None;
        }
        activity.roll(now_ms, config.window_ms);
        signals
            .iter()
            .find_map(|(signal, amount)| activity.add(*signal, *amount, config))
    }

    fn quarantine(&mut self, quarantine: Quarantine) {
        self.quarantined.insert(quarantine.principal, quarantine);
    }

    /// Lifts `principal`'s quarantine: the window that tripped it starts over, the
    /// baselines stay.
    fn release(&mut self, principal: PrincipalId) -> Option<Quarantine> {
        let quarantine = self.quarantined.remove(&principal)?;
        if let Some(activity) = self.activity.get_mut(&principal) {
            activity.counts = [0; 5];
        }
        Some(quarantine)
    }
}

impl State {
    /// The quarantine of a principal, if it is quarantined.
    pub fn quarantine_of(&self, principal: PrincipalId) -> Option<&Quarantine> {
        self.anomaly.quarantine_of(principal)
    }

    /// A principal's activity in the current window and its baselines.
    pub fn activity_of(&self, principal: PrincipalId) -> Option<&Activity> {
        self.anomaly.activity.get(&principal)
    }

    /// Watches what a principal's command did (its primary event is
    /// `events[primary_index]`); quarantines it when a signal is anomalous (the
    /// event goes into `events`). On the hot path: no allocation, one lookup.
    pub(super) fn observe(
        &mut self,
        fx: &mut Effects,
        actor: PrincipalId,
        primary_index: usize,
        events: &mut Vec<Event>,
    ) {
        let primary = &events[primary_index];
        let mut signals = [(Signal::Commands, 1u64); 4];
        let mut count = 1;
        if primary.decision == Decision::Denied {
            signals[count] = (Signal::Denials, 1);
            count += 1;
        }
        match &primary.effect {
            Effect::Committed {
                resource: Resource::LlmBudgetUsd,
                charged,
                ..
            }
            | Effect::TaskBudgetSpent { charged, .. } => {
                signals[count] = (Signal::SpendMicroUsd, *charged);
                count += 1;
            }
            _ => {}
        }
        if primary.action == "task.fail" && primary.decision.is_allowed() {
            signals[count] = (Signal::FailedTasks, 1);
            count += 1;
        }
        if let Some(event) = self.observe_signals(fx, actor, &signals[..count]) {
            events.push(event);
        }
    }

    /// Adds to signals of a principal; the quarantine, when that made it anomalous.
    /// Admins (and the system) are watched by people, not quarantined.
    pub(super) fn observe_signals(
        &mut self,
        fx: &mut Effects,
        principal: PrincipalId,
        signals: &[(Signal, u64)],
    ) -> Option<Event> {
        let principals = &self.principals;
        let exempt = || {
            principals
                .get(principal)
                .is_none_or(|p| p.is_admin() || !p.standing || p.kind == PrincipalKind::System)
        };
        let evidence = self.anomaly.add(principal, self.now_ms, signals, exempt)?;
        Some(self.quarantine(fx, principal, evidence))
    }

    /// Quarantines a principal: its tokens may only read, its reservations are
    /// released, its leases revoked (the tasks go back on the board), its worker
    /// sessions end, its queued admissions are dropped.
    fn quarantine(
        &mut self,
        fx: &mut Effects,
        principal: PrincipalId,
        evidence: Evidence,
    ) -> Event {
        let address = self.principals.known(principal).address.clone();
        let why = format!(
            "{address} is quarantined: {} {} in the window, past {}",
            evidence.count,
            evidence.signal.as_str(),
            evidence.threshold
        );
        let held: Vec<ReservationId> = self.reservations_of(principal).map(|r| r.id).collect();
        for reservation in &held {
            self.release(*reservation, QUARANTINE);
        }
        let sessions: Vec<u64> = self
            .workers
            .all()
            .filter(|w| w.principal == principal && w.state == WorkerState::Active)
            .map(|w| w.id)
            .collect();
        let mut revoked = Vec::new();
        for session in &sessions {
            revoked.extend(self.end_session(fx, *session, WorkerState::Left, "quarantined", &why));
        }
        let leased: Vec<crate::TaskAddress> = self
            .tasks
            .all()
            .filter(|t| t.lease.as_ref().is_some_and(|l| l.holder == principal))
            .map(|t| t.address.clone())
            .collect();
        for address in leased {
            self.end_attempt(&address, "quarantined", Some(why.clone()));
            if self.tasks.known(&address).status.is_open() {
                self.set_status(fx, &address, crate::tasks::TaskStatus::Pending, "0.1", &why);
            }
            revoked.push(address);
        }
        for limit in self.limits.all_mut() {
            limit.queue.retain(|queued| queued.actor != principal);
        }
        let quarantine = Quarantine {
            principal,
            since_ms: self.now_ms,
            evidence: evidence.clone(),
            released_reservations: held.len() as u32,
            revoked_leases: revoked.clone(),
            ended_workers: sessions.clone(),
        };
        self.anomaly.quarantine(quarantine);
        let mut event = Event::allowed(
            QUARANTINE,
            address.clone(),
            Effect::Quarantined {
                principal,
                address,
                released_reservations: held.len(),
                revoked_leases: revoked,
                ended_workers: sessions,
            },
        );
        event.reason = Reason::Anomalous {
            evidence: Box::new(evidence),
        };
        event
    }

    /// A human with standing (member or admin) lifts a quarantine.
    pub(super) fn release_quarantine(&mut self, command: &Command, target: PrincipalId) -> Event {
        let actor = &self.principals.known(command.actor);
        if actor.kind != PrincipalKind::Human
            || !actor
                .roles
                .iter()
                .any(|role| matches!(role, Role::Admin | Role::Member))
        {
            return Event::denied(
                RELEASE,
                target.to_string(),
                forbidden("only a human member or admin releases a quarantine"),
            );
        }
        if self.same_lineage(command.actor, target) {
            let message = format!(
                "{} is of the lineage of {}, as principal {target} is: a quarantine is released by someone outside the quarantined lineage",
                actor.address,
                self.lineage_address(actor)
            );
            return Event::denied(RELEASE, target.to_string(), forbidden(message));
        }
        let Some(quarantine) = self.anomaly.release(target) else {
            return Event::denied(
                RELEASE,
                target.to_string(),
                not_found("quarantine of principal", target),
            );
        };
        let address = self.principals.known(target).address.clone();
        Event::allowed(
            RELEASE,
            address.clone(),
            Effect::QuarantineReleased {
                principal: target,
                address,
                quarantined_at_ms: quarantine.since_ms,
            },
        )
    }
}
