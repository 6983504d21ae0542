//! Progressive relaxation: the system's own raise after a stable window, and the
//! rollback of a raise when a monitoring window degrades.

use super::governance::*;
use super::{State, SYSTEM_ADDRESS};
use crate::event::{Effect, Event, Reason};
use crate::governance::{Change, ChangeKind, ProposalState, ProposalTarget, StabilityFigures};
use crate::principal::PrincipalId;

impl State {
    /// The system proposes raising the eligible limit closest to its hard value.
    pub(super) fn propose_relaxation(
        &mut self,
        relaxation: &crate::governance::RelaxationConfig,
        figures: &StabilityFigures,
    ) -> Option<Event> {
        let candidate = relaxation
            .limits
            .iter()
            .filter_map(|name| self.limit(name))
            .filter_map(|limit| limit.spec.hard.map(|hard| (limit, hard)))
            .max_by(|(a, a_hard), (b, b_hard)| {
                // usage / hard, compared exactly; the earlier name wins ties.
                let left = (a.committed_and_reserved() as u128) * (*b_hard as u128);
                let right = (b.committed_and_reserved() as u128) * (*a_hard as u128);
                left.cmp(&right).then_with(|| b.spec.name.cmp(&a.spec.name))
            })?;
        let (limit, hard) = candidate;
        let step = |value: u64| value.saturating_add(relaxation.step.of(value).max(1));
        let target = ProposalTarget::Limit {
            limit: limit.spec.name.clone(),
            soft: limit
                .spec
                .soft
                .map_or(Change::Keep, |soft| Change::Set(step(soft))),
            hard: Change::Set(step(hard)),
        };
        let justification = format!(
            "stable for the window ending {}: {} decisions with {} denials, {} requests with {} errors, {} anomalies; \
             proposing to raise {} by {}",
            figures.window_end_ms,
            figures.decisions,
            figures.denials,
            figures.requests,
            figures.errors,
            figures.anomalies,
            limit.spec.name,
            relaxation.step
        );
        let mut event = self.open_proposal(
            PrincipalId::SYSTEM,
            target,
            ChangeKind::Raise,
            justification,
            true,
        );
        event.reason = Reason::Stable {
            figures: figures.clone(),
        };
        Some(event)
    }

    /// Restores the values a raise replaced, never loosening anything.
    pub(super) fn roll_back(
        &mut self,
        id: u64,
        figures: &StabilityFigures,
        breaches: &[String],
    ) -> Event {
        let proposal = self.governance.known(id).clone();
        let subject = format!("proposal:{id}");
        let entry = self.governance.edit(id);
        entry.state = ProposalState::RolledBack;
        entry.monitor_until_ms = None;
        entry.outcome = Some(format!("rolled back: {}", breaches.join("; ")));
        let effect = match (&proposal.target, proposal.previous) {
            (ProposalTarget::Limit { limit, .. }, Some((soft_before, hard_before))) => {
                let current = self.limit(limit).expect("validated at proposal");
                let values = (
                    tighter(current.spec.soft, soft_before),
                    tighter(current.spec.hard, hard_before),
                );
                self.set_limit_values(
                    id,
                    limit,
                    values,
                    SYSTEM_ADDRESS,
                    format!("rollback of proposal {id}"),
                )
            }
            _ => Effect::ProposalClosed {
                proposal: id,
                state: ProposalState::RolledBack,
            },
        };
        let mut event = Event::allowed(ROLLBACK, subject, effect);
        event.reason = Reason::StabilityDegraded {
            figures: figures.clone(),
            breaches: breaches.to_vec(),
        };
        event
    }
}
