//! Lineages: one independent principal, one voice. A principal and everything it
//! spawned form one lineage, rooted at the nearest principal in its ancestry that an
//! admin or genesis created ([`Principal::root`], fixed at creation). Whatever counts
//! sides or people (votes and quorums, brake confirmation, two-sided grant approval,
//! quarantine release) counts a lineage once, on its root's side, and never lets a
//! lineage confirm or approve its own request: a human who spawns two AIs has one
//! vote, on the human side, not three on both.

use super::{invalid, State};
use crate::event::Reason;
use crate::governance::{Proposal, Side};
use crate::principal::{Principal, PrincipalId, PrincipalKind};

impl State {
    /// The root of `id`'s lineage (`id` itself when unknown).
    pub fn lineage_root(&self, id: PrincipalId) -> PrincipalId {
        self.principals
            .get(id)
            .map_or(id, |principal| principal.root)
    }

    /// The side `principal`'s lineage counts on: its root's kind, when that is a
    /// human or an AI.
    pub fn lineage_side(&self, principal: &Principal) -> Option<Side> {
        let root_kind = self
            .principals
            .get(principal.root)
            .map_or(principal.kind, |root| root.kind);
        match root_kind {
            PrincipalKind::Human => Some(Side::Human),
            PrincipalKind::Ai => Some(Side::Ai),
            _ => None,
        }
    }

    /// The address of `principal`'s lineage root.
    pub(super) fn lineage_address(&self, principal: &Principal) -> String {
        self.principals
            .get(principal.root)
            .map_or_else(|| principal.address.clone(), |root| root.address.clone())
    }

    /// Whether `a` and `b` are of one lineage.
    pub(super) fn same_lineage(&self, a: PrincipalId, b: PrincipalId) -> bool {
        self.lineage_root(a) == self.lineage_root(b)
    }

    /// A lineage has one vote on a proposal: refused, naming the vote already cast,
    /// when the voter or anyone of its lineage voted.
    pub(super) fn one_vote_per_lineage(
        &self,
        proposal: &Proposal,
        voter: &Principal,
    ) -> Result<(), Reason> {
        let Some(cast) = proposal.votes.values().find(|vote| vote.root == voter.root) else {
            return Ok(());
        };
        let message = if cast.address == voter.address {
            format!(
                "{} already voted on proposal {}",
                voter.address, proposal.id
            )
        } else {
            format!(
                "{} is of the lineage of {}, which already voted on proposal {}: {} cast `{}`; a lineage (a principal and everything it spawned) has one vote",
                voter.address,
                cast.lineage,
                proposal.id,
                cast.address,
                cast.choice.as_str()
            )
        };
        Err(invalid(message))
    }
}
