//! [`Sessions`]: the worker sessions, a part of the state with its fields its own:
//! every session by id (ended ones stay for the record), the active ones by their
//! deadline, and the tasks leased to each. Registration under `active_workers`,
//! heartbeats and loss are decided by the state (`workers.rs`), leases by the
//! board (`claims.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::workers::{WorkerSession, WorkerState};
use crate::TaskAddress;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    all: BTreeMap<u64, WorkerSession>,
    /// `(deadline_ms, id)` of each active session.
    deadlines: BTreeSet<(u64, u64)>,
    /// Tasks leased to each session.
    leases: BTreeMap<u64, BTreeSet<TaskAddress>>,
}

impl Sessions {
    #[inline]
    pub(super) fn get(&self, id: u64) -> Option<&WorkerSession> {
        self.all.get(&id)
    }

    /// Session `id` to change: never its state or `deadline_ms` (see
    /// [`Sessions::move_deadline`] and [`Sessions::end`]).
    pub(super) fn edit(&mut self, id: u64) -> Option<&mut WorkerSession> {
        self.all.get_mut(&id)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &WorkerSession> {
        self.all.values()
    }

    /// The active sessions only, through their deadlines (the ended ones, kept for
    /// the record, are not walked).
    pub(super) fn active(&self) -> impl Iterator<Item = &WorkerSession> {
        self.deadlines
            .iter()
            .filter_map(|(_, id)| self.all.get(id))
            .filter(|w| w.state == WorkerState::Active)
    }

    /// A new active session, due to be heard from by its `deadline_ms`.
    pub(super) fn register(&mut self, session: WorkerSession) {
        self.deadlines.insert((session.deadline_ms, session.id));
        self.all.insert(session.id, session);
    }

    /// Active session `id` is due to be heard from by `deadline_ms`.
    pub(super) fn move_deadline(&mut self, id: u64, deadline_ms: u64) {
        if let Some(session) = self.all.get_mut(&id) {
            self.deadlines.remove(&(session.deadline_ms, id));
            session.deadline_ms = deadline_ms;
            self.deadlines.insert((deadline_ms, id));
        }
    }

    /// Session `id` ends in `state` at `at_ms`; its leases are the board's to end.
    pub(super) fn end(&mut self, id: u64, state: WorkerState, at_ms: u64) {
        if let Some(session) = self.all.get_mut(&id) {
            session.state = state;
            session.ended_at_ms = Some(at_ms);
            self.deadlines.remove(&(session.deadline_ms, id));
        }
    }

    /// The first deadline passed by `now_ms`, taken out: the deadline and session.
    #[inline]
    pub(super) fn due(&mut self, now_ms: u64) -> Option<(u64, u64)> {
        let &(deadline_ms, id) = self.deadlines.first()?;
        if deadline_ms > now_ms {
            return None;
        }
        self.deadlines.pop_first();
        Some((deadline_ms, id))
    }

    #[inline]
    pub(super) fn next_due_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The tasks leased to session `id`.
    pub(super) fn tasks_of(&self, id: u64) -> impl Iterator<Item = &TaskAddress> {
        self.leases.get(&id).into_iter().flatten()
    }

    /// `address` is leased to session `id`.
    pub(super) fn lease(&mut self, id: u64, address: &TaskAddress) {
        self.leases.entry(id).or_default().insert(address.clone());
    }

    /// `address`'s lease to session `id` ended.
    pub(super) fn unlease(&mut self, id: u64, address: &TaskAddress) {
        if let Some(held) = self.leases.get_mut(&id) {
            held.remove(address);
            if held.is_empty() {
                self.leases.remove(&id);
            }
        }
    }

    /// Its invariants: every active session, and only those, at its deadline.
    pub(super) fn check(&self) -> Result<(), String> {
        for worker in self.all.values() {
            let indexed = self.deadlines.contains(&(worker.deadline_ms, worker.id));
            if (worker.state == WorkerState::Active) != indexed {
                return Err(format!(
                    "worker {} ({}) is {}in its deadlines' index",
                    worker.id,
                    worker.state.as_str(),
                    if indexed { "" } else { "not " }
                ));
            }
        }
        if self.deadlines.len()
            != self
                .all
                .values()
                .filter(|w| w.state == WorkerState::Active)
                .count()
        {
            return Err("a deadline indexed for a session that is not active".into());
        }
        Ok(())
    }
}
