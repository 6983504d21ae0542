//! [`Board`]: the live tasks, a part of the state with its fields its own: the
//! board's configuration (`tasks.toml`, from genesis), every live task by address,
//! and the last root number given. What moves a task, and the indexes over the
//! tasks, are the state's and its other parts' (`tasks.rs`, `task_index.rs`,
//! `task_leases.rs`).

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::tasks::{Task, TaskConfig};
use crate::TaskAddress;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Board {
    /// `tasks.toml`: the shipped defaults in the empty state, genesis's after.
    config: TaskConfig,
    all: BTreeMap<TaskAddress, Task>,
    last_number: u64,
}

impl Board {
    /// The board as genesis configured it.
    pub(super) fn configure(&mut self, config: TaskConfig) {
        self.config = config;
    }

    #[inline]
    pub(super) fn config(&self) -> &TaskConfig {
        &self.config
    }

    #[inline]
    pub(super) fn get(&self, address: &str) -> Option<&Task> {
        self.all.get(address)
    }

    /// The task at `address`, which the caller knows is live (it was listed,
    /// indexed, or checked).
    #[inline]
    pub(super) fn known(&self, address: &str) -> &Task {
        &self.all[address]
    }

    /// The task at `address` to change: never its address.
    #[inline]
    pub(super) fn edit(&mut self, address: &str) -> Option<&mut Task> {
        self.all.get_mut(address)
    }

    pub(super) fn contains(&self, address: &str) -> bool {
        self.all.contains_key(address)
    }

    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    /// Every live task, in address order.
    pub(super) fn all(&self) -> impl Iterator<Item = &Task> {
        self.all.values()
    }

    /// The live tasks whose address is in `(from, to)` bounds, in address order.
    pub(super) fn between<'a>(
        &'a self,
        from: Bound<&'a str>,
        to: Bound<&'a str>,
    ) -> impl Iterator<Item = &'a Task> {
        self.all.range::<str, _>((from, to)).map(|(_, task)| task)
    }

    /// The live tasks whose address is from `from` (included) to `to` (excluded),
    /// in address order.
    pub(super) fn span(&self, from: String, to: String) -> impl Iterator<Item = &Task> {
        self.all
            .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
            .map(|(_, task)| task)
    }

    /// The next root number (taken).
    pub(super) fn take_number(&mut self) -> u64 {
        self.last_number += 1;
        self.last_number
    }

    /// The last root number given.
    pub(super) fn last_number(&self) -> u64 {
        self.last_number
    }

    pub(super) fn add(&mut self, task: Task) {
        self.all.insert(task.address.clone(), task);
    }

    /// The task at `address` leaves the live state.
    pub(super) fn remove(&mut self, address: &str) -> Option<Task> {
        self.all.remove(address)
    }
}
