//! [`TaskIndex`]: the board's indexes, a part of the state with its fields its
//! own: the claimable tasks by static score and by the time they became claimable,
//! the open tasks waiting on each task, and the live tasks by status. The tasks
//! themselves and what moves them are the state's (`tasks.rs`, `claims.rs`,
//! `retention.rs`); it tells the index each move.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::tasks::TaskStatus;
use crate::TaskAddress;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskIndex {
    /// Claimable tasks by static score, then by the time they became claimable.
    ready: BTreeMap<u32, BTreeSet<(u64, TaskAddress)>>,
    /// Each claimable task's score in `ready`.
    ready_score: BTreeMap<TaskAddress, u32>,
    /// Open tasks that wait on each task.
    dependents: BTreeMap<TaskAddress, BTreeSet<TaskAddress>>,
    /// Task addresses by status: lists and counts walk only the status they ask for.
    by_status: BTreeMap<TaskStatus, BTreeSet<TaskAddress>>,
}

impl TaskIndex {
    /// `address` is claimable from `ready_since_ms` at `score`.
    #[inline]
    pub(super) fn offer(&mut self, address: &TaskAddress, score: u32, ready_since_ms: u64) {
        self.ready
            .entry(score)
            .or_default()
            .insert((ready_since_ms, address.clone()));
        self.ready_score.insert(address.clone(), score);
    }

    /// `address` (claimable since `ready_since_ms`) is claimable no more.
    #[inline]
    pub(super) fn withdraw(&mut self, address: &TaskAddress, ready_since_ms: u64) {
        if let Some(score) = self.ready_score.remove(address) {
            if let Some(level) = self.ready.get_mut(&score) {
                level.remove(&(ready_since_ms, address.clone()));
                if level.is_empty() {
                    self.ready.remove(&score);
                }
            }
        }
    }

    #[inline]
    pub(super) fn is_offered(&self, address: &TaskAddress) -> bool {
        self.ready_score.contains_key(address)
    }

    /// The claimable tasks, highest score first, each level oldest first.
    #[inline]
    pub(super) fn levels(&self) -> impl Iterator<Item = (&u32, &BTreeSet<(u64, TaskAddress)>)> {
        self.ready.iter().rev()
    }

    /// `waiter` waits on `dependency`.
    pub(super) fn wait_on(&mut self, dependency: &TaskAddress, waiter: &TaskAddress) {
        self.dependents
            .entry(dependency.clone())
            .or_default()
            .insert(waiter.clone());
    }

    /// The tasks waiting on `address`.
    pub(super) fn waiting_on(&self, address: &TaskAddress) -> Option<&BTreeSet<TaskAddress>> {
        self.dependents.get(address)
    }

    /// The tasks that waited on `address` (completed): they wait on it no more.
    pub(super) fn take_waiting(&mut self, address: &TaskAddress) -> Option<BTreeSet<TaskAddress>> {
        self.dependents.remove(address)
    }

    /// `address` left the live state: nothing is recorded as waiting on it, and it
    /// waits on `depends_on` no more (except on those in `leaving` with it).
    pub(super) fn forget_waits(
        &mut self,
        address: &TaskAddress,
        depends_on: &[TaskAddress],
        leaving: &BTreeSet<&str>,
    ) {
        self.dependents.remove(address);
        for dependency in depends_on {
            if leaving.contains(dependency.as_str()) {
                continue;
            }
            if let Some(waiting) = self.dependents.get_mut(dependency.as_str()) {
                waiting.remove(address);
                if waiting.is_empty() {
                    self.dependents.remove(dependency.as_str());
                }
            }
        }
    }

    /// `address` moves from status `from` (none: it is new) to `to`.
    #[inline]
    pub(super) fn file_status(
        &mut self,
        address: &TaskAddress,
        from: Option<TaskStatus>,
        to: TaskStatus,
    ) {
        if let Some(same) = from.and_then(|from| self.by_status.get_mut(&from)) {
            same.remove(address);
        }
        self.by_status
            .entry(to)
            .or_default()
            .insert(address.clone());
    }

    /// `address` (of `status`) left the live state.
    pub(super) fn unfile(&mut self, address: &TaskAddress, status: TaskStatus) {
        if let Some(same) = self.by_status.get_mut(&status) {
            same.remove(address);
        }
    }

    /// The live tasks with `status`, in address order.
    pub(super) fn with_status(&self, status: TaskStatus) -> Option<&BTreeSet<TaskAddress>> {
        self.by_status.get(&status)
    }

    /// Every status and its tasks.
    pub(super) fn statuses(&self) -> impl Iterator<Item = (&TaskStatus, &BTreeSet<TaskAddress>)> {
        self.by_status.iter()
    }

    /// How many tasks it files by status.
    pub(super) fn filed(&self) -> usize {
        self.by_status.values().map(BTreeSet::len).sum()
    }

    /// Its invariants: the claimable levels and their scores agree.
    pub(super) fn check(&self) -> Result<(), String> {
        let indexed: usize = self.ready.values().map(BTreeSet::len).sum();
        if indexed != self.ready_score.len() {
            return Err("the claimable index and its scores disagree".into());
        }
        for (score, level) in &self.ready {
            if let Some((_, address)) = level
                .iter()
                .find(|(_, address)| self.ready_score.get(address) != Some(score))
            {
                return Err(format!("{address} is claimable at another score"));
            }
        }
        Ok(())
    }
}
