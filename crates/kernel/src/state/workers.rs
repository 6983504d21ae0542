//! The kernel's side of worker sessions: registration under `active_workers`,
//! heartbeats, graceful leave, and loss after a silent timeout.

use super::Effects;
use super::{forbidden, not_found, State};
use crate::command::Command;
use crate::event::{Decision, Effect, Event, Reason};
use crate::limits::LimitName;
use crate::limits::{AdmissionRequest, Gate, QueuedAdmission};
use crate::principal::PrincipalId;
use crate::tasks::TaskStatus;
use crate::workers::{
    NewWorker, WorkerHeard, WorkerSession, WorkerState, RENEW_WORKERS_MAX, SOFT_SESSION_LEASE_MS,
};
use crate::TaskAddress;

impl State {
    pub fn worker(&self, id: u64) -> Option<&WorkerSession> {
        self.workers.get(id)
    }

    pub fn workers(&self) -> impl Iterator<Item = &WorkerSession> {
        self.workers.all()
    }

    /// The active sessions only (through their deadlines' index: the sessions that
    /// ended, which stay for the record, are not walked).
    pub fn active_workers(&self) -> impl Iterator<Item = &WorkerSession> {
        self.workers.active()
    }

    /// Tasks leased to a worker session now, borrowed (nothing is copied).
    pub fn worker_task_addresses(&self, id: u64) -> impl Iterator<Item = &str> {
        self.workers.tasks_of(id).map(TaskAddress::as_str)
    }

    /// Tasks leased to a worker session now.
    pub fn worker_tasks(&self, id: u64) -> Vec<TaskAddress> {
        self.workers.tasks_of(id).cloned().collect()
    }

    pub(super) fn workers_next_due_ms(&self) -> Option<u64> {
        self.workers.next_due_ms()
    }

    /// Declares silent workers lost and puts their tasks back on the board.
    pub(super) fn process_workers_due(&mut self, fx: &mut Effects, events: &mut Vec<Event>) {
        while let Some((deadline, id)) = self.workers.due(self.now_ms) {
            let worker = self.workers.get(id).expect("indexed sessions exist");
            if worker.state != WorkerState::Active || worker.deadline_ms != deadline {
                continue;
            }
            let last = worker.last_heartbeat_ms;
            let event = self.silent_worker_lost(fx, id, last, "");
            events.push(event);
        }
    }

    /// Declares an active session lost for its silence since `last`: its tasks go
    /// back on the board, the evidence is kept on it and in the record.
    fn silent_worker_lost(&mut self, fx: &mut Effects, id: u64, last: u64, note: &str) -> Event {
        let timeout_ms = self.tasks.config().worker_timeout_ms;
        let evidence = format!(
            "no heartbeat since {last}{note}; timeout {timeout_ms} ms; declared lost at {}",
            self.now_ms
        );
        let revoked = self.end_session(fx, id, WorkerState::Lost, "worker_lost", &evidence);
        let worker = self.workers.edit(id).expect("exists");
        let address = worker.address.clone();
        worker.evidence = Some(evidence);
        let mut event = Event::allowed(
            "worker.lost",
            address,
            Effect::WorkerEnded {
                worker: id,
                state: WorkerState::Lost,
                released: revoked.clone(),
            },
        );
        event.reason = Reason::WorkerSilent {
            worker: id,
            last_heartbeat_ms: last,
            timeout_ms,
            revoked,
        };
        event
    }

    /// Sessions the node heard from (soft liveness), each kept until its last
    /// heartbeat plus [`SOFT_SESSION_LEASE_MS`]; ended or unknown sessions are
    /// skipped (they ended since the node heard them).
    pub(super) fn renew_workers(&mut self, heard: &[WorkerHeard]) -> Event {
        const ACTION: &str = "worker.renew";
        if heard.len() > RENEW_WORKERS_MAX {
            return Event::denied(
                ACTION,
                "workers",
                Reason::Invalid {
                    message: format!("at most {RENEW_WORKERS_MAX} sessions a renewal"),
                },
            );
        }
        for one in heard {
            let Some(worker) = self.workers.get(one.worker) else {
                continue;
            };
            if worker.state != WorkerState::Active || one.at_ms > self.now_ms {
                continue;
            }
            let deadline = one
                .at_ms
                .saturating_add(SOFT_SESSION_LEASE_MS)
                .max(worker.deadline_ms);
            let moved = deadline != worker.deadline_ms;
            let worker = self.workers.edit(one.worker).expect("found above");
            worker.last_heartbeat_ms = worker.last_heartbeat_ms.max(one.at_ms);
            if moved {
                self.workers.move_deadline(one.worker, deadline);
            }
            // Its leases are kept as long as a heartbeat would keep them.
            for address in self.worker_tasks(one.worker) {
                self.extend_lease(&address, one.at_ms);
            }
        }
        Event::allowed(ACTION, "workers", Effect::None)
    }

    /// The node heard nothing from `id` since `last_heard_ms`, longer ago than the
    /// workers' timeout: the session is lost. Refused while the timeout has not
    /// passed, or when the log holds a later heartbeat (the node's view is behind).
    pub(super) fn declare_worker_lost(
        &mut self,
        fx: &mut Effects,
        id: u64,
        last_heard_ms: u64,
    ) -> Event {
        const ACTION: &str = "worker.lost";
        let subject = format!("worker:{id}");
        let Some(worker) = self.workers.get(id) else {
            return Event::denied(ACTION, subject, not_found("worker", id));
        };
        if worker.state != WorkerState::Active {
            // Ended already: nothing to decide.
            return Event::allowed(ACTION, worker.address.clone(), Effect::None);
        }
        let timeout_ms = self.tasks.config().worker_timeout_ms;
        if worker.last_heartbeat_ms > last_heard_ms
            || last_heard_ms.saturating_add(timeout_ms) > self.now_ms
        {
            return Event::denied(
                ACTION,
                subject,
                Reason::Invalid {
                    message: format!(
                        "worker {id} was heard at {} ms, within its timeout of {timeout_ms} ms",
                        worker.last_heartbeat_ms.max(last_heard_ms)
                    ),
                },
            );
        }
        self.silent_worker_lost(fx, id, last_heard_ms, " (heard by the node)")
    }

    /// Ends a session: releases its `active_workers` unit and puts its tasks back
    /// on the board (resuming from their checkpoints). Returns those tasks.
    pub(super) fn end_session(
        &mut self,
        fx: &mut Effects,
        id: u64,
        state: WorkerState,
        outcome: &str,
        why: &str,
    ) -> Vec<TaskAddress> {
        self.workers.end(id, state, self.now_ms);
        if let Some(limit) = self.limits.edit(&LimitName::ActiveWorkers) {
            limit.usage = limit.usage.saturating_sub(1);
        }
        let tasks = self.worker_tasks(id);
        for address in &tasks {
            self.end_attempt(address, outcome, Some(why.to_string()));
            if self.tasks.known(address).status.is_open() {
                self.set_status(fx, address, TaskStatus::Pending, "0.1", why);
            }
        }
        tasks
    }

    /// Registers a session, or queues the registration when `active_workers` is past
    /// soft with `on_soft = "queue"` (the session's id is then its ticket, and it
    /// exists once admitted). `admitted` is set when the queue admits it.
    pub(super) fn register_worker(
        &mut self,
        command: &Command,
        actor_address: &str,
        new: &NewWorker,
        admitted: Option<&QueuedAdmission>,
    ) -> Event {
        const ACTION: &str = "worker.register";
        if new.capabilities.len() > crate::tasks::CAPABILITIES_MAX {
            return Event::denied(
                ACTION,
                actor_address,
                super::invalid("too many capabilities"),
            );
        }
        let mut warnings = Vec::new();
        let actor_is_admin = self.principals.known(command.actor).is_admin();
        if let Some(limit) = self.limits.edit(&LimitName::ActiveWorkers) {
            match limit.gate(1) {
                Gate::Allow => {}
                Gate::Warn(reason) => warnings.push(reason),
                Gate::Queue(reason) if admitted.is_some() => warnings.push(reason),
                Gate::Queue(reason) => {
                    if let Err(reason) = limit.queue_room(command.actor, actor_is_admin) {
                        return Event::denied(ACTION, actor_address, reason);
                    }
                    let position = limit.enqueue(QueuedAdmission {
                        ticket: command.seq,
                        priority: crate::command::Priority::Normal,
                        queued_at_ms: command.at_ms,
                        actor: command.actor,
                        justification: command.justification.clone(),
                        request: AdmissionRequest::RegisterWorker(new.clone()),
                    });
                    return Event {
                        action: ACTION,
                        subject: actor_address.to_string(),
                        decision: Decision::Queued,
                        reason,
                        warnings: Vec::new(),
                        effect: Effect::WorkerQueued {
                            ticket: command.seq,
                            position,
                        },
                    };
                }
                Gate::Deny(reason) => return Event::denied(ACTION, actor_address, reason),
            }
            limit.usage += 1;
        }
        let timeout_ms = self.tasks.config().worker_timeout_ms;
        let mut capabilities = new.capabilities.clone();
        capabilities.sort();
        capabilities.dedup();
        let id = command.seq;
        let deadline_ms = self.now_ms + timeout_ms;
        self.workers.register(WorkerSession {
            id,
            principal: command.actor,
            address: actor_address.to_string(),
            capabilities,
            model: new.model.clone(),
            profile: new.profile.clone(),
            state: WorkerState::Active,
            registered_at_ms: self.now_ms,
            last_heartbeat_ms: self.now_ms,
            deadline_ms,
            ended_at_ms: None,
            evidence: None,
        });
        let effect = Effect::WorkerRegistered {
            worker: id,
            deadline_ms,
        };
        let mut event = Event::allowed(ACTION, actor_address, effect).with_warnings(warnings);
        if let Some(queued) = admitted {
            event.decision = Decision::Admitted;
            event.reason = Reason::LimitAllows {
                limit: "active_workers".into(),
                ticket: queued.ticket,
                waited_ms: self.now_ms - queued.queued_at_ms,
            };
        }
        event
    }

    /// The actor's own active session, or why not.
    pub(super) fn own_active_worker(&self, command: &Command, id: u64) -> Result<(), Reason> {
        self.worker_refusal(command.actor, id).map_or(Ok(()), Err)
    }

    /// Why `actor` may not act for session `id`: there is none, it is another
    /// principal's, or it ended.
    pub fn worker_refusal(&self, actor: PrincipalId, id: u64) -> Option<Reason> {
        let Some(worker) = self.workers.get(id) else {
            return Some(not_found("worker", id));
        };
        if worker.principal != actor {
            return Some(forbidden(
                "this worker session belongs to another principal",
            ));
        }
        if worker.state != WorkerState::Active {
            return Some(Reason::WorkerGone {
                worker: id,
                state: worker.state.as_str().to_string(),
            });
        }
        None
    }

    pub(super) fn worker_heartbeat(&mut self, command: &Command, id: u64) -> Event {
        const ACTION: &str = "worker.heartbeat";
        let subject = format!("worker:{id}");
        if let Err(reason) = self.own_active_worker(command, id) {
            return Event::denied(ACTION, subject, reason);
        }
        let timeout_ms = self.tasks.config().worker_timeout_ms;
        let deadline_ms = self.now_ms + timeout_ms;
        self.workers.edit(id).expect("checked").last_heartbeat_ms = self.now_ms;
        self.workers.move_deadline(id, deadline_ms);
        Event::allowed(
            ACTION,
            subject,
            Effect::WorkerRegistered {
                worker: id,
                deadline_ms,
            },
        )
    }

    /// A dropped bus connection whose grace period ran out: the worker is lost
    /// unless it was heard from after the drop.
    pub(super) fn worker_disconnected(
        &mut self,
        fx: &mut Effects,
        id: u64,
        disconnected_at_ms: u64,
        grace_ms: u64,
    ) -> Event {
        const ACTION: &str = "worker.lost";
        let Some(worker) = self.workers.get(id) else {
            return self.withdraw_queued_worker(id, disconnected_at_ms, grace_ms);
        };
        let address = worker.address.clone();
        // Heard from after the drop: a heartbeat, or a resumed hello. A session the
        // queue admitted after its connection dropped has not been heard from.
        let heard_after_drop = worker.last_heartbeat_ms >= disconnected_at_ms
            && worker.last_heartbeat_ms > worker.registered_at_ms;
        if worker.state != WorkerState::Active || heard_after_drop {
            // Gone already, or back: nothing to decide.
            return Event::allowed("worker.disconnected", address, Effect::None);
        }
        let evidence = format!(
            "bus connection dropped at {disconnected_at_ms} without a graceful leave; \
             not back within the {grace_ms} ms grace period; declared lost at {}",
            self.now_ms
        );
        let revoked = self.end_session(fx, id, WorkerState::Lost, "worker_lost", &evidence);
        self.workers.edit(id).expect("exists").evidence = Some(evidence);
        let mut event = Event::allowed(
            ACTION,
            address,
            Effect::WorkerEnded {
                worker: id,
                state: WorkerState::Lost,
                released: revoked.clone(),
            },
        );
        event.reason = Reason::WorkerDisconnected {
            worker: id,
            disconnected_at_ms,
            grace_ms,
            revoked,
        };
        event
    }

    /// A registration still waiting in the `active_workers` queue when its
    /// connection's grace period ran out: taken out, so that it is never admitted for
    /// nobody.
    fn withdraw_queued_worker(
        &mut self,
        ticket: u64,
        disconnected_at_ms: u64,
        grace_ms: u64,
    ) -> Event {
        let Some(queued) = self.take_queued_registration(ticket, None) else {
            return Event::denied(
                "worker.lost",
                format!("worker:{ticket}"),
                not_found("worker", ticket),
            );
        };
        let address = self
            .principals
            .get(queued.actor)
            .map_or_else(|| format!("worker:{ticket}"), |p| p.address.clone());
        let mut event = Event::allowed(
            "worker.withdraw",
            address,
            Effect::WorkerWithdrawn { ticket },
        );
        event.reason = Reason::WorkerDisconnected {
            worker: ticket,
            disconnected_at_ms,
            grace_ms,
            revoked: Vec::new(),
        };
        event
    }

    /// The registration waiting in the `active_workers` queue with this ticket (and
    /// of `actor`, when named), taken out of the queue.
    fn take_queued_registration(
        &mut self,
        ticket: u64,
        actor: Option<PrincipalId>,
    ) -> Option<QueuedAdmission> {
        let limit = self.limits.edit(&LimitName::ActiveWorkers)?;
        let position = limit.queue.iter().position(|q| {
            q.ticket == ticket
                && matches!(q.request, AdmissionRequest::RegisterWorker(_))
                && actor.is_none_or(|actor| q.actor == actor)
        })?;
        Some(limit.queue.remove(position))
    }

    pub(super) fn leave_worker(&mut self, fx: &mut Effects, command: &Command, id: u64) -> Event {
        const ACTION: &str = "worker.leave";
        let subject = format!("worker:{id}");
        if self.workers.get(id).is_none() {
            // A session still waiting for a place leaves the queue: it is never
            // admitted for nobody.
            if self
                .take_queued_registration(id, Some(command.actor))
                .is_some()
            {
                return Event::allowed(
                    "worker.withdraw",
                    subject,
                    Effect::WorkerWithdrawn { ticket: id },
                );
            }
        }
        if let Err(reason) = self.own_active_worker(command, id) {
            return Event::denied(ACTION, subject, reason);
        }
        let released =
            self.end_session(fx, id, WorkerState::Left, "worker_left", "the worker left");
        Event::allowed(
            ACTION,
            subject,
            Effect::WorkerEnded {
                worker: id,
                state: WorkerState::Left,
                released,
            },
        )
    }
}
