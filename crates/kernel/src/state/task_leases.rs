//! [`TaskLeases`]: the board's times and counts about leases, a part of the state
//! with its fields its own: when each lease ends unless renewed, when each failed
//! task may be claimed again, how many leases each principal holds, and who holds
//! an implicit session (leases without a worker session, each one unit of
//! `active_workers`). The leases themselves are on their tasks; the board
//! (`claims.rs`, `tasks.rs`, `outcomes.rs`) tells this part each change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::principal::PrincipalId;
use crate::TaskAddress;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskLeases {
    /// `(expires_at_ms, task)` of each lease.
    ends: BTreeSet<(u64, TaskAddress)>,
    /// `(not_before_ms, task)` of each failed task waiting out its backoff.
    backoffs: BTreeSet<(u64, TaskAddress)>,
    /// Leases held per principal (none: no entry).
    held: BTreeMap<PrincipalId, u32>,
    /// Principals holding leases without a worker session.
    implicit: BTreeSet<PrincipalId>,
}

impl TaskLeases {
    /// How many leases `principal` holds.
    #[inline]
    pub(super) fn held_by(&self, principal: PrincipalId) -> u32 {
        self.held.get(&principal).copied().unwrap_or(0)
    }

    /// `holder` took the lease of `task`, ending at `expires_at_ms`.
    pub(super) fn take(&mut self, task: &TaskAddress, holder: PrincipalId, expires_at_ms: u64) {
        self.ends.insert((expires_at_ms, task.clone()));
        *self.held.entry(holder).or_insert(0) += 1;
    }

    /// `holder`'s lease of `task` (ending at `expires_at_ms`) ended: whether that
    /// was its last lease on an implicit session, which ends with it.
    pub(super) fn give_back(
        &mut self,
        task: &TaskAddress,
        holder: PrincipalId,
        expires_at_ms: u64,
    ) -> bool {
        self.ends.remove(&(expires_at_ms, task.clone()));
        let Some(count) = self.held.get_mut(&holder) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        self.held.remove(&holder);
        self.implicit.remove(&holder)
    }

    /// The lease of `task` ends at `to` instead of `from`.
    pub(super) fn move_end(&mut self, task: &TaskAddress, from: u64, to: u64) {
        self.ends.remove(&(from, task.clone()));
        self.ends.insert((to, task.clone()));
    }

    /// Whether the lease of `task` is filed to end at `at_ms`.
    pub(super) fn ends_at(&self, task: &TaskAddress, at_ms: u64) -> bool {
        self.ends.contains(&(at_ms, task.clone()))
    }

    /// The first lease end passed by `now_ms`, taken out.
    #[inline]
    pub(super) fn end_due(&mut self, now_ms: u64) -> Option<(u64, TaskAddress)> {
        if self.ends.first().is_some_and(|(at_ms, _)| *at_ms <= now_ms) {
            return self.ends.pop_first();
        }
        None
    }

    /// Failed `task` may be claimed again from `not_before_ms`.
    pub(super) fn back_off(&mut self, task: &TaskAddress, not_before_ms: u64) {
        self.backoffs.insert((not_before_ms, task.clone()));
    }

    /// `task`'s backoff (until `not_before_ms`) is over or moved.
    pub(super) fn unback_off(&mut self, task: &TaskAddress, not_before_ms: u64) {
        self.backoffs.remove(&(not_before_ms, task.clone()));
    }

    /// The first backoff over by `now_ms`, taken out.
    #[inline]
    pub(super) fn backoff_due(&mut self, now_ms: u64) -> Option<(u64, TaskAddress)> {
        if self
            .backoffs
            .first()
            .is_some_and(|(at_ms, _)| *at_ms <= now_ms)
        {
            return self.backoffs.pop_first();
        }
        None
    }

    /// When the next lease end or backoff is due.
    #[inline]
    pub(super) fn next_due_ms(&self) -> Option<u64> {
        let lease = self.ends.first().map(|(at, _)| *at);
        let backoff = self.backoffs.first().map(|(at, _)| *at);
        [lease, backoff].into_iter().flatten().min()
    }

    pub(super) fn has_implicit(&self, principal: PrincipalId) -> bool {
        self.implicit.contains(&principal)
    }

    /// `principal` holds an implicit session from now until its last lease ends.
    pub(super) fn hold_implicit(&mut self, principal: PrincipalId) {
        self.implicit.insert(principal);
    }

    pub(super) fn implicit_count(&self) -> usize {
        self.implicit.len()
    }

    /// Its invariants, against what the tasks say: `leased` leases, held per
    /// principal as `per_holder`; an implicit session only with a lease.
    pub(super) fn check(
        &self,
        leased: usize,
        per_holder: &BTreeMap<PrincipalId, u32>,
    ) -> Result<(), String> {
        if self.ends.len() != leased {
            return Err(format!(
                "{} lease expiries for {leased} leases",
                self.ends.len()
            ));
        }
        if *per_holder != self.held {
            return Err(format!(
                "leases held {:?}, counted {:?}",
                per_holder, self.held
            ));
        }
        if let Some(principal) = self.implicit.iter().find(|p| !self.held.contains_key(p)) {
            return Err(format!(
                "{principal} holds an implicit session without a lease"
            ));
        }
        Ok(())
    }
}
