//! What the task board answers without changing: one task, lists in address order
//! (all, or one status through the status index), counts, whether a task may be in the
//! archive, and the priority a claim would see.

use std::collections::BTreeSet;

use super::State;
use crate::tasks::*;
use crate::TaskAddress;

impl State {
    pub fn task(&self, address: &str) -> Option<&Task> {
        self.tasks.get(address)
    }

    /// Every live task, by address.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.all()
    }

    /// The live tasks with this status whose address sorts after `after`, in
    /// address order: walks only them.
    pub fn tasks_with_status_after<'a>(
        &'a self,
        status: TaskStatus,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Task> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.index
            .with_status(status)
            .into_iter()
            .flat_map(move |same| same.range::<str, _>((start, Bound::Unbounded)))
            .filter_map(|address| self.tasks.get(address))
    }

    /// Whether a task not in the live state at `address` may be in the archive: its
    /// root's number was given and its root is not live (trees retire whole). A
    /// lookup of anything else is answered at once, without reading the archive.
    pub fn may_be_archived(&self, address: &str) -> bool {
        let Ok(address) = TaskAddress::parse(address) else {
            return false;
        };
        // A root number is from 1 (the grammar says so).
        address.root_number() <= self.tasks.last_number()
            && !self.tasks.contains(address.root_address())
    }

    /// How many live tasks have this status.
    pub fn task_count(&self, status: TaskStatus) -> usize {
        self.index.with_status(status).map_or(0, BTreeSet::len)
    }

    /// The tasks whose address sorts after `after` (every task when `None`), in
    /// address order: a page starts where the last ended without walking what came
    /// before it.
    pub fn tasks_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = &'a Task> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.tasks.between(start, Bound::Unbounded)
    }

    pub fn task_config(&self) -> &TaskConfig {
        self.tasks.config()
    }

    /// The priority a claim would see for this task now.
    pub fn effective_priority(&self, task: &Task) -> u32 {
        let config = self.tasks.config();
        let aging = if task.status == TaskStatus::Pending {
            let minutes = (self.now_ms.saturating_sub(task.ready_since_ms) / 60_000) as u32;
            minutes
                .saturating_mul(config.aging_points_per_minute)
                .min(config.aging_points_max)
        } else {
            0
        };
        self.static_score(task) + aging
    }

    pub(super) fn static_score(&self, task: &Task) -> u32 {
        let config = self.tasks.config();
        let waiting = self
            .index
            .waiting_on(&task.address)
            .map_or(0, |d| d.len() as u32);
        task.priority.numeric()
            + waiting
                .saturating_mul(config.unblock_points)
                .min(config.unblock_points_max)
    }
}
