//! Lineages: one independent principal, one voice. A principal and everything it
//! spawned form one lineage, rooted at the nearest principal in its ancestry that an
//! admin or genesis created ([`Principal::root`], fixed at creation). Whatever counts
//! sides or people (votes and quorums, brake confirmation, two-sided grant approval,
//! quarantine release) counts a lineage once, on its root's side, and never lets a
//! lineage confirm or approve its own request: a human who spawns two AIs has one
//! vote, on the human side, not three on both.

use super::State;
use crate::governance::Side;
use crate::principal::{Principal, PrincipalId, PrincipalKind};

impl State {
    /// The root of `id`'s lineage (`id` itself when unknown).
    pub fn lineage_root(&self, id: PrincipalId) -> PrincipalId {
        self.principals
            .get(&id)
            .map_or(id, |principal| principal.root)
    }

    /// The side `principal`'s lineage counts on: its root's kind, when that is a
    /// human or an AI.
    pub fn lineage_side(&self, principal: &Principal) -> Option<Side> {
        let root_kind = self
            .principals
            .get(&principal.root)
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
            .get(&principal.root)
            .map_or_else(|| principal.address.clone(), |root| root.address.clone())
    }

    /// Whether `a` and `b` are of one lineage.
    pub(super) fn same_lineage(&self, a: PrincipalId, b: PrincipalId) -> bool {
        self.lineage_root(a) == self.lineage_root(b)
    }
}
