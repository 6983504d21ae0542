//! Finished task trees leave the live state by the retention rule
//! (`crate::retention`): which trees are finished, and their retirement, each a
//! `task.retire` decision whose tasks the node writes to its archive.

use super::Effects;
use std::collections::BTreeSet;

use super::State;
use crate::event::{Effect, Event};
use crate::retention::{RetireCause, RETIRE_TREES_PER_COMMAND_MAX};
use crate::tasks::TaskStatus;
use crate::TaskAddress;

impl State {
    /// The root of the tree a live task belongs to.
    pub(super) fn root_of(&self, address: &TaskAddress) -> TaskAddress {
        let mut current = address;
        for _ in 0..=crate::tasks::TASK_DEPTH_MAX {
            match self.tasks.get(current).and_then(|t| t.parent.as_ref()) {
                Some(parent) => current = parent,
                None => break,
            }
        }
        current.clone()
    }

    /// The live tasks of the tree under `root` (the root first).
    fn tree<'a>(&'a self, root: &'a str) -> impl Iterator<Item = &'a crate::tasks::Task> {
        let (from, to) = TaskAddress::descendants(root);
        self.tasks
            .get(root)
            .into_iter()
            .chain(self.tasks.span(from, to))
    }

    /// Every task of the tree is finished and no open task waits on one of them;
    /// the number of its tasks.
    fn finished_tree_size(&self, root: &TaskAddress) -> Option<u64> {
        let mut size = 0;
        for task in self.tree(root) {
            if task.status.is_open() {
                return None;
            }
            let waited_on = self.index.waiting_on(&task.address).is_some_and(|waiting| {
                waiting
                    .iter()
                    .any(|w| self.tasks.get(w).is_some_and(|t| t.status.is_open()))
            });
            if waited_on {
                return None;
            }
            size += 1;
        }
        (size > 0).then_some(size)
    }

    /// A task of this tree finished: the tree is looked at once the command is
    /// decided. The trees of what it waited on too: they may have stayed only for it.
    pub(super) fn note_finishing(&self, fx: &mut Effects, address: &TaskAddress) {
        fx.finishing.insert(self.root_of(address));
        for dependency in &self.tasks.known(address).depends_on {
            if self.tasks.contains(dependency) {
                fx.finishing.insert(self.root_of(dependency));
            }
        }
    }

    /// A task of this tree is open again (a requeued dead task): the tree is not
    /// finished any more.
    pub(super) fn note_reopened(&mut self, address: &TaskAddress) {
        let root = self.root_of(address);
        self.finished.unfile(&root);
    }

    /// Files the trees that finished with this command.
    pub(super) fn note_finished_trees(&mut self, fx: &mut Effects) {
        for root in std::mem::take(&mut fx.finishing) {
            if self.finished.contains(&root) {
                // Finished already (a dead task of it was buried again, say): its
                // time stays that of its first finish.
                continue;
            }
            if let Some(size) = self.finished_tree_size(&root) {
                self.finished.file(root, self.now_ms, size);
            }
        }
    }

    /// When the oldest finished tree is due to leave: now when more are kept than
    /// the rule allows.
    pub(super) fn retention_next_due_ms(&self) -> Option<u64> {
        let rule = &self.retention;
        let (at_ms, _) = self.finished.oldest()?;
        if self.finished.tasks() > rule.keep_finished {
            return Some(self.now_ms);
        }
        Some(at_ms.saturating_add(rule.keep_finished_for_ms))
    }

    /// Retires the finished trees the rule sends away, oldest first, at most
    /// [`RETIRE_TREES_PER_COMMAND_MAX`] per command.
    pub(super) fn retire_finished(&mut self, fx: &mut Effects, events: &mut Vec<Event>) {
        let rule = self.retention.clone();
        let mut retired = 0;
        while retired < RETIRE_TREES_PER_COMMAND_MAX {
            let Some((at_ms, root)) = self.finished.oldest().cloned() else {
                break;
            };
            let cause = if self.finished.tasks() > rule.keep_finished {
                RetireCause::Count
            } else if at_ms.saturating_add(rule.keep_finished_for_ms) <= self.now_ms {
                RetireCause::Age
            } else {
                break;
            };
            self.finished.unfile(&root);
            // Something may have come to wait on the tree since it was filed (a task
            // posted depending on one of its tasks): it stays, and is filed again
            // when that one finishes.
            if self.finished_tree_size(&root).is_none() {
                continue;
            }
            let tasks = self.retire_tree(fx, &root);
            events.push(Event::allowed(
                "task.retire",
                root.clone(),
                Effect::TasksRetired {
                    root,
                    tasks,
                    finished_at_ms: at_ms,
                    cause,
                },
            ));
            retired += 1;
        }
    }

    /// Takes a finished tree out of the live state, into `fx.retired`.
    fn retire_tree(&mut self, fx: &mut Effects, root: &TaskAddress) -> u64 {
        let addresses: Vec<TaskAddress> = self.tree(root).map(|t| t.address.clone()).collect();
        let leaving: BTreeSet<&str> = addresses.iter().map(TaskAddress::as_str).collect();
        for address in &addresses {
            let task = self.tasks.remove(address).expect("walked just now");
            self.index.unfile(address, task.status);
            // What waited on it has finished (or left with it).
            self.index.forget_waits(address, &task.depends_on, &leaving);
            fx.retired.push(task);
        }
        self.finished.count_retired(addresses.len() as u64);
        addresses.len() as u64
    }

    /// Whether a dependency is met: completed, or retired (a tree retires only once
    /// nothing open waits on it, so a task still naming a retired dependency was
    /// unblocked by its completion).
    pub(super) fn dependency_met(&self, address: &TaskAddress) -> bool {
        self.tasks
            .get(address)
            .is_none_or(|task| task.status == TaskStatus::Completed)
    }

    /// See [`State::check_invariants`].
    pub(super) fn check_retention(&self) -> Result<(), String> {
        self.retention
            .check()
            .map_err(|e| format!("the retention rule in force: {e}"))?;
        let indexed = self.index.filed();
        if indexed != self.tasks.len() {
            return Err(format!(
                "{indexed} tasks indexed by status, {} live",
                self.tasks.len()
            ));
        }
        for (status, same) in self.index.statuses() {
            if let Some(wrong) = same
                .iter()
                .find(|a| self.tasks.get(a).is_none_or(|t| t.status != *status))
            {
                return Err(format!("{wrong} indexed as {}", status.as_str()));
            }
        }
        self.finished.check()?;
        for (root, (_, size)) in self.finished.trees() {
            let tree: Vec<_> = self.tree(root).collect();
            if tree.len() as u64 != *size || tree.iter().any(|t| t.status.is_open()) {
                return Err(format!("finished tree {root} is not whole and finished"));
            }
        }
        Ok(())
    }

    /// Tasks retired from the live state so far.
    pub fn retired_tasks(&self) -> u64 {
        self.finished.retired()
    }

    /// The retention rule in force.
    pub fn retention(&self) -> &crate::retention::RetentionConfig {
        &self.retention
    }

    /// Finished trees still live, and their tasks.
    pub fn finished_kept(&self) -> (usize, u64) {
        self.finished.kept()
    }
}
