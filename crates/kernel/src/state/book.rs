//! [`Book`]: the part of the state that holds the ledger's figures: every
//! principal's balance of each resource, the open reservations and holds, the
//! times they expire, and how many each principal has open. Its indexes are its
//! own: a reservation is filed, held, expired and forgotten here only. What a
//! reservation may take (the quota chain, the system limits) is decided by the
//! state (`ledger.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ledger::{Balance, Reservation, ReservationId, ReservationState, Resource};
use crate::principal::PrincipalId;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Book {
    balances: BTreeMap<(PrincipalId, Resource), Balance>,
    reservations: BTreeMap<ReservationId, Reservation>,
    /// Reserved (not held) reservations in the order their time runs out.
    expiries: BTreeSet<(u64, ReservationId)>,
    /// Open reservations and holds per principal (none: no entry).
    open: BTreeMap<PrincipalId, u32>,
}

impl Book {
    #[inline]
    pub(super) fn balance(&self, principal: PrincipalId, resource: Resource) -> Option<&Balance> {
        self.balances.get(&(principal, resource))
    }

    /// A balance to change (a balance is indexed by nothing).
    #[inline]
    pub(super) fn balance_mut(
        &mut self,
        principal: PrincipalId,
        resource: Resource,
    ) -> Option<&mut Balance> {
        self.balances.get_mut(&(principal, resource))
    }

    /// A balance to change, made empty when there was none.
    #[inline]
    pub(super) fn balance_or_new(
        &mut self,
        principal: PrincipalId,
        resource: Resource,
    ) -> &mut Balance {
        self.balances.entry((principal, resource)).or_default()
    }

    /// Every balance.
    pub(super) fn balances(&self) -> impl Iterator<Item = (&(PrincipalId, Resource), &Balance)> {
        self.balances.iter()
    }

    #[inline]
    pub(super) fn reservation(&self, id: ReservationId) -> Option<&Reservation> {
        self.reservations.get(&id)
    }

    pub(super) fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// How many reservations and holds `principal` has open.
    #[inline]
    pub(super) fn open_of(&self, principal: PrincipalId) -> u32 {
        self.open.get(&principal).copied().unwrap_or(0)
    }

    /// Files a new reservation, to expire at its `expires_at_ms`.
    #[inline]
    pub(super) fn file(&mut self, reservation: Reservation) {
        self.expiries
            .insert((reservation.expires_at_ms, reservation.id));
        *self.open.entry(reservation.principal).or_insert(0) += 1;
        self.reservations.insert(reservation.id, reservation);
    }

    /// A committed gauge reservation stays as a hold of `actual`, which does not
    /// expire.
    #[inline]
    pub(super) fn hold(&mut self, id: ReservationId, actual: u64) {
        if let Some(reservation) = self.reservations.get_mut(&id) {
            self.expiries.remove(&(reservation.expires_at_ms, id));
            reservation.state = ReservationState::Held { actual };
        }
    }

    /// Reservation or hold `id` is over (committed, released, expired).
    #[inline]
    pub(super) fn forget(&mut self, id: ReservationId) {
        let Some(reservation) = self.reservations.remove(&id) else {
            return;
        };
        self.expiries.remove(&(reservation.expires_at_ms, id));
        if let Some(count) = self.open.get_mut(&reservation.principal) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&reservation.principal);
            }
        }
    }

    /// The first reservation whose time ran out by `now_ms`, with that time.
    #[inline]
    pub(super) fn expired(&self, now_ms: u64) -> Option<(u64, ReservationId)> {
        self.expiries
            .first()
            .copied()
            .filter(|(at_ms, _)| *at_ms <= now_ms)
    }

    /// When the next reservation expires.
    #[inline]
    pub(super) fn next_expiry_ms(&self) -> Option<u64> {
        self.expiries.first().map(|(at_ms, _)| *at_ms)
    }

    /// Its invariants: every reserved reservation, and only those, has its expiry
    /// entry; the open counts are the reservations and holds per principal.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut per_principal: BTreeMap<PrincipalId, u32> = BTreeMap::new();
        let mut reserved = 0;
        for reservation in self.reservations.values() {
            *per_principal.entry(reservation.principal).or_insert(0) += 1;
            if reservation.state != ReservationState::Reserved {
                continue;
            }
            reserved += 1;
            if !self
                .expiries
                .contains(&(reservation.expires_at_ms, reservation.id))
            {
                return Err(format!(
                    "reservation {} has no expiry entry",
                    reservation.id
                ));
            }
        }
        if self.expiries.len() != reserved {
            return Err("an expiry entry without its reservation".into());
        }
        if per_principal != self.open {
            return Err(format!(
                "open reservations per principal {:?}, counted {:?}",
                per_principal, self.open
            ));
        }
        Ok(())
    }
}
