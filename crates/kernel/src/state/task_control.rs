//! Work that must not be stuck: an attempt past its deadline fails as timed out
//! however often its lease was renewed, and a poster cancels a task with its open
//! subtasks, or changes its priority, after posting.
//!
//! Who directs a task: an admin; the principal that posted it or any task above it
//! (a decomposer posts the subtasks it creates); and any principal ancestor of such a
//! poster.

use super::{forbidden, invalid, not_found, Effects, State};
use crate::command::{Command, Priority};
use crate::event::{Effect, Event, Reason};
use crate::tasks::*;
use crate::TaskAddress;

/// An attempt's outcome when it ran past its deadline.
pub(super) const TIMED_OUT: &str = "timed_out";
const CANCELLED: &str = "cancelled";

impl State {
    /// Fails the attempt whose lease reached its deadline, as timed out, with the
    /// evidence; the task retries with backoff or goes to the dead-letter queue.
    pub(super) fn time_out_attempt(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        lease: &Lease,
        events: &mut Vec<Event>,
    ) {
        let timeout_ms = self.tasks.known(address).attempt_timeout_ms;
        let text = format!(
            "the attempt of {} ran past its attempt_timeout of {timeout_ms} ms",
            lease.holder_address
        );
        self.end_attempt(address, TIMED_OUT, Some(text.clone()));
        let mut event = Event::allowed("task.timed_out", address, Effect::None);
        event.reason = self.time_out_reason(address, lease.token);
        events.push(event);
        const WHY: &str = "the attempt ran past its attempt_timeout";
        self.fail_attempt(fx, address, &text, "0.1", WHY, events);
    }

    /// A new task's `attempt_timeout_ms`, if it names one, within the board's bounds.
    pub(super) fn check_attempt_timeout(&self, new: &NewTask) -> Result<(), Reason> {
        let Some(timeout_ms) = new.attempt_timeout_ms else {
            return Ok(());
        };
        let max_ms = self.tasks.config().attempt_timeout_max_ms;
        if !(ATTEMPT_TIMEOUT_MIN_MS..=max_ms).contains(&timeout_ms) {
            return Err(invalid(format!(
                "attempt_timeout is {ATTEMPT_TIMEOUT_MIN_MS} ms to {max_ms} ms (tasks.attempt_timeout_max); {timeout_ms} ms was asked"
            )));
        }
        Ok(())
    }

    /// Why the attempt under `token` ended as timed out.
    pub(super) fn time_out_reason(&self, address: &TaskAddress, token: u64) -> Reason {
        let task = &self.tasks.known(address);
        let attempt = task.attempts.iter().find(|a| a.token == token);
        let started_at_ms = attempt.map_or(0, |a| a.started_at_ms);
        Reason::AttemptTimedOut {
            task: address.clone(),
            attempt: attempt.map_or(0, |a| a.number),
            holder: attempt.map_or_else(String::new, |a| a.worker.clone()),
            started_at_ms,
            deadline_ms: started_at_ms.saturating_add(task.attempt_timeout_ms),
            timeout_ms: task.attempt_timeout_ms,
            last_renewed_at_ms: attempt
                .and_then(|a| a.last_renewed_at_ms)
                .unwrap_or(started_at_ms),
        }
    }

    /// Why a cancelled task refuses its former holder: who cancelled it, when, and
    /// the task whose cancellation took it (the highest one cancelled at that time).
    pub(super) fn cancellation(&self, address: &TaskAddress) -> Reason {
        let task = &self.tasks.known(address);
        let (by, at_ms) = task
            .history
            .iter()
            .rev()
            .find(|t| t.to == TaskStatus::Cancelled)
            .map_or((String::new(), 0), |t| (t.by.clone(), t.at_ms));
        let mut cancelled = address.clone();
        let mut above = task.parent.clone();
        while let Some(parent) = above {
            let Some(parent_task) = self.tasks.get(&parent) else {
                break;
            };
            let same = parent_task.status == TaskStatus::Cancelled
                && parent_task
                    .history
                    .last()
                    .is_some_and(|t| t.to == TaskStatus::Cancelled && t.at_ms == at_ms);
            if !same {
                break;
            }
            cancelled = parent.clone();
            above = parent_task.parent.clone();
        }
        Reason::Cancelled {
            task: address.clone(),
            by,
            at_ms,
            cancelled,
        }
    }

    /// Cancels an open task and its open subtasks, deepest first, so that what is
    /// left of each budget flows up and back to whoever funded it; a parent whose
    /// other subtasks are all done completes.
    pub(super) fn cancel_task(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
    ) -> Event {
        const ACTION: &str = "task.cancel";
        if let Err(reason) = self.may_direct(command, address) {
            return Event::denied(ACTION, address, reason);
        }
        let subtree = match self.open_subtree(address) {
            Ok(subtree) => subtree,
            Err(reason) => return Event::denied(ACTION, address, reason),
        };
        let payer_before = self.refundable_by_payers(&subtree);
        let mut leases_ended = Vec::new();
        for task in subtree.iter().rev() {
            if let Some(lease) = &self.tasks.known(task).lease {
                leases_ended.push((task.clone(), lease.holder_address.clone()));
            }
            let text = format!("cancelled by {actor_address}");
            self.end_attempt(task, CANCELLED, Some(text));
            self.set_status(
                fx,
                task,
                TaskStatus::Cancelled,
                actor_address,
                &command.justification,
            );
            self.return_budget(task);
        }
        let refunded_micro_usd = payer_before.saturating_sub(self.refundable_by_payers(&subtree));
        // Each former holder is told (on the bus, as the decision is published) why
        // its next heartbeat or completion is refused.
        for (task, _) in &leases_ended {
            let mut told = Event::allowed(
                ACTION,
                task.clone(),
                Effect::TaskChanged {
                    address: task.clone(),
                    status: TaskStatus::Cancelled,
                },
            );
            told.reason = self.cancellation(task);
            fx.consequences.push(told);
        }
        self.complete_parent_if_done(fx, address);
        Event::allowed(
            ACTION,
            address,
            Effect::TaskCancelled {
                address: address.clone(),
                cancelled: subtree,
                leases_ended,
                refunded_micro_usd,
            },
        )
    }

    /// Changes an open task's base priority (and its place among claimable tasks).
    pub(super) fn set_task_priority(
        &mut self,
        command: &Command,
        address: &TaskAddress,
        priority: Priority,
    ) -> Event {
        const ACTION: &str = "task.priority";
        if let Err(reason) = self.may_direct(command, address) {
            return Event::denied(ACTION, address, reason);
        }
        let task = &self.tasks.known(address);
        if !task.status.is_open() {
            let message = format!(
                "{address} is {}: its priority no longer matters",
                task.status.as_str()
            );
            return Event::denied(ACTION, address, invalid(message));
        }
        let previous = task.priority;
        if previous == priority {
            let message = format!("{address} already has priority {}", priority.as_str());
            return Event::denied(ACTION, address, invalid(message));
        }
        let pending = task.status == TaskStatus::Pending;
        if pending {
            self.unindex(address);
        }
        self.tasks.edit(address).expect("checked").priority = priority;
        if pending {
            self.index(address);
        }
        Event::allowed(
            ACTION,
            address,
            Effect::TaskPriorityChanged {
                address: address.clone(),
                priority,
                previous,
            },
        )
    }

    /// Whether the actor directs the task: an admin, the poster of the task or of a
    /// task above it, or a principal ancestor of such a poster.
    fn may_direct(&self, command: &Command, address: &TaskAddress) -> Result<(), Reason> {
        if !self.tasks.contains(address) {
            return Err(not_found("task", address));
        }
        if self.principals.known(command.actor).is_admin() {
            return Ok(());
        }
        let mut next = Some(address.clone());
        // Task depth is bounded (TASK_DEPTH_MAX), and so is this walk.
        while let Some(current) = next {
            let task = &self.tasks.known(&current);
            if let Some(poster) = self.directory.id_of(&task.created_by) {
                if self.chain(poster).contains(&command.actor) {
                    return Ok(());
                }
            }
            next = task.parent.clone();
        }
        Err(forbidden(format!(
            "{address} is directed by whoever posted it or a task above it, their ancestors, and admins"
        )))
    }

    /// The task and its open subtasks, the task first and each parent before its
    /// children; refused past `CANCEL_TASKS_MAX` or when the task is not open.
    fn open_subtree(&self, address: &TaskAddress) -> Result<Vec<TaskAddress>, Reason> {
        let status = self.tasks.known(address).status;
        if !status.is_open() {
            return Err(invalid(format!(
                "{address} is {}; only open tasks are cancelled",
                status.as_str()
            )));
        }
        let mut subtree = Vec::new();
        let mut stack = vec![address.clone()];
        while let Some(current) = stack.pop() {
            if subtree.len() >= CANCEL_TASKS_MAX {
                return Err(invalid(format!(
                    "{address} has more than {CANCEL_TASKS_MAX} open tasks under it: cancel its subtasks first"
                )));
            }
            let children = self
                .tasks
                .known(&current)
                .children
                .iter()
                .filter(|child| self.tasks.get(child).is_some_and(|t| t.status.is_open()))
                .cloned();
            stack.extend(children);
            subtree.push(current);
        }
        Ok(subtree)
    }

    /// What the tasks' budgets still hold for their payers (before and after a
    /// cancellation, to say how much was refunded).
    fn refundable_by_payers(&self, tasks: &[TaskAddress]) -> u64 {
        tasks
            .iter()
            .filter_map(|t| self.tasks.known(t).budget.as_ref())
            .map(|b| b.remaining_micro_usd)
            .sum()
    }

    /// Completes the parent of `address` when all its subtasks are now completed or
    /// cancelled (and climbs, as a completion does).
    fn complete_parent_if_done(&mut self, fx: &mut Effects, address: &TaskAddress) {
        let Some(parent) = self.tasks.known(address).parent.clone() else {
            return;
        };
        let done = self.tasks.get(&parent).is_some_and(|p| {
            p.status == TaskStatus::Blocked
                && p.children.iter().all(|c| {
                    self.tasks.get(c).is_some_and(|t| {
                        matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled)
                    })
                })
        });
        if done {
            let why = "every subtask completed or was cancelled";
            let mut events = Vec::new();
            self.complete(fx, &parent, Some(why.to_string()), "0.1", why, &mut events);
            events.insert(
                0,
                Event::allowed(
                    "task.complete",
                    parent.clone(),
                    Effect::TaskChanged {
                        address: parent,
                        status: TaskStatus::Completed,
                    },
                ),
            );
            fx.consequences.extend(events);
        }
    }
}
