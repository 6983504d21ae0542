//! The kernel's side of the task board: posting, validation, statuses with their
//! indexes (claimable, by status), and what comes due (expired leases, backoffs).
//! Reads live in `board_reads.rs`; a holder's acts and requeues in `task_updates.rs`;
//! claims, outcomes and decomposition in `claims.rs`, `outcomes.rs` and `decompose.rs`.

use super::Effects;
use std::collections::{BTreeMap, BTreeSet};

use super::{invalid, not_found, State};
use crate::command::Command;
use crate::event::{Effect, Event, Reason};
use crate::ledger::Resource;
use crate::limits::Gate;
use crate::limits::LimitName;
use crate::tasks::*;
use crate::TaskAddress;

impl State {
    pub(super) fn tasks_next_due_ms(&self) -> Option<u64> {
        self.leases.next_due_ms()
    }

    /// Expired leases become failed attempts; finished backoffs become claimable.
    pub(super) fn process_tasks_due(&mut self, fx: &mut Effects, events: &mut Vec<Event>) {
        // Entries are taken off the index first, so a stale one can never repeat.
        while let Some((at_ms, address)) = self.leases.end_due(self.now_ms) {
            let Some(lease) = self.tasks.get(&address).and_then(|t| t.lease.clone()) else {
                continue;
            };
            if lease.expires_at_ms != at_ms {
                continue;
            }
            if at_ms >= lease.attempt_deadline_ms {
                self.time_out_attempt(fx, &address, &lease, events);
                continue;
            }
            let reason = format!(
                "the lease of {} expired at {at_ms} without a heartbeat",
                lease.holder_address
            );
            self.end_attempt(&address, "lease_expired", Some(reason.clone()));
            let mut event = Event::allowed("task.lease_expired", address.clone(), Effect::None);
            event.reason = Reason::Invalid {
                message: reason.clone(),
            };
            events.push(event);
            self.fail_attempt(fx, &address, &reason, "0.1", "the lease expired", events);
        }
        while let Some((at_ms, address)) = self.leases.backoff_due(self.now_ms) {
            if self
                .tasks
                .get(&address)
                .is_some_and(|t| t.status == TaskStatus::Failed && t.not_before_ms == at_ms)
            {
                self.set_status(
                    fx,
                    &address,
                    TaskStatus::Pending,
                    "0.1",
                    "the backoff after a failed attempt is over",
                );
            }
        }
    }

    pub(super) fn post_task(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        new: &NewTask,
    ) -> Event {
        const ACTION: &str = "task.post";
        if let Err(reason) = self.validate_new_task(new, &BTreeSet::new()) {
            return Event::denied(ACTION, TASK_QUEUE_ADDRESS, reason);
        }
        let mut warnings = match self.gate_task_creation(command, new, 1) {
            Ok(warnings) => warnings,
            Err(reason) => return Event::denied(ACTION, TASK_QUEUE_ADDRESS, reason),
        };
        let budget = match new.budget_micro_usd {
            None | Some(0) => None,
            Some(amount) => {
                let chain = self.chain(command.actor);
                if let Err(reason) = self.check_chain(&chain, Resource::LlmBudgetUsd, amount) {
                    return Event::denied(ACTION, TASK_QUEUE_ADDRESS, reason);
                }
                for member in chain {
                    if let Some(balance) = self.book.balance_mut(member, Resource::LlmBudgetUsd) {
                        balance.reserved = balance.reserved.saturating_add(amount);
                    }
                }
                Some(TaskBudget {
                    payer: command.actor,
                    total_micro_usd: amount,
                    remaining_micro_usd: amount,
                    spent_micro_usd: 0,
                })
            }
        };
        let number = self.tasks.take_number();
        let address = TaskAddress::root(number);
        let depends_on = self.live_dependencies(&new.depends_on);
        self.insert_task(
            fx,
            command,
            actor_address,
            &address,
            None,
            new,
            depends_on,
            budget,
            ChildDeathPolicy::Fail,
        );
        warnings.retain(|w| !matches!(w, Reason::Ok));
        let status = self.tasks.known(&address).status;
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::TaskChanged { address, status },
        )
        .with_warnings(warnings)
    }

    /// Checks a new task's fields; `siblings` are the indexes a decomposition may
    /// refer to.
    pub(super) fn validate_new_task(
        &self,
        new: &NewTask,
        siblings: &BTreeSet<String>,
    ) -> Result<(), Reason> {
        if new.title.trim().is_empty() || new.title.len() > 512 {
            return Err(invalid("a title is 1 to 512 bytes"));
        }
        if new.description.len() > 64 << 10 {
            return Err(invalid("a description is at most 64 KiB"));
        }
        if new.capabilities.len() > CAPABILITIES_MAX
            || new
                .capabilities
                .iter()
                .any(|c| c.is_empty() || c.len() > 64)
        {
            return Err(invalid(format!(
                "at most {CAPABILITIES_MAX} capabilities of 1 to 64 bytes"
            )));
        }
        if new.depends_on.len() > DEPENDENCIES_MAX {
            return Err(invalid(format!("at most {DEPENDENCIES_MAX} dependencies")));
        }
        if new.max_attempts == Some(0) {
            return Err(invalid("max_attempts must be at least 1"));
        }
        self.check_attempt_timeout(new)?;
        for dependency in &new.depends_on {
            if siblings.contains(dependency) {
                continue;
            }
            if let Err(why) = TaskAddress::parse(dependency) {
                return Err(invalid(format!("depends_on {dependency:?}: {why}")));
            }
            if !self.tasks.contains(dependency) {
                // Finished trees leave the live state by the retention rule: a task
                // depends on live tasks only.
                return Err(not_found("task", dependency));
            }
        }
        Ok(())
    }

    /// `task_queue_depth` and `data_creation_bytes` for `count` new tasks.
    pub(super) fn gate_task_creation(
        &mut self,
        command: &Command,
        new: &NewTask,
        count: u64,
    ) -> Result<Vec<Reason>, Reason> {
        self.gate_creation(command, count, task_bytes(command, new) * count)
    }

    /// `task_queue_depth` for `count` tasks and `data_creation_bytes` for `bytes`,
    /// both checked before either is counted; the bytes are counted when both allow.
    pub(super) fn gate_creation(
        &mut self,
        command: &Command,
        count: u64,
        bytes: u64,
    ) -> Result<Vec<Reason>, Reason> {
        let mut warnings = Vec::new();
        for (name, amount) in [
            (LimitName::TaskQueueDepth, count),
            (LimitName::DataCreationBytes, bytes),
        ] {
            let Some(limit) = self.limits.edit(&name) else {
                continue;
            };
            limit.roll_window(command.at_ms);
            match limit.gate(amount) {
                Gate::Allow => {}
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Err(reason),
            }
        }
        if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
            limit.usage = limit.usage.saturating_add(bytes);
        }
        Ok(warnings)
    }

    /// The addresses of the live tasks a new task names as its dependencies (checked
    /// by `validate_new_task`: each is live).
    pub(super) fn live_dependencies(&self, named: &[String]) -> Vec<TaskAddress> {
        named.iter().filter_map(|d| self.live_address(d)).collect()
    }

    /// The address of the live task `named` names, if there is one.
    pub(super) fn live_address(&self, named: &str) -> Option<TaskAddress> {
        self.tasks.get(named).map(|task| task.address.clone())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_task(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
        parent: Option<&TaskAddress>,
        new: &NewTask,
        depends_on: Vec<TaskAddress>,
        budget: Option<TaskBudget>,
        on_child_death: ChildDeathPolicy,
    ) {
        let config = self.tasks.config();
        let mut capabilities = new.capabilities.clone();
        capabilities.sort();
        capabilities.dedup();
        let task = Task {
            address: address.clone(),
            parent: parent.cloned(),
            children: Vec::new(),
            next_child: 0,
            title: new.title.clone(),
            description: new.description.clone(),
            priority: new.priority,
            capabilities,
            depends_on,
            budget,
            max_attempts: new.max_attempts.unwrap_or(config.max_attempts),
            attempt_timeout_ms: new.attempt_timeout_ms.unwrap_or(config.attempt_timeout_ms),
            failures: 0,
            status: TaskStatus::Blocked,
            attempts: Vec::new(),
            checkpoint: None,
            result: None,
            history: Vec::new(),
            created_at_ms: command.at_ms,
            created_by: actor_address.to_string(),
            lease: None,
            not_before_ms: 0,
            ready_since_ms: command.at_ms,
            dead_reasons: Vec::new(),
            on_child_death,
        };
        for dependency in &task.depends_on {
            if self
                .tasks
                .get(dependency)
                .is_some_and(|d| d.status != TaskStatus::Completed)
            {
                self.index.wait_on(dependency, address);
                self.reindex(dependency);
            }
        }
        let ready = task.depends_on.iter().all(|d| self.dependency_met(d));
        self.tasks.add(task);
        self.index.file_status(address, None, TaskStatus::Blocked);
        if let Some(limit) = self.limits.edit(&LimitName::TaskQueueDepth) {
            limit.usage += 1;
        }
        let (to, why) = if ready {
            (TaskStatus::Pending, "posted")
        } else {
            (TaskStatus::Blocked, "posted; waits for its dependencies")
        };
        let justification = if command.justification.is_empty() {
            why.to_string()
        } else {
            command.justification.clone()
        };
        let entry = self.tasks.edit(address).expect("inserted");
        entry.history.push(Transition {
            at_ms: command.at_ms,
            from: None,
            to: TaskStatus::Blocked,
            by: actor_address.to_string(),
            justification: justification.clone(),
        });
        if ready {
            self.set_status(fx, address, to, actor_address, &justification);
        }
    }

    /// Changes a task's status, records it, and keeps the indexes true.
    pub(super) fn set_status(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        to: TaskStatus,
        by: &str,
        justification: &str,
    ) {
        let now = self.now_ms;
        let from = self.tasks.known(address).status;
        if from == to {
            return;
        }
        match from {
            TaskStatus::Pending => self.unindex(address),
            TaskStatus::Failed => {
                let not_before = self.tasks.known(address).not_before_ms;
                self.leases.unback_off(address, not_before);
            }
            _ => {}
        }
        if !from.is_open() && to.is_open() {
            if let Some(limit) = self.limits.edit(&LimitName::TaskQueueDepth) {
                limit.usage += 1;
            }
            self.note_reopened(address);
        }
        if from.is_open() && !to.is_open() {
            if let Some(limit) = self.limits.edit(&LimitName::TaskQueueDepth) {
                limit.usage = limit.usage.saturating_sub(1);
            }
            self.note_finishing(fx, address);
        }
        self.index.file_status(address, Some(from), to);
        let task = self.tasks.edit(address).expect("exists");
        task.status = to;
        task.history.push(Transition {
            at_ms: now,
            from: Some(from),
            to,
            by: by.to_string(),
            justification: justification.to_string(),
        });
        match to {
            TaskStatus::Pending => {
                task.ready_since_ms = now;
                self.index(address);
                fx.offered.push(address.clone());
            }
            TaskStatus::Failed => {
                let not_before = task.not_before_ms;
                self.leases.back_off(address, not_before);
            }
            _ => {}
        }
    }

    pub(super) fn index(&mut self, address: &TaskAddress) {
        let score = self.static_score(self.tasks.known(address));
        let ready_since = self.tasks.known(address).ready_since_ms;
        self.index.offer(address, score, ready_since);
    }

    pub(super) fn unindex(&mut self, address: &TaskAddress) {
        let ready_since = self.tasks.known(address).ready_since_ms;
        self.index.withdraw(address, ready_since);
    }

    /// Re-files a pending task whose score changed (its dependents changed).
    pub(super) fn reindex(&mut self, address: &TaskAddress) {
        if self
            .tasks
            .get(address)
            .is_some_and(|t| t.status == TaskStatus::Pending)
        {
            self.unindex(address);
            self.index(address);
        }
    }
}

/// A subtask on a dependency cycle among siblings (`"1"`, `"2"`...), if any.
pub(super) fn sibling_cycle(subtasks: &[NewTask]) -> Option<usize> {
    let edges: BTreeMap<usize, Vec<usize>> = subtasks
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                i + 1,
                s.depends_on
                    .iter()
                    .filter_map(|d| d.parse::<usize>().ok())
                    .filter(|d| *d >= 1 && *d <= subtasks.len())
                    .collect(),
            )
        })
        .collect();
    // Depth-first search with colors: 1 on the stack, 2 done.
    fn visit(
        node: usize,
        edges: &BTreeMap<usize, Vec<usize>>,
        color: &mut BTreeMap<usize, u8>,
    ) -> Option<usize> {
        match color.get(&node) {
            Some(1) => return Some(node),
            Some(2) => return None,
            _ => {}
        }
        color.insert(node, 1);
        for next in &edges[&node] {
            if let Some(found) = visit(*next, edges, color) {
                return Some(found);
            }
        }
        color.insert(node, 2);
        None
    }
    let mut color = BTreeMap::new();
    (1..=subtasks.len()).find_map(|node| visit(node, &edges, &mut color))
}

/// The bytes a new task makes Colony keep: its title, description, capabilities and
/// dependencies (the command's justification is counted where it entered).
pub(super) fn task_bytes(_command: &Command, new: &NewTask) -> u64 {
    let lists: usize = new
        .capabilities
        .iter()
        .chain(new.depends_on.iter())
        .map(String::len)
        .sum();
    (new.title.len() + new.description.len() + lists) as u64
}
