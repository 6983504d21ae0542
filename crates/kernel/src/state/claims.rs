//! Claims: the best claimable task for a worker's capabilities, leases with fencing
//! tokens, their renewal and end, and the implicit session of a claimant without one.

use super::Effects;
use std::collections::BTreeSet;

use super::task_control::TIMED_OUT;
use super::{forbidden, invalid, not_found, State};
use crate::command::Command;
use crate::event::{Effect, Event, Reason};
use crate::limits::{Gate, LimitName};
use crate::principal::PrincipalId;
use crate::tasks::*;
use crate::TaskAddress;

impl State {
    pub(super) fn claim_task(
        &mut self,
        fx: &mut Effects,
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
        let config = self.tasks.config().clone();
        let lease_ms = match lease_ms_within(&config, lease_ms) {
            Ok(lease_ms) => lease_ms,
            Err(reason) => return Event::denied(ACTION, actor_address, reason),
        };
        if capabilities.len() > CAPABILITIES_MAX {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!("at most {CAPABILITIES_MAX} capabilities")),
            );
        }
        let held = self.leases.held_by(command.actor) as u64;
        let mut warnings = Vec::new();
        if let Some(limit) = self.limits.get(&LimitName::TasksPerWorker) {
            let mut view = limit.clone();
            view.usage = held;
            match view.gate(1) {
                Gate::Allow => {}
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Event::denied(ACTION, actor_address, reason),
            }
        }
        let registered = self.capabilities_offered(capabilities, worker);
        let offered: BTreeSet<&str> = registered.iter().map(String::as_str).collect();
        let Some(address) = self.best_claimable(&offered, &config) else {
            return Event::allowed(ACTION, actor_address, Effect::NothingToClaim);
        };
        match self.hold_implicit_session(command.actor, worker) {
            Ok(found) => warnings.extend(found),
            Err(reason) => return Event::denied(ACTION, actor_address, reason),
        }
        self.grant_lease(fx, command, actor_address, &address, lease_ms, worker)
            .with_warnings(warnings)
    }

    /// Whether a `ClaimTask` by `actor` would find nothing to claim now, decided
    /// without changing anything: `Some(true)` only when the command would be
    /// allowed and answer `NothingToClaim` (the actor may act and is not quarantined,
    /// the session is its own and active, the request is within bounds and its
    /// tasks-per-worker limit, and no claimable task matches). A node answers such a
    /// poll without logging it; anything else (`None`, or `Some(false)`: there is
    /// work) goes through the kernel as a command.
    pub fn finds_nothing_to_claim(
        &self,
        actor: PrincipalId,
        capabilities: &[String],
        lease_ms: Option<u64>,
        worker: Option<u64>,
    ) -> Option<bool> {
        if self.actor_refusal(actor).is_some() {
            return None;
        }
        let config = self.tasks.config();
        if capabilities.len() > CAPABILITIES_MAX || lease_ms_within(config, lease_ms).is_err() {
            return None;
        }
        if let Some(id) = worker {
            if self.worker_refusal(actor, id).is_some() {
                return None;
            }
        }
        let registered = self.capabilities_offered(capabilities, worker);
        if let Some(limit) = self.limits.get(&LimitName::TasksPerWorker) {
            let mut view = limit.clone();
            view.usage = self.leases.held_by(actor) as u64;
            if matches!(view.gate(1), Gate::Deny(_)) {
                return None;
            }
        }
        let offered: BTreeSet<&str> = registered.iter().map(String::as_str).collect();
        Some(self.best_claimable(&offered, config).is_none())
    }

    /// What a claim offers: its own capabilities, or, when it names none, those its
    /// worker session registered.
    pub fn capabilities_offered(
        &self,
        capabilities: &[String],
        worker: Option<u64>,
    ) -> Vec<String> {
        match worker.and_then(|id| self.workers.get(id)) {
            Some(session) if capabilities.is_empty() => session.capabilities.clone(),
            _ => capabilities.to_vec(),
        }
    }

    /// Claims a task by its address, if it is claimable now.
    pub(super) fn claim_specific_task(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
        lease_ms: Option<u64>,
    ) -> Event {
        const ACTION: &str = "task.claim";
        let config = self.tasks.config().clone();
        let lease_ms = match lease_ms_within(&config, lease_ms) {
            Ok(lease_ms) => lease_ms,
            Err(reason) => return Event::denied(ACTION, address, reason),
        };
        let Some(task) = self.tasks.get(address) else {
            return Event::denied(ACTION, address, not_found("task", address));
        };
        if task.status != TaskStatus::Pending {
            let reason = Reason::NotClaimable {
                task: address.clone(),
                status: task.status.as_str().to_string(),
                holder: task.lease.as_ref().map(|l| l.holder_address.clone()),
            };
            return Event::denied(ACTION, address, reason);
        }
        let held = self.leases.held_by(command.actor) as u64;
        if let Some(limit) = self.limits.get(&LimitName::TasksPerWorker) {
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
        self.grant_lease(fx, command, actor_address, address, lease_ms, None)
            .with_warnings(warnings)
    }

    /// A claim without a worker session by a principal that has none holds an
    /// implicit one: a unit of `active_workers` until its last lease ends, so that
    /// principals that never register are counted like workers.
    pub(super) fn hold_implicit_session(
        &mut self,
        actor: PrincipalId,
        worker: Option<u64>,
    ) -> Result<Vec<Reason>, Reason> {
        if worker.is_some()
            || self.leases.has_implicit(actor)
            || self
                .workers
                .all()
                .any(|w| w.principal == actor && w.state == crate::workers::WorkerState::Active)
        {
            return Ok(Vec::new());
        }
        let mut warnings = Vec::new();
        if let Some(limit) = self.limits.edit(&LimitName::ActiveWorkers) {
            match limit.gate(1) {
                Gate::Allow => {}
                // A claim is not queued: past soft it is a warning.
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Err(reason),
            }
            limit.usage += 1;
        }
        self.leases.hold_implicit(actor);
        Ok(warnings)
    }

    pub(super) fn grant_lease(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
        lease_ms: u64,
        worker: Option<u64>,
    ) -> Event {
        let token = command.seq;
        let attempt_deadline_ms = self
            .now_ms
            .saturating_add(self.tasks.known(address).attempt_timeout_ms);
        // A lease never runs past the attempt's deadline: at the deadline it ends,
        // and the attempt fails as timed out.
        let expires_at_ms = self
            .now_ms
            .saturating_add(lease_ms)
            .min(attempt_deadline_ms);
        self.set_status(
            fx,
            address,
            TaskStatus::Claimed,
            actor_address,
            &command.justification,
        );
        let task = self.tasks.edit(address).expect("claimable");
        let number = task.attempts.len() as u32 + 1;
        task.attempts.push(Attempt {
            number,
            worker: actor_address.to_string(),
            token,
            started_at_ms: self.now_ms,
            ended_at_ms: None,
            outcome: None,
            reason: None,
            last_renewed_at_ms: None,
        });
        task.lease = Some(Lease {
            holder: command.actor,
            holder_address: actor_address.to_string(),
            token,
            lease_ms,
            expires_at_ms,
            worker,
            attempt_deadline_ms,
            renewed_at_ms: self.now_ms,
        });
        self.leases.take(address, command.actor, expires_at_ms);
        if let Some(worker) = worker {
            self.workers.lease(worker, address);
        }
        Event::allowed(
            "task.claim",
            address,
            Effect::TaskClaimed {
                address: address.clone(),
                token,
                expires_at_ms,
            },
        )
    }

    /// The claimable task with the highest effective priority whose every required
    /// capability is offered.
    pub(super) fn best_claimable(
        &self,
        offered: &BTreeSet<&str>,
        config: &TaskConfig,
    ) -> Option<TaskAddress> {
        let mut best: Option<(u32, u64, &TaskAddress)> = None;
        for (score, level) in self.index.levels() {
            if best.is_some_and(|(effective, _, _)| score + config.aging_points_max < effective) {
                break;
            }
            // Within a level the oldest is the most aged: the first match is its best.
            let found = level
                .iter()
                .take(CLAIM_SCAN_PER_LEVEL_MAX)
                .find(|(_, address)| {
                    self.tasks
                        .known(address)
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
                            std::cmp::Reverse(best_address.as_str()),
                        )
                    }
                };
                if better {
                    best = Some((effective, *ready_since, address));
                }
            }
        }
        best.map(|(_, _, address)| address.clone())
    }

    /// Checks the fencing token; a stale one is a recorded conflict.
    pub(super) fn check_lease(
        &self,
        address: &str,
        actor: PrincipalId,
        token: u64,
    ) -> Result<(), Reason> {
        let Some(task) = self.tasks.get(address) else {
            return Err(not_found("task", address));
        };
        match &task.lease {
            Some(lease) if lease.token == token && lease.holder == actor => Ok(()),
            Some(lease) if lease.token == token => {
                Err(forbidden("this lease belongs to another principal"))
            }
            _ if task.status == TaskStatus::Cancelled => Err(self.cancellation(&task.address)),
            _ if task
                .attempts
                .iter()
                .any(|a| a.token == token && a.outcome.as_deref() == Some(TIMED_OUT)) =>
            {
                Err(self.time_out_reason(&task.address, token))
            }
            lease => Err(Reason::StaleLease {
                task: task.address.clone(),
                presented: token,
                current: lease.as_ref().map(|l| l.token),
                status: task.status.as_str().to_string(),
            }),
        }
    }

    pub(super) fn clear_lease(&mut self, address: &TaskAddress) {
        if let Some(lease) = self.tasks.edit(address).and_then(|t| t.lease.take()) {
            if self
                .leases
                .give_back(address, lease.holder, lease.expires_at_ms)
            {
                if let Some(limit) = self.limits.edit(&LimitName::ActiveWorkers) {
                    limit.usage = limit.usage.saturating_sub(1);
                }
            }
            if let Some(worker) = lease.worker {
                self.workers.unlease(worker, address);
            }
        }
    }

    pub(super) fn end_attempt(
        &mut self,
        address: &TaskAddress,
        outcome: &str,
        reason: Option<String>,
    ) {
        let renewed_at_ms = self
            .tasks
            .known(address)
            .lease
            .as_ref()
            .map(|l| l.renewed_at_ms);
        self.clear_lease(address);
        let now = self.now_ms;
        if let Some(attempt) = self.tasks.edit(address).and_then(|t| t.attempts.last_mut()) {
            if attempt.ended_at_ms.is_none() {
                attempt.ended_at_ms = Some(now);
                attempt.outcome = Some(outcome.to_string());
                attempt.reason = reason;
                attempt.last_renewed_at_ms = renewed_at_ms;
            }
        }
    }

    /// The lease `actor` holds on the task at `address` with `token`, when a
    /// heartbeat on it would be allowed and change nothing but the lease's expiry
    /// (the task is in progress, the actor may act): what a node may answer in memory
    /// and renew later with [`CommandBody::RenewLeases`]. `None`: the heartbeat goes
    /// through the kernel, which decides and says why.
    ///
    /// [`CommandBody::RenewLeases`]: crate::CommandBody::RenewLeases
    pub fn soft_renewable(&self, actor: PrincipalId, address: &str, token: u64) -> Option<&Lease> {
        if self.actor_refusal(actor).is_some() || self.check_lease(address, actor, token).is_err() {
            return None;
        }
        let task = self.tasks.get(address)?;
        (task.status == TaskStatus::InProgress)
            .then_some(task.lease.as_ref())
            .flatten()
    }

    /// Soft lease renewals: each lease still held with its token, its task in
    /// progress, is extended to when its holder was heard plus its length.
    pub(super) fn renew_leases(&mut self, heard: &[LeaseHeard]) -> Event {
        const ACTION: &str = "task.renew_leases";
        if heard.len() > RENEW_LEASES_MAX {
            return Event::denied(
                ACTION,
                TASK_QUEUE_ADDRESS,
                Reason::Invalid {
                    message: format!("at most {RENEW_LEASES_MAX} leases a renewal"),
                },
            );
        }
        for one in heard {
            let holds = self.tasks.get(&one.address).is_some_and(|task| {
                task.status == TaskStatus::InProgress
                    && task.lease.as_ref().is_some_and(|l| l.token == one.token)
            });
            if holds && one.at_ms <= self.now_ms {
                self.extend_lease(&one.address, one.at_ms);
            }
        }
        Event::allowed(ACTION, TASK_QUEUE_ADDRESS, Effect::None)
    }

    /// Extends a lease to `heard_at_ms` plus its length (never past its attempt's
    /// deadline, never shorter than it is): its holder's session was heard then.
    pub(super) fn extend_lease(&mut self, address: &TaskAddress, heard_at_ms: u64) {
        let Some(task) = self.tasks.edit(address) else {
            return;
        };
        let Some(lease) = task.lease.as_mut() else {
            return;
        };
        let expires = heard_at_ms
            .saturating_add(lease.lease_ms)
            .min(lease.attempt_deadline_ms);
        if expires <= lease.expires_at_ms {
            return;
        }
        self.leases.move_end(address, lease.expires_at_ms, expires);
        lease.expires_at_ms = expires;
        lease.renewed_at_ms = lease.renewed_at_ms.max(heard_at_ms);
    }

    pub(super) fn renew_lease(&mut self, address: &TaskAddress) {
        let now = self.now_ms;
        let task = self.tasks.edit(address).expect("exists");
        if let Some(lease) = task.lease.as_mut() {
            let from = lease.expires_at_ms;
            lease.expires_at_ms = now
                .saturating_add(lease.lease_ms)
                .min(lease.attempt_deadline_ms);
            lease.renewed_at_ms = now;
            self.leases.move_end(address, from, lease.expires_at_ms);
        }
    }
}

/// The lease a claim asks for (the board's default when it names none), if within
/// the board's bounds.
fn lease_ms_within(config: &TaskConfig, requested: Option<u64>) -> Result<u64, Reason> {
    let lease_ms = requested.unwrap_or(config.lease_ms);
    if lease_ms == 0 || lease_ms > config.lease_max_ms {
        return Err(invalid(format!(
            "lease_ms must be between 1 and {}",
            config.lease_max_ms
        )));
    }
    Ok(lease_ms)
}
