//! What is done to one task after it was posted: its holder's acts under the lease
//! (heartbeat, checkpoint, complete, fail, release, spend, decompose) and an admin's
//! requeue of a dead task.

use super::Effects;
use super::{invalid, not_found, State};
use crate::command::{Command, TaskUpdate};
use crate::event::{Effect, Event};
use crate::tasks::*;
use crate::TaskAddress;

impl State {
    pub(super) fn update_task(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
        token: u64,
        update: &TaskUpdate,
    ) -> Event {
        let action = update.name();
        if let Err(reason) = self.check_lease(address, command.actor, token) {
            return Event::denied(action, address, reason);
        }
        let justification = command.justification.as_str();
        match update {
            TaskUpdate::Heartbeat => {
                self.renew(fx, action, address, token, actor_address, justification)
            }
            TaskUpdate::Checkpoint(checkpoint) => {
                if checkpoint.len() > CHECKPOINT_BYTES_MAX {
                    return Event::denied(
                        action,
                        address,
                        invalid(format!(
                            "a checkpoint is at most {CHECKPOINT_BYTES_MAX} bytes"
                        )),
                    );
                }
                self.tasks.edit(address).expect("checked").checkpoint = Some(checkpoint.clone());
                self.renew(fx, action, address, token, actor_address, justification)
            }
            TaskUpdate::Complete(result) => {
                if result.len() > RESULT_BYTES_MAX {
                    return Event::denied(
                        action,
                        address,
                        invalid(format!("a result is at most {RESULT_BYTES_MAX} bytes")),
                    );
                }
                self.complete_by_holder(fx, address, result, actor_address, justification)
            }
            TaskUpdate::Fail(reason) => {
                self.end_attempt(address, "failed", Some(reason.clone()));
                let mut consequences = Vec::new();
                self.fail_attempt(
                    fx,
                    address,
                    reason,
                    actor_address,
                    justification,
                    &mut consequences,
                );
                fx.consequences.extend(consequences);
                let status = self.tasks.known(address).status;
                Event::allowed(
                    action,
                    address,
                    Effect::TaskChanged {
                        address: address.clone(),
                        status,
                    },
                )
            }
            TaskUpdate::Release => {
                self.end_attempt(address, "released", None);
                self.set_status(
                    fx,
                    address,
                    TaskStatus::Pending,
                    actor_address,
                    justification,
                );
                Event::allowed(
                    action,
                    address,
                    Effect::TaskChanged {
                        address: address.clone(),
                        status: TaskStatus::Pending,
                    },
                )
            }
            TaskUpdate::Spend(amount) => self.spend_task_budget(address, *amount),
            TaskUpdate::Decompose {
                subtasks,
                on_child_death,
            } => self.decompose(
                fx,
                command,
                actor_address,
                address,
                subtasks,
                *on_child_death,
            ),
        }
    }

    /// A heartbeat or a checkpoint: the lease renewed, the task in progress.
    fn renew(
        &mut self,
        fx: &mut Effects,
        action: &'static str,
        address: &TaskAddress,
        token: u64,
        actor_address: &str,
        justification: &str,
    ) -> Event {
        self.renew_lease(address);
        self.set_status(
            fx,
            address,
            TaskStatus::InProgress,
            actor_address,
            justification,
        );
        let expires_at_ms = self
            .tasks
            .known(address)
            .lease
            .as_ref()
            .map_or(0, |l| l.expires_at_ms);
        Event::allowed(
            action,
            address,
            Effect::TaskClaimed {
                address: address.clone(),
                token,
                expires_at_ms,
            },
        )
    }

    /// The holder completes the task with its result.
    fn complete_by_holder(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        result: &str,
        actor_address: &str,
        justification: &str,
    ) -> Event {
        let mut consequences = Vec::new();
        self.end_attempt(address, "completed", None);
        self.complete(
            fx,
            address,
            Some(result.to_string()),
            actor_address,
            justification,
            &mut consequences,
        );
        fx.consequences.extend(consequences);
        Event::allowed(
            "task.complete",
            address,
            Effect::TaskChanged {
                address: address.clone(),
                status: TaskStatus::Completed,
            },
        )
    }

    pub(super) fn requeue_task(
        &mut self,
        fx: &mut Effects,
        actor_address: &str,
        address: &TaskAddress,
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
        let ready = task.depends_on.iter().all(|d| self.dependency_met(d));
        let task = self.tasks.edit(address).expect("checked");
        task.failures = 0;
        task.children.clear();
        let to = if ready {
            TaskStatus::Pending
        } else {
            TaskStatus::Blocked
        };
        self.set_status(fx, address, to, actor_address, justification);
        Event::allowed(
            ACTION,
            address,
            Effect::TaskChanged {
                address: address.clone(),
                status: to,
            },
        )
    }
}
