//! Brakes: applied at once, the floor a brake may not pass, the bound on one
//! principal's brakes, the other side's confirmation, and the expiry that restores
//! what an unconfirmed brake changed.

use super::governance::*;
use super::Effects;
use super::{forbidden, invalid, State, SYSTEM_ADDRESS};
use crate::command::Command;
use crate::event::{Effect, Event, Reason};
use crate::governance::{ChangeKind, ProposalState, ProposalTarget, Side, Vote, VoteChoice};
use crate::principal::{PrincipalId, PrincipalKind};

impl State {
    /// A brake: applied at once when its proposer may brake (a brake role, or the
    /// system), within the bound on brakes and above the floor; it expires unless the
    /// other side confirms it.
    pub(super) fn brake(
        &mut self,
        command: &Command,
        target: &ProposalTarget,
        subject: String,
        proposer: &crate::principal::Principal,
        side_ok: bool,
    ) -> Event {
        let governance = self.governance.config();
        let may_brake = proposer.kind == PrincipalKind::System
            || (side_ok
                && proposer
                    .roles
                    .iter()
                    .any(|role| governance.brake_roles.contains(role)));
        if !may_brake {
            return Event::denied(
                PROPOSE,
                subject,
                forbidden("braking needs a human or AI with a brake role"),
            );
        }
        let brake_ttl_ms = governance.brake_ttl_ms;
        if let Err(reason) = self.check_brake(command.actor, target) {
            return Event::denied(PROPOSE, subject, reason);
        }
        let id = self.governance.take_id();
        let mut proposal = self.new_proposal(
            id,
            &proposer.address,
            command.actor,
            target.clone(),
            ChangeKind::Brake,
            command.justification.clone(),
            false,
        );
        proposal.review_ends_at_ms = self.now_ms;
        self.governance.file(proposal);
        let effect = self.apply_proposal(id);
        let applied = match &effect {
            Effect::LimitChanged { soft, hard, .. } => Some((*soft, *hard)),
            Effect::QuotaDefaultChanged { amount, .. } => Some((*amount, None)),
            _ => None,
        };
        let expires_at_ms = brake_ttl_ms.map(|ttl| self.now_ms.saturating_add(ttl));
        if command.actor != PrincipalId::SYSTEM {
            let lineage = self.lineage_root(command.actor);
            self.governance.note_brake(lineage, self.now_ms);
        }
        if let Some(at_ms) = expires_at_ms {
            self.governance.brake_until(id, at_ms);
        }
        let now_ms = self.now_ms;
        let proposal = self.governance.edit(id);
        proposal.state = ProposalState::Applied;
        proposal.decided_at_ms = Some(now_ms);
        proposal.applied = applied;
        proposal.outcome = Some(match expires_at_ms {
            Some(_) => "a brake applies at once; it holds until its expiry unless the other side confirms it".into(),
            None => "a brake applies at once".into(),
        });
        Event::allowed(PROPOSE, subject, effect)
    }

    /// Whether `actor` may brake now (at most `brakes_per_hour_max` an hour) and the
    /// brake keeps every value at or above the limit's floor.
    pub(super) fn check_brake(
        &mut self,
        actor: PrincipalId,
        target: &ProposalTarget,
    ) -> Result<(), Reason> {
        if let ProposalTarget::Limit { limit, soft, hard } = target {
            let current = self.limit(limit).expect("validated at proposal");
            let floor = current.spec.brake_floor;
            for value in [
                soft.applied_to(current.spec.soft),
                hard.applied_to(current.spec.hard),
            ]
            .into_iter()
            .flatten()
            {
                if value < floor {
                    return Err(Reason::BrakeFloor {
                        limit: limit.clone(),
                        floor,
                        requested: value,
                    });
                }
            }
        }
        if actor == PrincipalId::SYSTEM {
            return Ok(());
        }
        let max = self.governance.config().brakes_per_hour_max;
        let since = self.now_ms.saturating_sub(BRAKE_RATE_WINDOW_MS);
        // Brakes are counted per lineage: spawning children multiplies no one's brakes.
        let lineage = self.lineage_root(actor);
        let recent = self.governance.brakes_since(lineage, since);
        if recent.len() >= max as usize {
            let oldest = recent.first().copied().unwrap_or(self.now_ms);
            return Err(Reason::BrakeRate {
                max,
                window_ms: BRAKE_RATE_WINDOW_MS,
                retry_at_ms: oldest.saturating_add(BRAKE_RATE_WINDOW_MS),
            });
        }
        Ok(())
    }

    /// Puts back what an unconfirmed brake changed, where its values are still in
    /// force (a change made since stands).
    pub(super) fn expire_brake(&mut self, id: u64) -> Event {
        let proposal = self.governance.known(id).clone();
        let subject = format!("proposal:{id}");
        let ttl_ms = self
            .governance
            .unbrake(id)
            .map_or(0, |at| at.saturating_sub(proposal.created_at_ms));
        let entry = self.governance.edit(id);
        entry.state = ProposalState::Expired;
        entry.outcome =
            Some("the other side did not confirm it in time: the earlier values are back".into());
        let (previous, applied) = (
            proposal.previous.unwrap_or((None, None)),
            proposal.applied.unwrap_or((None, None)),
        );
        let effect = match &proposal.target {
            ProposalTarget::Limit { limit, .. } => {
                let now = {
                    let entry = self.limit(limit).expect("validated at proposal");
                    (entry.spec.soft, entry.spec.hard)
                };
                let hard = if now.1 == applied.1 {
                    previous.1
                } else {
                    now.1
                };
                let soft = if now.0 == applied.0 {
                    previous.0
                } else {
                    now.0
                };
                self.set_limit_values(
                    id,
                    limit,
                    (soft, hard),
                    SYSTEM_ADDRESS,
                    format!("expiry of brake {id}"),
                )
            }
            // Never a brake: classified as a change for a vote either way.
            ProposalTarget::Retention(_) => {
                return Event::denied(
                    BRAKE_EXPIRED,
                    subject,
                    invalid("a retention change is never a brake"),
                )
            }
            ProposalTarget::QuotaDefault { kind, resource, .. } => {
                let quotas = &mut self.quotas;
                let now = quotas.default_quota(*kind, *resource);
                let restored = if now == applied.0 { previous.0 } else { now };
                quotas
                    .defaults
                    .entry(*kind)
                    .or_default()
                    .insert(*resource, restored);
                Effect::QuotaDefaultChanged {
                    proposal: id,
                    kind: *kind,
                    resource: *resource,
                    amount: restored,
                    previous: now,
                }
            }
        };
        let mut event = Event::allowed(BRAKE_EXPIRED, subject, effect);
        event.reason = Reason::BrakeExpired {
            proposal: id,
            applied_at_ms: proposal.created_at_ms,
            ttl_ms,
        };
        event
    }

    /// A vote on a brake that still waits for confirmation: an approval from the
    /// other side (any side, for the system's brakes) makes it hold until changed.
    pub(super) fn vote_on_brake(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        id: u64,
        choice: VoteChoice,
        side: Side,
    ) -> Event {
        let subject = format!("proposal:{id}");
        let voter = self.principals.known(command.actor).clone();
        let proposal = self.governance.known(id).clone();
        if proposal.proposer != PrincipalId::SYSTEM
            && self.same_lineage(command.actor, proposal.proposer)
        {
            return Event::denied(
                VOTE,
                subject,
                forbidden(format!(
                    "{} is of the lineage of {}, which applied brake {id}: the other side confirms a brake, never the braker's own lineage",
                    voter.address,
                    self.lineage_address(&voter)
                )),
            );
        }
        if choice == VoteChoice::Veto {
            return Event::denied(
                VOTE,
                subject,
                invalid("a brake is not vetoed: let it expire, or propose new values"),
            );
        }
        let proposer_side = self.lineage_side(self.principals.known(proposal.proposer));
        let lineage = self.lineage_address(&voter);
        let entry = self.governance.edit(id);
        entry.votes.insert(
            command.actor,
            Vote::cast(command, &voter, &lineage, choice, side),
        );
        if choice == VoteChoice::Approve && proposer_side != Some(side) {
            entry.confirmed_by = Some(voter.address.clone());
            entry.outcome = Some(format!(
                "confirmed by {}: it holds until changed",
                voter.address
            ));
            self.governance.unbrake(id);
            let mut confirmed = Event::allowed(BRAKE_CONFIRMED, subject.clone(), Effect::None);
            confirmed.reason = Reason::BrakeConfirmed {
                proposal: id,
                by: voter.address.clone(),
            };
            fx.consequences.push(confirmed);
        }
        State::vote_recorded(subject, id, choice)
    }
}
