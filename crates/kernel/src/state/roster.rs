//! [`Roster`]: the principals, a part of the state with its fields its own: each
//! by id, and the next id to give. Who may create, spawn or remove a principal,
//! and its address, quotas and counts, are the state's (`principals.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::principal::{Principal, PrincipalId};

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Roster {
    next_id: u64,
    all: BTreeMap<PrincipalId, Principal>,
}

impl Roster {
    #[inline]
    pub(super) fn get(&self, id: PrincipalId) -> Option<&Principal> {
        self.all.get(&id)
    }

    /// Principal `id`, which the caller knows exists (every command's actor was
    /// checked to exist; principals are never forgotten, only removed from
    /// standing).
    #[inline]
    pub(super) fn known(&self, id: PrincipalId) -> &Principal {
        &self.all[&id]
    }

    /// Principal `id` to change: never its id or address (by which it is found).
    pub(super) fn edit(&mut self, id: PrincipalId) -> Option<&mut Principal> {
        self.all.get_mut(&id)
    }

    pub(super) fn contains(&self, id: PrincipalId) -> bool {
        self.all.contains_key(&id)
    }

    /// Every principal, by id.
    pub(super) fn all(&self) -> impl Iterator<Item = &Principal> {
        self.all.values()
    }

    /// The id the next principal gets (taken).
    pub(super) fn take_id(&mut self) -> PrincipalId {
        let id = PrincipalId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The first id given after genesis's own principals.
    pub(super) fn start_ids_at(&mut self, next_id: u64) {
        self.next_id = next_id;
    }

    pub(super) fn add(&mut self, principal: Principal) {
        self.all.insert(principal.id, principal);
    }
}
