//! The kernel's side of the task board: posting, claiming with leases and fencing
//! tokens, decomposition, failure with backoff, the dead-letter queue, and budgets
//! that travel with tasks.

use std::collections::{BTreeMap, BTreeSet};

use super::{forbidden, invalid, not_found, State};
use crate::command::{Command, Priority, TaskUpdate};
use crate::event::{Effect, Event, Reason};
use crate::ledger::Resource;
use crate::limits::Gate;
use crate::principal::PrincipalId;
use crate::tasks::*;

impl State {
    pub fn task(&self, address: &str) -> Option<&Task> {
        self.tasks.get(address)
    }

    /// Every task, by address.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub fn task_config(&self) -> Option<&TaskConfig> {
        self.task_config.as_ref()
    }

    /// The priority a claim would see for this task now.
    pub fn effective_priority(&self, task: &Task) -> u32 {
        let config = self.task_config.as_ref().expect("genesis applied");
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

    fn static_score(&self, task: &Task) -> u32 {
        let config = self.task_config.as_ref().expect("genesis applied");
        let waiting = self
            .dependents
            .get(&task.address)
            .map_or(0, |d| d.len() as u32);
        task.priority.numeric()
            + waiting
                .saturating_mul(config.unblock_points)
                .min(config.unblock_points_max)
    }

    pub(super) fn tasks_next_due_ms(&self) -> Option<u64> {
        let lease = self.lease_expiries.first().map(|(at, _)| *at);
        let backoff = self.backoffs.first().map(|(at, _)| *at);
        [lease, backoff].into_iter().flatten().min()
    }

    /// Expired leases become failed attempts; finished backoffs become claimable.
    pub(super) fn process_tasks_due(&mut self, events: &mut Vec<Event>) {
        // Entries are taken off the index first, so a stale one can never repeat.
        while self
            .lease_expiries
            .first()
            .is_some_and(|(at_ms, _)| *at_ms <= self.now_ms)
        {
            let (at_ms, address) = self.lease_expiries.pop_first().expect("checked");
            let Some(lease) = self.tasks.get(&address).and_then(|t| t.lease.clone()) else {
                continue;
            };
            if lease.expires_at_ms != at_ms {
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
            self.fail_attempt(&address, &reason, "0.1", "the lease expired", events);
        }
        while self
            .backoffs
            .first()
            .is_some_and(|(at_ms, _)| *at_ms <= self.now_ms)
        {
            let (at_ms, address) = self.backoffs.pop_first().expect("checked");
            if self
                .tasks
                .get(&address)
                .is_some_and(|t| t.status == TaskStatus::Failed && t.not_before_ms == at_ms)
            {
                self.set_status(
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
                    if let Some(balance) = self.balances.get_mut(&(member, Resource::LlmBudgetUsd))
                    {
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
        self.next_task_number += 1;
        let address = format!("{TASK_QUEUE_ADDRESS}.{:05}", self.next_task_number);
        self.insert_task(
            command,
            actor_address,
            &address,
            None,
            new,
            budget,
            ChildDeathPolicy::Fail,
        );
        warnings.retain(|w| !matches!(w, Reason::Ok));
        let status = self.tasks[&address].status;
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::TaskChanged { address, status },
        )
        .with_warnings(warnings)
    }

    /// Checks a new task's fields; `siblings` are the indexes a decomposition may
    /// refer to.
    fn validate_new_task(&self, new: &NewTask, siblings: &BTreeSet<String>) -> Result<(), Reason> {
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
        for dependency in &new.depends_on {
            if !siblings.contains(dependency) && !self.tasks.contains_key(dependency) {
                return Err(not_found("task", dependency));
            }
        }
        Ok(())
    }

    /// `task_queue_depth` and `data_creation_bytes` for `count` new tasks.
    fn gate_task_creation(
        &mut self,
        command: &Command,
        new: &NewTask,
        count: u64,
    ) -> Result<Vec<Reason>, Reason> {
        self.gate_creation(command, count, task_bytes(command, new) * count)
    }

    /// `task_queue_depth` for `count` tasks and `data_creation_bytes` for `bytes`,
    /// both checked before either is counted; the bytes are counted when both allow.
    fn gate_creation(
        &mut self,
        command: &Command,
        count: u64,
        bytes: u64,
    ) -> Result<Vec<Reason>, Reason> {
        let mut warnings = Vec::new();
        for (name, amount) in [("task_queue_depth", count), ("data_creation_bytes", bytes)] {
            let Some(limit) = self.limits.get_mut(name) else {
                continue;
            };
            limit.roll_window(command.at_ms);
            match limit.gate(amount) {
                Gate::Allow => {}
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Err(reason),
            }
        }
        if let Some(limit) = self.limits.get_mut("data_creation_bytes") {
            limit.usage = limit.usage.saturating_add(bytes);
        }
        Ok(warnings)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_task(
        &mut self,
        command: &Command,
        actor_address: &str,
        address: &str,
        parent: Option<&str>,
        new: &NewTask,
        budget: Option<TaskBudget>,
        on_child_death: ChildDeathPolicy,
    ) {
        let config = self.task_config.as_ref().expect("genesis applied");
        let mut capabilities = new.capabilities.clone();
        capabilities.sort();
        capabilities.dedup();
        let task = Task {
            address: address.to_string(),
            parent: parent.map(str::to_string),
            children: Vec::new(),
            next_child: 0,
            title: new.title.clone(),
            description: new.description.clone(),
            priority: new.priority,
            capabilities,
            depends_on: new.depends_on.clone(),
            budget,
            max_attempts: new.max_attempts.unwrap_or(config.max_attempts),
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
                self.dependents
                    .entry(dependency.clone())
                    .or_default()
                    .insert(address.to_string());
                self.reindex(dependency);
            }
        }
        let ready = task.depends_on.iter().all(|d| {
            self.tasks
                .get(d)
                .is_some_and(|t| t.status == TaskStatus::Completed)
        });
        self.tasks.insert(address.to_string(), task);
        if let Some(limit) = self.limits.get_mut("task_queue_depth") {
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
        let entry = self.tasks.get_mut(address).expect("inserted");
        entry.history.push(Transition {
            at_ms: command.at_ms,
            from: None,
            to: TaskStatus::Blocked,
            by: actor_address.to_string(),
            justification: justification.clone(),
        });
        if ready {
            self.set_status(address, to, actor_address, &justification);
        }
    }

    /// Changes a task's status, records it, and keeps the indexes true.
    pub(super) fn set_status(
        &mut self,
        address: &str,
        to: TaskStatus,
        by: &str,
        justification: &str,
    ) {
        let now = self.now_ms;
        let from = self.tasks[address].status;
        if from == to {
            return;
        }
        match from {
            TaskStatus::Pending => self.unindex(address),
            TaskStatus::Failed => {
                let not_before = self.tasks[address].not_before_ms;
                self.backoffs.remove(&(not_before, address.to_string()));
            }
            _ => {}
        }
        if !from.is_open() && to.is_open() {
            if let Some(limit) = self.limits.get_mut("task_queue_depth") {
                limit.usage += 1;
            }
        }
        if from.is_open() && !to.is_open() {
            if let Some(limit) = self.limits.get_mut("task_queue_depth") {
                limit.usage = limit.usage.saturating_sub(1);
            }
        }
        let task = self.tasks.get_mut(address).expect("exists");
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
                self.offered.push(address.to_string());
            }
            TaskStatus::Failed => {
                let not_before = task.not_before_ms;
                self.backoffs.insert((not_before, address.to_string()));
            }
            _ => {}
        }
    }

    fn index(&mut self, address: &str) {
        let score = self.static_score(&self.tasks[address]);
        let ready_since = self.tasks[address].ready_since_ms;
        self.ready
            .entry(score)
            .or_default()
            .insert((ready_since, address.to_string()));
        self.ready_score.insert(address.to_string(), score);
    }

    fn unindex(&mut self, address: &str) {
        if let Some(score) = self.ready_score.remove(address) {
            let ready_since = self.tasks[address].ready_since_ms;
            if let Some(level) = self.ready.get_mut(&score) {
                level.remove(&(ready_since, address.to_string()));
                if level.is_empty() {
                    self.ready.remove(&score);
                }
            }
        }
    }

    /// Re-files a pending task whose score changed (its dependents changed).
    fn reindex(&mut self, address: &str) {
        if self
            .tasks
            .get(address)
            .is_some_and(|t| t.status == TaskStatus::Pending)
        {
            self.unindex(address);
            self.index(address);
        }
    }

    pub(super) fn claim_task(
        &mut self,
        command: &Command,
        actor_address: &str,
        capabilities: &[String],
        lease_ms: Option<u64>,
        worker: Option<u64>,
    ) -> Event {
        const ACTION: &str = "task.claim";
        if let Some(worker) = worker {
            if let Err(reason) = self.own_active_worker(command, worker) {
                return Event::denied(ACTION, format!("worker:{worker}"), reason);
            }
        }
        let config = self.task_config.clone().expect("genesis applied");
        let lease_ms = lease_ms.unwrap_or(config.lease_ms);
        if lease_ms == 0 || lease_ms > config.lease_max_ms {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!(
                    "lease_ms must be between 1 and {}",
                    config.lease_max_ms
                )),
            );
        }
        if capabilities.len() > CAPABILITIES_MAX {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!("at most {CAPABILITIES_MAX} capabilities")),
            );
        }
        let held = self.leases_held.get(&command.actor).copied().unwrap_or(0) as u64;
        let mut warnings = Vec::new();
        if let Some(limit) = self.limits.get("tasks_per_worker") {
            let mut view = limit.clone();
            view.usage = held;
            match view.gate(1) {
                Gate::Allow => {}
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Event::denied(ACTION, actor_address, reason),
            }
        }
        // A session's registered capabilities stand in when the claim names none.
        let registered = match (capabilities.is_empty(), worker) {
            (true, Some(worker)) => self.workers[&worker].capabilities.clone(),
            _ => capabilities.to_vec(),
        };
        let offered: BTreeSet<&str> = registered.iter().map(String::as_str).collect();
        let Some(address) = self.best_claimable(&offered, &config) else {
            return Event::allowed(ACTION, actor_address, Effect::NothingToClaim);
        };
        match self.hold_implicit_session(command.actor, worker) {
            Ok(found) => warnings.extend(found),
            Err(reason) => return Event::denied(ACTION, actor_address, reason),
        }
        self.grant_lease(command, actor_address, &address, lease_ms, worker)
            .with_warnings(warnings)
    }

    /// Claims a task by its address, if it is claimable now.
    pub(super) fn claim_specific_task(
        &mut self,
        command: &Command,
        actor_address: &str,
        address: &str,
        lease_ms: Option<u64>,
    ) -> Event {
        const ACTION: &str = "task.claim";
        let config = self.task_config.clone().expect("genesis applied");
        let lease_ms = lease_ms.unwrap_or(config.lease_ms);
        if lease_ms == 0 || lease_ms > config.lease_max_ms {
            return Event::denied(
                ACTION,
                address,
                invalid(format!(
                    "lease_ms must be between 1 and {}",
                    config.lease_max_ms
                )),
            );
        }
        let Some(task) = self.tasks.get(address) else {
            return Event::denied(ACTION, address, not_found("task", address));
        };
        if task.status != TaskStatus::Pending {
            let reason = Reason::NotClaimable {
                task: address.to_string(),
                status: task.status.as_str().to_string(),
                holder: task.lease.as_ref().map(|l| l.holder_address.clone()),
            };
            return Event::denied(ACTION, address, reason);
        }
        let held = self.leases_held.get(&command.actor).copied().unwrap_or(0) as u64;
        if let Some(limit) = self.limits.get("tasks_per_worker") {
            let mut view = limit.clone();
            view.usage = held;
            if let Gate::Deny(reason) = view.gate(1) {
                return Event::denied(ACTION, address, reason);
            }
        }
        let warnings = match self.hold_implicit_session(command.actor, None) {
            Ok(warnings) => warnings,
            Err(reason) => return Event::denied(ACTION, address, reason),
        };
        self.grant_lease(command, actor_address, address, lease_ms, None)
            .with_warnings(warnings)
    }

    /// A claim without a worker session by a principal that has none holds an
    /// implicit one: a unit of `active_workers` until its last lease ends, so that
    /// principals that never register are counted like workers.
    fn hold_implicit_session(
        &mut self,
        actor: PrincipalId,
        worker: Option<u64>,
    ) -> Result<Vec<Reason>, Reason> {
        if worker.is_some()
            || self.implicit_sessions.contains(&actor)
            || self
                .workers
                .values()
                .any(|w| w.principal == actor && w.state == crate::workers::WorkerState::Active)
        {
            return Ok(Vec::new());
        }
        let mut warnings = Vec::new();
        if let Some(limit) = self.limits.get_mut("active_workers") {
            match limit.gate(1) {
                Gate::Allow => {}
                // A claim is not queued: past soft it is a warning.
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Err(reason),
            }
            limit.usage += 1;
        }
        self.implicit_sessions.insert(actor);
        Ok(warnings)
    }

    fn grant_lease(
        &mut self,
        command: &Command,
        actor_address: &str,
        address: &str,
        lease_ms: u64,
        worker: Option<u64>,
    ) -> Event {
        let token = command.seq;
        let expires_at_ms = self.now_ms.saturating_add(lease_ms);
        self.set_status(
            address,
            TaskStatus::Claimed,
            actor_address,
            &command.justification,
        );
        let task = self.tasks.get_mut(address).expect("claimable");
        let number = task.attempts.len() as u32 + 1;
        task.attempts.push(Attempt {
            number,
            worker: actor_address.to_string(),
            token,
            started_at_ms: self.now_ms,
            ended_at_ms: None,
            outcome: None,
            reason: None,
        });
        task.lease = Some(Lease {
            holder: command.actor,
            holder_address: actor_address.to_string(),
            token,
            lease_ms,
            expires_at_ms,
            worker,
        });
        self.lease_expiries
            .insert((expires_at_ms, address.to_string()));
        *self.leases_held.entry(command.actor).or_insert(0) += 1;
        if let Some(worker) = worker {
            self.worker_leases
                .entry(worker)
                .or_default()
                .insert(address.to_string());
        }
        Event::allowed(
            "task.claim",
            address,
            Effect::TaskClaimed {
                address: address.to_string(),
                token,
                expires_at_ms,
            },
        )
    }

    /// The claimable task with the highest effective priority whose every required
    /// capability is offered.
    fn best_claimable(&self, offered: &BTreeSet<&str>, config: &TaskConfig) -> Option<String> {
        let mut best: Option<(u32, u64, &str)> = None;
        for (score, level) in self.ready.iter().rev() {
            if best.is_some_and(|(effective, _, _)| score + config.aging_points_max < effective) {
                break;
            }
            // Within a level the oldest is the most aged: the first match is its best.
            let found = level
                .iter()
                .take(CLAIM_SCAN_PER_LEVEL_MAX)
                .find(|(_, address)| {
                    self.tasks[address]
                        .capabilities
                        .iter()
                        .all(|c| offered.contains(c.as_str()))
                });
            if let Some((ready_since, address)) = found {
                let minutes = (self.now_ms.saturating_sub(*ready_since) / 60_000) as u32;
                let effective = score
                    + minutes
                        .saturating_mul(config.aging_points_per_minute)
                        .min(config.aging_points_max);
                let better = match best {
                    None => true,
                    Some((best_effective, best_since, best_address)) => {
                        (
                            effective,
                            std::cmp::Reverse(*ready_since),
                            std::cmp::Reverse(address.as_str()),
                        ) > (
                            best_effective,
                            std::cmp::Reverse(best_since),
                            std::cmp::Reverse(best_address),
                        )
                    }
                };
                if better {
                    best = Some((effective, *ready_since, address));
                }
            }
        }
        best.map(|(_, _, address)| address.to_string())
    }

    /// Checks the fencing token; a stale one is a recorded conflict.
    fn check_lease(&self, address: &str, actor: PrincipalId, token: u64) -> Result<(), Reason> {
        let Some(task) = self.tasks.get(address) else {
            return Err(not_found("task", address));
        };
        match &task.lease {
            Some(lease) if lease.token == token && lease.holder == actor => Ok(()),
            Some(lease) if lease.token == token => {
                Err(forbidden("this lease belongs to another principal"))
            }
            lease => Err(Reason::StaleLease {
                task: address.to_string(),
                presented: token,
                current: lease.as_ref().map(|l| l.token),
                status: task.status.as_str().to_string(),
            }),
        }
    }

    fn clear_lease(&mut self, address: &str) {
        if let Some(lease) = self.tasks.get_mut(address).and_then(|t| t.lease.take()) {
            self.lease_expiries
                .remove(&(lease.expires_at_ms, address.to_string()));
            if let Some(count) = self.leases_held.get_mut(&lease.holder) {
                *count -= 1;
                if *count == 0 {
                    self.leases_held.remove(&lease.holder);
                    if self.implicit_sessions.remove(&lease.holder) {
                        if let Some(limit) = self.limits.get_mut("active_workers") {
                            limit.usage = limit.usage.saturating_sub(1);
                        }
                    }
                }
            }
            if let Some(worker) = lease.worker {
                if let Some(held) = self.worker_leases.get_mut(&worker) {
                    held.remove(address);
                    if held.is_empty() {
                        self.worker_leases.remove(&worker);
                    }
                }
            }
        }
    }

    pub(super) fn end_attempt(&mut self, address: &str, outcome: &str, reason: Option<String>) {
        self.clear_lease(address);
        let now = self.now_ms;
        if let Some(attempt) = self
            .tasks
            .get_mut(address)
            .and_then(|t| t.attempts.last_mut())
        {
            if attempt.ended_at_ms.is_none() {
                attempt.ended_at_ms = Some(now);
                attempt.outcome = Some(outcome.to_string());
                attempt.reason = reason;
            }
        }
    }

    pub(super) fn update_task(
        &mut self,
        command: &Command,
        actor_address: &str,
        address: &str,
        token: u64,
        update: &TaskUpdate,
    ) -> Event {
        let action = update.name();
        if let Err(reason) = self.check_lease(address, command.actor, token) {
            return Event::denied(action, address, reason);
        }
        let justification = command.justification.as_str();
        match update {
            TaskUpdate::Heartbeat | TaskUpdate::Checkpoint(_) => {
                if let TaskUpdate::Checkpoint(checkpoint) = update {
                    if checkpoint.len() > CHECKPOINT_BYTES_MAX {
                        return Event::denied(
                            action,
                            address,
                            invalid(format!(
                                "a checkpoint is at most {CHECKPOINT_BYTES_MAX} bytes"
                            )),
                        );
                    }
                    self.tasks.get_mut(address).expect("checked").checkpoint =
                        Some(checkpoint.clone());
                }
                self.renew_lease(address);
                self.set_status(
                    address,
                    TaskStatus::InProgress,
                    actor_address,
                    justification,
                );
                let expires_at_ms = self.tasks[address]
                    .lease
                    .as_ref()
                    .map_or(0, |l| l.expires_at_ms);
                Event::allowed(
                    action,
                    address,
                    Effect::TaskClaimed {
                        address: address.to_string(),
                        token,
                        expires_at_ms,
                    },
                )
            }
            TaskUpdate::Complete(result) => {
                if result.len() > RESULT_BYTES_MAX {
                    return Event::denied(
                        action,
                        address,
                        invalid(format!("a result is at most {RESULT_BYTES_MAX} bytes")),
                    );
                }
                let mut consequences = Vec::new();
                self.end_attempt(address, "completed", None);
                self.complete(
                    address,
                    Some(result.clone()),
                    actor_address,
                    justification,
                    &mut consequences,
                );
                self.consequences.extend(consequences);
                Event::allowed(
                    action,
                    address,
                    Effect::TaskChanged {
                        address: address.to_string(),
                        status: TaskStatus::Completed,
                    },
                )
            }
            TaskUpdate::Fail(reason) => {
                self.end_attempt(address, "failed", Some(reason.clone()));
                let mut consequences = Vec::new();
                self.fail_attempt(
                    address,
                    reason,
                    actor_address,
                    justification,
                    &mut consequences,
                );
                self.consequences.extend(consequences);
                let status = self.tasks[address].status;
                Event::allowed(
                    action,
                    address,
                    Effect::TaskChanged {
                        address: address.to_string(),
                        status,
                    },
                )
            }
            TaskUpdate::Release => {
                self.end_attempt(address, "released", None);
                self.set_status(address, TaskStatus::Pending, actor_address, justification);
                Event::allowed(
                    action,
                    address,
                    Effect::TaskChanged {
                        address: address.to_string(),
                        status: TaskStatus::Pending,
                    },
                )
            }
            TaskUpdate::Spend(amount) => self.spend_task_budget(address, *amount),
            TaskUpdate::Decompose {
                subtasks,
                on_child_death,
            } => self.decompose(command, actor_address, address, subtasks, *on_child_death),
        }
    }

    fn renew_lease(&mut self, address: &str) {
        let now = self.now_ms;
        let task = self.tasks.get_mut(address).expect("exists");
        if let Some(lease) = task.lease.as_mut() {
            self.lease_expiries
                .remove(&(lease.expires_at_ms, address.to_string()));
            lease.expires_at_ms = now.saturating_add(lease.lease_ms);
            self.lease_expiries
                .insert((lease.expires_at_ms, address.to_string()));
        }
    }

    /// Marks a task completed, returns its budget, unblocks its dependents and
    /// completes its parent when this was the parent's last open child.
    fn complete(
        &mut self,
        address: &str,
        result: Option<String>,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        // Up the tree without recursion: each completed parent may complete its own.
        let mut next = self.complete_one(address, result, by, justification);
        while let Some(parent) = next {
            let why = "every subtask completed";
            next = self.complete_one(&parent, Some(why.to_string()), "0.1", why);
            events.push(Event::allowed(
                "task.complete",
                parent.clone(),
                Effect::TaskChanged {
                    address: parent,
                    status: TaskStatus::Completed,
                },
            ));
        }
    }

    /// Completes one task; its parent when that now has every subtask completed.
    fn complete_one(
        &mut self,
        address: &str,
        result: Option<String>,
        by: &str,
        justification: &str,
    ) -> Option<String> {
        self.tasks.get_mut(address).expect("exists").result = result;
        self.set_status(address, TaskStatus::Completed, by, justification);
        self.return_budget(address);
        let dependents: Vec<String> = self
            .dependents
            .remove(address)
            .into_iter()
            .flatten()
            .collect();
        for dependent in dependents {
            let ready = self.tasks.get(&dependent).is_some_and(|task| {
                task.status == TaskStatus::Blocked
                    && task.children.is_empty()
                    && task.depends_on.iter().all(|d| {
                        self.tasks
                            .get(d)
                            .is_some_and(|t| t.status == TaskStatus::Completed)
                    })
            });
            if ready {
                self.set_status(
                    &dependent,
                    TaskStatus::Pending,
                    "0.1",
                    &format!("its dependency {address} completed"),
                );
            }
        }
        let parent = self.tasks[address].parent.clone()?;
        let done = self.tasks.get(&parent).is_some_and(|p| {
            p.status == TaskStatus::Blocked
                && p.children.iter().all(|c| {
                    self.tasks
                        .get(c)
                        .is_some_and(|t| t.status == TaskStatus::Completed)
                })
        });
        done.then_some(parent)
    }

    /// Counts a failed attempt: back off and retry, or go to the dead-letter queue.
    fn fail_attempt(
        &mut self,
        address: &str,
        reason: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        if let Some(why) = self.fail_attempt_one(address, reason, by, justification) {
            self.kill(address, &why, by, justification, events);
        }
    }

    /// Counts a failed attempt and backs off; why the task must die instead, when it
    /// has no attempt left.
    fn fail_attempt_one(
        &mut self,
        address: &str,
        reason: &str,
        by: &str,
        justification: &str,
    ) -> Option<String> {
        let config = self.task_config.clone().expect("genesis applied");
        let task = self.tasks.get_mut(address).expect("exists");
        task.failures += 1;
        if task.failures >= task.max_attempts {
            return Some(format!(
                "attempt {} of {} failed: {reason}",
                task.failures, task.max_attempts
            ));
        }
        let previous = (task.status == TaskStatus::Failed).then_some(task.not_before_ms);
        task.not_before_ms = self.now_ms + config.backoff_ms(task.failures);
        if let Some(previous) = previous {
            self.backoffs.remove(&(previous, address.to_string()));
            self.backoffs
                .insert((self.tasks[address].not_before_ms, address.to_string()));
        }
        self.set_status(address, TaskStatus::Failed, by, justification);
        None
    }

    /// Puts a task in the dead-letter queue and applies its parent's policy.
    fn kill(
        &mut self,
        address: &str,
        why: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        // Up the tree without recursion: a parent whose policy is `fail` dies too.
        let mut next = self.kill_one(address, why, by, justification, events);
        while let Some((parent, why, justification)) = next {
            next = self.kill_one(&parent, &why, "0.1", justification, events);
        }
    }

    /// Kills one task and applies its parent's policy; the parent when it must die
    /// too, with why.
    fn kill_one(
        &mut self,
        address: &str,
        why: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) -> Option<(String, String, &'static str)> {
        self.bury(address, why, by, justification, events);
        let parent = self.tasks[address].parent.clone()?;
        if self.tasks[&parent].status != TaskStatus::Blocked {
            return None;
        }
        // The siblings still open are abandoned with the parent's plan.
        let siblings: Vec<String> = self.tasks[&parent]
            .children
            .iter()
            .filter(|c| self.tasks[*c].status.is_open())
            .cloned()
            .collect();
        for sibling in siblings {
            self.bury(
                &sibling,
                &format!("its sibling {address} died"),
                "0.1",
                "the parent's plan failed",
                events,
            );
        }
        match self.tasks[&parent].on_child_death {
            ChildDeathPolicy::Fail => Some((
                parent,
                format!("its subtask {address} died"),
                "a subtask died and the policy is fail",
            )),
            ChildDeathPolicy::Redecompose => {
                self.tasks
                    .get_mut(&parent)
                    .expect("exists")
                    .children
                    .clear();
                const WHY: &str = "a subtask died; the parent will be decomposed anew";
                self.fail_attempt_one(&parent, &format!("its subtask {address} died"), "0.1", WHY)
                    .map(|why| (parent, why, WHY))
            }
        }
    }

    /// Moves one task to the dead-letter queue, nothing more.
    fn bury(
        &mut self,
        address: &str,
        why: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        self.clear_lease(address);
        self.tasks
            .get_mut(address)
            .expect("exists")
            .dead_reasons
            .push(why.to_string());
        self.set_status(address, TaskStatus::Dead, by, justification);
        self.return_budget(address);
        let mut event = Event::allowed(
            "task.dead",
            address,
            Effect::TaskChanged {
                address: address.to_string(),
                status: TaskStatus::Dead,
            },
        );
        event.reason = Reason::Invalid {
            message: why.to_string(),
        };
        events.push(event);
    }

    /// Gives what is left of a finished task's budget back: to its parent if the
    /// parent is still open, otherwise to the payer's ledger.
    fn return_budget(&mut self, address: &str) {
        let Some(budget) = self.tasks.get_mut(address).and_then(|t| t.budget.as_mut()) else {
            return;
        };
        let remaining = std::mem::take(&mut budget.remaining_micro_usd);
        let payer = budget.payer;
        if remaining == 0 {
            return;
        }
        let parent = self.tasks[address].parent.clone();
        if let Some(parent_budget) = parent
            .filter(|p| self.tasks[p].status.is_open())
            .and_then(|p| self.tasks.get_mut(&p))
            .and_then(|p| p.budget.as_mut())
        {
            parent_budget.remaining_micro_usd += remaining;
            return;
        }
        for member in self.chain(payer) {
            if let Some(balance) = self.balances.get_mut(&(member, Resource::LlmBudgetUsd)) {
                balance.reserved = balance.reserved.saturating_sub(remaining);
            }
        }
    }

    fn spend_task_budget(&mut self, address: &str, amount: u64) -> Event {
        const ACTION: &str = "task.spend";
        let Some(budget) = self.tasks.get_mut(address).and_then(|t| t.budget.as_mut()) else {
            return Event::denied(ACTION, address, invalid("this task has no budget"));
        };
        let charged = amount.min(budget.remaining_micro_usd);
        let shortfall = amount - charged;
        budget.remaining_micro_usd -= charged;
        budget.spent_micro_usd = budget.spent_micro_usd.saturating_add(charged);
        let (payer, remaining) = (budget.payer, budget.remaining_micro_usd);
        for member in self.chain(payer) {
            if let Some(balance) = self.balances.get_mut(&(member, Resource::LlmBudgetUsd)) {
                balance.reserved = balance.reserved.saturating_sub(charged);
                balance.used = balance.used.saturating_add(charged);
            }
        }
        if let Some(balance) = self.balances.get_mut(&(payer, Resource::LlmBudgetUsd)) {
            balance.shortfall = balance.shortfall.saturating_add(shortfall);
        }
        if let Some(limit) = self.limits.get_mut("llm_spend_usd") {
            limit.roll_window(self.now_ms);
            limit.usage = limit.usage.saturating_add(amount);
        }
        Event::allowed(
            ACTION,
            address,
            Effect::TaskBudgetSpent {
                address: address.to_string(),
                charged,
                shortfall,
                remaining,
            },
        )
    }

    fn decompose(
        &mut self,
        command: &Command,
        actor_address: &str,
        address: &str,
        subtasks: &[NewTask],
        policy: ChildDeathPolicy,
    ) -> Event {
        const ACTION: &str = "task.decompose";
        if subtasks.is_empty() || subtasks.len() > SUBTASKS_MAX {
            return Event::denied(
                ACTION,
                address,
                invalid(format!("a decomposition has 1 to {SUBTASKS_MAX} subtasks")),
            );
        }
        let level = task_level(address);
        if level >= TASK_DEPTH_MAX {
            return Event::denied(
                ACTION,
                address,
                invalid(format!(
                    "{address} is at decomposition level {level}, the deepest allowed ({TASK_DEPTH_MAX}): complete it instead"
                )),
            );
        }
        let siblings: BTreeSet<String> = (1..=subtasks.len()).map(|i| i.to_string()).collect();
        for subtask in subtasks {
            if let Err(reason) = self.validate_new_task(subtask, &siblings) {
                return Event::denied(ACTION, address, reason);
            }
        }
        if let Some(cycle) = sibling_cycle(subtasks) {
            return Event::denied(
                ACTION,
                address,
                invalid(format!(
                    "the subtasks' dependencies form a cycle through subtask {cycle}"
                )),
            );
        }
        let shares: u64 = subtasks.iter().filter_map(|s| s.budget_micro_usd).sum();
        let remaining = self.tasks[address]
            .budget
            .as_ref()
            .map_or(0, |b| b.remaining_micro_usd);
        if shares > remaining {
            return Event::denied(
                ACTION,
                address,
                invalid(format!(
                    "the subtasks ask for {shares} micro-dollars; the task has {remaining} left"
                )),
            );
        }
        // The decomposition is admitted whole or not at all: every subtask counts
        // toward the limits before any is created.
        let bytes: u64 = subtasks
            .iter()
            .map(|subtask| task_bytes(command, subtask))
            .sum();
        let warnings = match self.gate_creation(command, subtasks.len() as u64, bytes) {
            Ok(warnings) => warnings,
            Err(reason) => return Event::denied(ACTION, address, reason),
        };
        self.end_attempt(address, "decomposed", None);
        let first = self.tasks[address].next_child + 1;
        let addresses: Vec<String> = (0..subtasks.len())
            .map(|i| format!("{address}.{}", first + i as u32))
            .collect();
        {
            let parent = self.tasks.get_mut(address).expect("checked");
            parent.next_child += subtasks.len() as u32;
            parent.children = addresses.clone();
            parent.on_child_death = policy;
        }
        self.set_status(
            address,
            TaskStatus::Blocked,
            actor_address,
            &command.justification,
        );
        let payer = self.tasks[address].budget.as_ref().map(|b| b.payer);
        for (subtask, child) in subtasks.iter().zip(&addresses) {
            let mut new = subtask.clone();
            new.depends_on = new
                .depends_on
                .iter()
                .map(|d| {
                    if siblings.contains(d) {
                        addresses[d.parse::<usize>().expect("sibling index") - 1].clone()
                    } else {
                        d.clone()
                    }
                })
                .collect();
            let budget = match (subtask.budget_micro_usd, payer) {
                (Some(share), Some(payer)) if share > 0 => {
                    let parent_budget = self
                        .tasks
                        .get_mut(address)
                        .and_then(|p| p.budget.as_mut())
                        .expect("checked");
                    parent_budget.remaining_micro_usd -= share;
                    Some(TaskBudget {
                        payer,
                        total_micro_usd: share,
                        remaining_micro_usd: share,
                        spent_micro_usd: 0,
                    })
                }
                _ => None,
            };
            if new.priority == Priority::default() && subtask.priority == Priority::default() {
                new.priority = self.tasks[address].priority;
            }
            self.insert_task(
                command,
                actor_address,
                child,
                Some(address),
                &new,
                budget,
                ChildDeathPolicy::Fail,
            );
        }
        Event::allowed(
            ACTION,
            address,
            Effect::TaskDecomposed {
                address: address.to_string(),
                children: addresses,
            },
        )
        .with_warnings(warnings)
    }

    pub(super) fn requeue_task(
        &mut self,
        actor_address: &str,
        address: &str,
        justification: &str,
    ) -> Event {
        const ACTION: &str = "task.requeue";
        let Some(task) = self.tasks.get(address) else {
            return Event::denied(ACTION, address, not_found("task", address));
        };
        if task.status != TaskStatus::Dead {
            return Event::denied(
                ACTION,
                address,
                invalid(format!(
                    "only dead tasks are requeued; {address} is {}",
                    task.status.as_str()
                )),
            );
        }
        let ready = task.depends_on.iter().all(|d| {
            self.tasks
                .get(d)
                .is_some_and(|t| t.status == TaskStatus::Completed)
        });
        let task = self.tasks.get_mut(address).expect("checked");
        task.failures = 0;
        task.children.clear();
        let to = if ready {
            TaskStatus::Pending
        } else {
            TaskStatus::Blocked
        };
        self.set_status(address, to, actor_address, justification);
        Event::allowed(
            ACTION,
            address,
            Effect::TaskChanged {
                address: address.to_string(),
                status: to,
            },
        )
    }
}

/// A subtask on a dependency cycle among siblings (`"1"`, `"2"`...), if any.
fn sibling_cycle(subtasks: &[NewTask]) -> Option<usize> {
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
fn task_bytes(_command: &Command, new: &NewTask) -> u64 {
    let lists: usize = new
        .capabilities
        .iter()
        .chain(new.depends_on.iter())
        .map(String::len)
        .sum();
    (new.title.len() + new.description.len() + lists) as u64
}

/// How deep a task is in its tree: 0 for a root task (`0.7.1.NNNNN`), 1 for its
/// subtasks, and so on.
fn task_level(address: &str) -> usize {
    address.split('.').count().saturating_sub(4)
}
