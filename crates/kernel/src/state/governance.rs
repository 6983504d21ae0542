//! The kernel's side of governance: proposals, votes, decisions at the end of the
//! review period, stability windows and rollback.
//! Brakes (applied at once) live in `brakes.rs`, relaxation in `relaxation.rs`.

use super::Effects;
use super::{forbidden, invalid, not_found, State};
use crate::command::{Command, NodeHealth};
use crate::event::{Decision, Effect, Event, Reason};
use crate::governance::{
    ChangeKind, Proposal, ProposalState, ProposalTarget, StabilityFigures, Tally, Vote, VoteChoice,
};
use crate::principal::{PrincipalId, PrincipalKind};

pub(super) const PROPOSE: &str = "governance.propose";
pub(super) const VOTE: &str = "governance.vote";
pub(super) const DECIDE: &str = "governance.decide";
pub(super) const ROLLBACK: &str = "governance.rollback";
pub(super) const MONITORED: &str = "governance.monitoring_ended";
pub(super) const BRAKE_EXPIRED: &str = "governance.brake_expired";
pub(super) const BRAKE_CONFIRMED: &str = "governance.brake_confirmed";
/// The window over which a principal's brakes are counted.
pub(super) const BRAKE_RATE_WINDOW_MS: u64 = 3_600_000;

/// Whether `new` is looser than `current` (`None` is unlimited).
pub(super) fn looser(new: Option<u64>, current: Option<u64>) -> bool {
    match (new, current) {
        (None, Some(_)) => true,
        (Some(new), Some(current)) => new > current,
        _ => false,
    }
}

/// The tighter of two values (`None` is unlimited).
pub(super) fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(value), None) | (None, Some(value)) => Some(value),
        (None, None) => None,
    }
}

impl State {
    /// Every proposal, oldest first.
    pub fn proposals(&self) -> impl Iterator<Item = &Proposal> {
        self.governance.all()
    }

    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.governance.get(id)
    }

    pub fn governance_config(&self) -> &crate::governance::GovernanceConfig {
        self.governance.config()
    }

    /// Figures of the stability window in progress.
    pub fn stability(&self) -> &StabilityFigures {
        self.governance.stability()
    }

    pub(super) fn add_health(&mut self, health: &NodeHealth) {
        self.governance.add_health(health);
    }

    pub(super) fn count_decision(&mut self, primary: &Event) {
        self.governance
            .count_decision(primary.decision == Decision::Denied);
    }

    pub(super) fn governance_next_due_ms(&self) -> Option<u64> {
        self.governance.next_due_ms()
    }

    /// Decides proposals whose review ended and closes a finished stability window.
    pub(super) fn process_governance_due(&mut self, events: &mut Vec<Event>) {
        while let Some(id) = self.governance.review_due(self.now_ms) {
            events.push(self.decide_proposal(id));
        }
        while let Some(id) = self.governance.brake_due(self.now_ms) {
            events.push(self.expire_brake(id));
        }
        let Some(relaxation) = self.governance.config().relaxation.clone() else {
            return;
        };
        let Some(figures) = self
            .governance
            .end_window(self.now_ms, relaxation.window_ms)
        else {
            return;
        };
        let breaches = figures.breaches(&relaxation);

        let monitored: Vec<u64> = self
            .governance
            .all()
            .filter(|p| p.state == ProposalState::Applied && p.monitor_until_ms.is_some())
            .map(|p| p.id)
            .collect();
        for id in &monitored {
            if !breaches.is_empty() {
                events.push(self.roll_back(*id, &figures, &breaches));
            } else if self
                .governance
                .known(*id)
                .monitor_until_ms
                .is_some_and(|until| self.now_ms >= until)
            {
                let proposal = self.governance.edit(*id);
                proposal.monitor_until_ms = None;
                let subject = format!("proposal:{id}");
                let mut event = Event::allowed(MONITORED, subject, Effect::None);
                event.reason = Reason::Stable {
                    figures: figures.clone(),
                };
                events.push(event);
            }
        }
        let busy = self.governance.all().any(|p| {
            (p.automatic && p.state == ProposalState::Review) || p.monitor_until_ms.is_some()
        });
        if relaxation.propose
            && breaches.is_empty()
            && figures.decisions >= relaxation.min_decisions
            && !busy
        {
            if let Some(event) = self.propose_relaxation(&relaxation, &figures) {
                events.push(event);
            }
        }
    }

    pub(super) fn propose(
        &mut self,
        command: &Command,
        target: &ProposalTarget,
        brake_only: bool,
    ) -> Event {
        let proposer = self.principals.known(command.actor).clone();
        let subject = target.subject();
        let kind = match self.classify(target) {
            Ok(kind) => kind,
            Err(reason) => return Event::denied(PROPOSE, subject, reason),
        };
        if brake_only && kind != ChangeKind::Brake {
            return Event::denied(
                PROPOSE,
                subject,
                invalid("a brake only lowers values; anything that raises or removes is a proposal for a vote"),
            );
        }
        let governance = self.governance.config();
        let side_ok = matches!(
            proposer.kind,
            PrincipalKind::Human | PrincipalKind::Ai | PrincipalKind::System
        );
        if kind == ChangeKind::Brake {
            return self.brake(command, target, subject, &proposer, side_ok);
        }
        if !side_ok {
            return Event::denied(
                PROPOSE,
                subject,
                forbidden("only humans and AIs propose changes"),
            );
        }
        let open_max = governance.open_proposals_per_principal_max;
        // Counted per lineage, like every count of people.
        let root = self.lineage_root(command.actor);
        let open = self
            .governance
            .in_review()
            .filter(|proposal| self.lineage_root(proposal.proposer) == root)
            .count();
        if open >= open_max as usize {
            return Event::denied(PROPOSE, subject, Reason::TooManyProposals { max: open_max });
        }
        if governance.rule(kind).is_none() {
            return Event::denied(
                PROPOSE,
                subject,
                forbidden(format!(
                    "no rule for a {} in [governance.rules]: such changes cannot pass",
                    kind.as_str()
                )),
            );
        }
        self.open_proposal(
            command.actor,
            target.clone(),
            kind,
            command.justification.clone(),
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_proposal(
        &self,
        id: u64,
        proposer_address: &str,
        proposer: PrincipalId,
        target: ProposalTarget,
        kind: ChangeKind,
        justification: String,
        automatic: bool,
    ) -> Proposal {
        Proposal {
            id,
            proposer,
            proposer_address: proposer_address.to_string(),
            kind,
            target,
            justification,
            created_at_ms: self.now_ms,
            review_ends_at_ms: self.now_ms,
            state: ProposalState::Review,
            votes: Default::default(),
            outcome: None,
            tally: None,
            decided_at_ms: None,
            previous: None,
            monitor_until_ms: None,
            automatic,
            brake_expires_at_ms: None,
            applied: None,
            confirmed_by: None,
        }
    }

    pub(super) fn open_proposal(
        &mut self,
        proposer: PrincipalId,
        target: ProposalTarget,
        kind: ChangeKind,
        justification: String,
        automatic: bool,
    ) -> Event {
        let id = self.governance.take_id();
        let governance = self.governance.config();
        let review_ms = governance
            .rule(kind)
            .and_then(|r| r.review_period_ms)
            .unwrap_or(governance.review_period_ms);
        let address = self.principals.known(proposer).address.clone();
        let mut proposal = self.new_proposal(
            id,
            &address,
            proposer,
            target,
            kind,
            justification,
            automatic,
        );
        proposal.review_ends_at_ms = self.now_ms.saturating_add(review_ms);
        let subject = proposal.target.subject();
        let effect = Effect::ProposalOpened {
            proposal: id,
            change: kind,
            review_ends_at_ms: proposal.review_ends_at_ms,
        };
        self.governance.file(proposal);
        self.governance.review(id);
        Event::allowed(PROPOSE, subject, effect)
    }

    /// Puts a proposal's values in force and remembers the previous ones.
    pub(super) fn apply_proposal(&mut self, id: u64) -> Effect {
        let proposal = self.governance.known(id).clone();
        let via = format!("proposal {id}");
        match &proposal.target {
            ProposalTarget::Limit { limit, soft, hard } => {
                let previous = {
                    let entry = self.limit(limit).expect("validated at proposal");
                    (entry.spec.soft, entry.spec.hard)
                };
                self.governance.edit(id).previous = Some(previous);
                // A brake applied since may have left soft above the new hard: the
                // values are clamped where they are set.
                self.set_limit_values(
                    id,
                    limit,
                    (soft.applied_to(previous.0), hard.applied_to(previous.1)),
                    &proposal.proposer_address,
                    via,
                )
            }
            ProposalTarget::QuotaDefault {
                kind,
                resource,
                amount,
            } => {
                let quotas = &mut self.quotas;
                let current = quotas.default_quota(*kind, *resource);
                let new = amount.applied_to(current);
                quotas
                    .defaults
                    .entry(*kind)
                    .or_default()
                    .insert(*resource, new);
                self.governance.edit(id).previous = Some((current, None));
                Effect::QuotaDefaultChanged {
                    proposal: id,
                    kind: *kind,
                    resource: *resource,
                    amount: new,
                    previous: current,
                }
            }
            ProposalTarget::Retention(rule) => {
                let previous = std::mem::replace(&mut self.retention, rule.clone());
                self.governance.edit(id).previous = Some((
                    Some(previous.keep_finished),
                    Some(previous.keep_finished_for_ms),
                ));
                Effect::RetentionChanged {
                    proposal: id,
                    rule: rule.clone(),
                    previous,
                }
            }
        }
    }

    /// Ends the review: applies the proposal if both sides agreed.
    pub(super) fn decide_proposal(&mut self, id: u64) -> Event {
        let proposal = self.governance.known(id).clone();
        let governance = self.governance.config().clone();
        let rule = governance
            .rule(proposal.kind)
            .expect("a rule existed at proposal")
            .clone();
        let tally = Tally::count(&proposal.votes, &rule);
        let subject = format!("proposal:{id}");
        if tally.passes() {
            let effect = self.apply_proposal(id);
            let monitor_until_ms = match (&proposal.target, &governance.relaxation) {
                (ProposalTarget::Limit { .. }, Some(relaxation)) => {
                    Some(self.now_ms + relaxation.monitoring_window_ms)
                }
                _ => None,
            };
            let entry = self.governance.edit(id);
            entry.state = ProposalState::Applied;
            entry.monitor_until_ms = monitor_until_ms;
            entry.tally = Some(tally.clone());
            entry.decided_at_ms = Some(self.now_ms);
            entry.outcome = Some("both sides reached their quorum and approval threshold".into());
            let mut event = Event::allowed(DECIDE, subject, effect);
            event.reason = Reason::ConsensusReached {
                tally: Box::new(tally),
            };
            event
        } else {
            let entry = self.governance.edit(id);
            entry.state = ProposalState::Rejected;
            entry.tally = Some(tally.clone());
            entry.decided_at_ms = Some(self.now_ms);
            entry.outcome = Some(describe_shortfall(&tally));
            let mut event = Event::denied(
                DECIDE,
                subject,
                Reason::ConsensusNotReached {
                    tally: Box::new(tally),
                },
            );
            event.effect = Effect::ProposalClosed {
                proposal: id,
                state: ProposalState::Rejected,
            };
            event
        }
    }

    pub(super) fn vote(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        id: u64,
        choice: VoteChoice,
    ) -> Event {
        let subject = format!("proposal:{id}");
        let voter = self.principals.known(command.actor).clone();
        let Some(proposal) = self.governance.get(id) else {
            return Event::denied(VOTE, subject, not_found("proposal", id));
        };
        // Only humans and AIs vote, on the side of their lineage's root: an AI
        // spawned by a human votes with the human, as one.
        let side = match (voter.kind, self.lineage_side(&voter)) {
            (PrincipalKind::Human | PrincipalKind::Ai, Some(side)) => side,
            _ => return Event::denied(VOTE, subject, forbidden("only humans and AIs vote")),
        };
        if let Err(reason) = self.one_vote_per_lineage(proposal, &voter) {
            return Event::denied(VOTE, subject, reason);
        }
        if proposal.kind == ChangeKind::Brake && proposal.brake_expires_at_ms.is_some() {
            return self.vote_on_brake(fx, command, id, choice, side);
        }
        if proposal.state != ProposalState::Review {
            return Event::denied(
                VOTE,
                subject,
                invalid(format!(
                    "proposal {id} is {}; votes are closed",
                    proposal.state.as_str()
                )),
            );
        }
        if self.now_ms >= proposal.review_ends_at_ms {
            return Event::denied(
                VOTE,
                subject,
                invalid(format!("the review of proposal {id} has ended")),
            );
        }
        let rule = self
            .governance
            .config()
            .rule(proposal.kind)
            .expect("a rule existed at proposal");
        if choice == VoteChoice::Veto
            && !voter
                .roles
                .iter()
                .any(|role| rule.veto_roles.contains(role))
        {
            return Event::denied(
                VOTE,
                subject,
                forbidden("this principal's roles cannot veto this kind of change"),
            );
        }
        let lineage = self.lineage_address(&voter);
        let now_ms = self.now_ms;
        let proposal = self.governance.edit(id);
        proposal.votes.insert(
            command.actor,
            Vote::cast(command, &voter, &lineage, choice, side),
        );
        if choice == VoteChoice::Veto {
            proposal.state = ProposalState::Vetoed;
            proposal.decided_at_ms = Some(now_ms);
            proposal.outcome = Some(format!("vetoed by {}", voter.address));
            self.governance.close_review(id);
            let mut closed = Event::denied(
                DECIDE,
                subject.clone(),
                Reason::Vetoed {
                    by: voter.address.clone(),
                },
            );
            closed.effect = Effect::ProposalClosed {
                proposal: id,
                state: ProposalState::Vetoed,
            };
            fx.consequences.push(closed);
        }
        State::vote_recorded(subject, id, choice)
    }
}

impl State {
    /// Puts `soft` and `hard` in force on `limit` (soft never above hard), recorded
    /// as set by `by` via `via`; the effect, with the values replaced.
    pub(super) fn set_limit_values(
        &mut self,
        proposal: u64,
        limit: &str,
        values: (Option<u64>, Option<u64>),
        by: &str,
        via: String,
    ) -> Effect {
        let now_ms = self.now_ms;
        let entry = self.limit_mut(limit).expect("validated at proposal");
        let previous = (entry.spec.soft, entry.spec.hard);
        let (mut soft, hard) = values;
        if let (Some(soft_value), Some(hard_value)) = (soft, hard) {
            soft = Some(soft_value.min(hard_value));
        }
        entry.spec.soft = soft;
        entry.spec.hard = hard;
        entry.set_by = by.to_string();
        entry.set_at_ms = now_ms;
        entry.set_via = via;
        Effect::LimitChanged {
            proposal,
            limit: limit.to_string(),
            soft,
            hard,
            previous_soft: previous.0,
            previous_hard: previous.1,
        }
    }

    /// The answer to a vote that was recorded.
    pub(super) fn vote_recorded(subject: String, proposal: u64, choice: VoteChoice) -> Event {
        Event::allowed(VOTE, subject, Effect::VoteRecorded { proposal, choice })
    }
}

fn describe_shortfall(tally: &Tally) -> String {
    let mut missing = Vec::new();
    for (name, side) in [("human", &tally.human), ("AI", &tally.ai)] {
        if !side.quorum_met {
            missing.push(format!(
                "the {name} side cast {} of the {} votes its quorum needs",
                side.approve + side.reject + side.abstain,
                side.quorum
            ));
        } else if !side.approval_met {
            missing.push(format!(
                "the {name} side approved {} against {} rejections, short of {}",
                side.approve, side.reject, side.approval
            ));
        }
    }
    missing.join("; ")
}
