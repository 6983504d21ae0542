//! [`Finished`]: the finished trees still in the live state, a part of the state
//! with its fields its own: each by root with when it finished and how many tasks
//! it holds, the same trees oldest first, their tasks counted, and the tasks
//! retired so far. Whether a tree is finished, and its retirement, are the
//! state's (`retention.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::TaskAddress;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Finished {
    /// By root: when the tree finished, and how many tasks it holds.
    trees: BTreeMap<TaskAddress, (u64, u64)>,
    /// `(finished_at_ms, root)`, oldest first.
    order: BTreeSet<(u64, TaskAddress)>,
    /// Tasks in `trees`.
    tasks: u64,
    /// Tasks retired from the live state so far.
    retired: u64,
}

impl Finished {
    pub(super) fn contains(&self, root: &TaskAddress) -> bool {
        self.trees.contains_key(root)
    }

    /// The tree at `root`, of `size` tasks, finished at `at_ms`.
    pub(super) fn file(&mut self, root: TaskAddress, at_ms: u64, size: u64) {
        self.order.insert((at_ms, root.clone()));
        self.trees.insert(root, (at_ms, size));
        self.tasks += size;
    }

    /// The tree at `root` is filed no more (open again, or leaving).
    pub(super) fn unfile(&mut self, root: &TaskAddress) {
        if let Some((at_ms, size)) = self.trees.remove(root) {
            self.order.remove(&(at_ms, root.clone()));
            self.tasks -= size;
        }
    }

    /// The oldest filed tree: when it finished, and its root.
    pub(super) fn oldest(&self) -> Option<&(u64, TaskAddress)> {
        self.order.first()
    }

    /// Tasks in the filed trees.
    pub(super) fn tasks(&self) -> u64 {
        self.tasks
    }

    /// The filed trees, and their tasks.
    pub(super) fn kept(&self) -> (usize, u64) {
        (self.trees.len(), self.tasks)
    }

    /// `count` tasks left the live state.
    pub(super) fn count_retired(&mut self, count: u64) {
        self.retired += count;
    }

    pub(super) fn retired(&self) -> u64 {
        self.retired
    }

    /// The filed trees: root, when it finished, its size.
    pub(super) fn trees(&self) -> impl Iterator<Item = (&TaskAddress, &(u64, u64))> {
        self.trees.iter()
    }

    /// Its invariants: each tree filed once in each index, its tasks counted.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.order.len() != self.trees.len() {
            return Err("finished trees indexed twice or not at all".into());
        }
        let mut total = 0;
        for (root, (at_ms, size)) in &self.trees {
            if !self.order.contains(&(*at_ms, root.clone())) {
                return Err(format!("finished tree {root} out of the order"));
            }
            total += size;
        }
        if total != self.tasks {
            return Err(format!(
                "{} finished tasks counted, {total} filed",
                self.tasks
            ));
        }
        Ok(())
    }
}
