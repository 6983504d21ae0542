//! [`Proposals`]: the part of the state that holds governance: its configuration,
//! every proposal, the times they wait for (reviews ending, brakes expiring), each
//! lineage's recent brakes and the stability window's figures. Its indexes are its
//! own: a proposal's review and a brake's expiry are filed and taken out here only.
//! What a change does to limits, quotas and retention is decided by the state
//! (`governance.rs`, `brakes.rs`, `relaxation.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::NodeHealth;
use crate::governance::{GovernanceConfig, Proposal, ProposalState, StabilityFigures};
use crate::principal::PrincipalId;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proposals {
    /// `[governance]`: the shipped defaults in the empty state, genesis's after.
    config: GovernanceConfig,
    all: BTreeMap<u64, Proposal>,
    last_id: u64,
    /// Proposals in review, by the time their review ends.
    reviews: BTreeSet<(u64, u64)>,
    /// Unconfirmed brakes, by the time their values go back.
    brake_expiries: BTreeSet<(u64, u64)>,
    /// When each lineage applied its brakes of the last hour.
    recent_brakes: BTreeMap<PrincipalId, Vec<u64>>,
    /// Figures of the current stability window.
    stability: StabilityFigures,
}

impl Proposals {
    /// Governance as genesis configured it; the stability window starts at
    /// `at_ms`'s window.
    pub(super) fn configure(&mut self, config: GovernanceConfig, at_ms: u64) {
        if let Some(relaxation) = &config.relaxation {
            self.stability.window_start_ms = at_ms - at_ms % relaxation.window_ms.max(1);
        }
        self.config = config;
    }

    #[inline]
    pub(super) fn config(&self) -> &GovernanceConfig {
        &self.config
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Proposal> {
        self.all.values()
    }

    pub(super) fn get(&self, id: u64) -> Option<&Proposal> {
        self.all.get(&id)
    }

    /// Proposal `id`, which the caller knows exists (it was listed, or checked).
    pub(super) fn known(&self, id: u64) -> &Proposal {
        &self.all[&id]
    }

    /// Proposal `id` to change, which the caller knows exists. Never its indexed
    /// times (`review_ends_at_ms`, `brake_expires_at_ms`): those change only
    /// through [`Proposals::review`], [`Proposals::close_review`],
    /// [`Proposals::brake_until`] and [`Proposals::unbrake`] (the invariants find
    /// any other change out).
    pub(super) fn edit(&mut self, id: u64) -> &mut Proposal {
        self.all.get_mut(&id).expect("a known proposal")
    }

    /// Proposals are numbered 1, 2, 3... in the order they are made.
    pub(super) fn take_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Files a new proposal.
    pub(super) fn file(&mut self, proposal: Proposal) {
        self.all.insert(proposal.id, proposal);
    }

    /// Proposal `id` is in review until its `review_ends_at_ms`.
    pub(super) fn review(&mut self, id: u64) {
        let ends_at_ms = self.known(id).review_ends_at_ms;
        self.reviews.insert((ends_at_ms, id));
    }

    /// The proposals in review.
    pub(super) fn in_review(&self) -> impl Iterator<Item = &Proposal> {
        self.reviews.iter().map(|(_, id)| &self.all[id])
    }

    /// Takes `id` out of review (vetoed); its state is the caller's to set.
    pub(super) fn close_review(&mut self, id: u64) {
        if let Some(proposal) = self.all.get(&id) {
            self.reviews.remove(&(proposal.review_ends_at_ms, id));
        }
    }

    /// The first proposal whose review ended by `now_ms`, taken out of review.
    pub(super) fn review_due(&mut self, now_ms: u64) -> Option<u64> {
        let &(ends_at_ms, id) = self.reviews.first()?;
        if ends_at_ms > now_ms {
            return None;
        }
        self.reviews.remove(&(ends_at_ms, id));
        Some(id)
    }

    /// Brake `id`'s values go back at `at_ms` unless the other side confirms it.
    pub(super) fn brake_until(&mut self, id: u64, at_ms: u64) {
        self.edit(id).brake_expires_at_ms = Some(at_ms);
        self.brake_expiries.insert((at_ms, id));
    }

    /// Brake `id` expires no more (confirmed, or expired): when it was to.
    pub(super) fn unbrake(&mut self, id: u64) -> Option<u64> {
        let at_ms = self.edit(id).brake_expires_at_ms.take()?;
        self.brake_expiries.remove(&(at_ms, id));
        Some(at_ms)
    }

    /// The first brake whose time ran out by `now_ms`.
    pub(super) fn brake_due(&self, now_ms: u64) -> Option<u64> {
        let &(expires_at_ms, id) = self.brake_expiries.first()?;
        (expires_at_ms <= now_ms).then_some(id)
    }

    /// The next time something is due: a review's end, a brake's expiry, the
    /// stability window's end.
    #[inline]
    pub(super) fn next_due_ms(&self) -> Option<u64> {
        let review = self.reviews.first().map(|(at_ms, _)| *at_ms);
        let brake = self.brake_expiries.first().map(|(at_ms, _)| *at_ms);
        let window = self
            .config
            .relaxation
            .as_ref()
            .map(|relaxation| self.stability.window_start_ms + relaxation.window_ms);
        [review, brake, window].into_iter().flatten().min()
    }

    /// `lineage` applied a brake at `at_ms`.
    pub(super) fn note_brake(&mut self, lineage: PrincipalId, at_ms: u64) {
        self.recent_brakes.entry(lineage).or_default().push(at_ms);
    }

    /// When `lineage` applied its brakes of the last hour, after forgetting those
    /// older than `since_ms`.
    pub(super) fn brakes_since(&mut self, lineage: PrincipalId, since_ms: u64) -> &[u64] {
        let times = self.recent_brakes.entry(lineage).or_default();
        times.retain(|at| *at > since_ms);
        times
    }

    pub(super) fn stability(&self) -> &StabilityFigures {
        &self.stability
    }

    #[inline]
    pub(super) fn add_health(&mut self, health: &NodeHealth) {
        self.stability.requests += health.requests;
        self.stability.errors += health.errors;
        self.stability.anomalies += health.anomalies;
    }

    #[inline]
    pub(super) fn count_decision(&mut self, denied: bool) {
        self.stability.decisions += 1;
        if denied {
            self.stability.denials += 1;
        }
    }

    /// Ends the stability window (`window_ms` long) when `now_ms` is past it: its
    /// figures, and a new window from `now_ms`'s.
    pub(super) fn end_window(&mut self, now_ms: u64, window_ms: u64) -> Option<StabilityFigures> {
        let window_end_ms = self.stability.window_start_ms + window_ms;
        if now_ms < window_end_ms {
            return None;
        }
        let mut figures = std::mem::take(&mut self.stability);
        figures.window_end_ms = window_end_ms;
        self.stability.window_start_ms = now_ms - now_ms % window_ms.max(1);
        Some(figures)
    }

    /// Its invariants: every review and brake expiry filed for a proposal that
    /// waits for it, and every waiting brake filed.
    pub(super) fn check(&self) -> Result<(), String> {
        for (at_ms, id) in &self.reviews {
            let proposal = self
                .all
                .get(id)
                .ok_or(format!("review of unknown proposal {id}"))?;
            if proposal.state != ProposalState::Review || proposal.review_ends_at_ms != *at_ms {
                return Err(format!("proposal {id} is not in review until {at_ms}"));
            }
        }
        for (at_ms, id) in &self.brake_expiries {
            let proposal = self
                .all
                .get(id)
                .ok_or(format!("expiry of unknown brake {id}"))?;
            if proposal.brake_expires_at_ms != Some(*at_ms) {
                return Err(format!("brake {id} does not expire at {at_ms}"));
            }
        }
        let waiting = self
            .all
            .values()
            .filter(|p| p.brake_expires_at_ms.is_some())
            .count();
        if waiting != self.brake_expiries.len() {
            return Err("a brake waits for an expiry that is not due".into());
        }
        Ok(())
    }
}
