//! Decomposition: a claimed task split into subtasks, admitted whole or not at all,
//! with their shares of its budget.

use super::Effects;
use std::collections::BTreeSet;

use super::tasks::{sibling_cycle, task_bytes};
use super::{invalid, State};
use crate::command::{Command, Priority};
use crate::event::{Effect, Event};
use crate::tasks::*;
use crate::TaskAddress;

impl State {
    pub(super) fn decompose(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
        subtasks: &[NewTask],
        policy: ChildDeathPolicy,
    ) -> Event {
        const ACTION: &str = "task.decompose";
        let siblings = match self.check_decomposition(address, subtasks) {
            Ok(siblings) => siblings,
            Err(reason) => return Event::denied(ACTION, address, reason),
        };
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
        let first = self.tasks.known(address).next_child + 1;
        let addresses: Vec<TaskAddress> = (0..subtasks.len())
            .map(|i| address.child(first + i as u32))
            .collect();
        {
            let parent = self.tasks.edit(address).expect("checked");
            parent.next_child += subtasks.len() as u32;
            parent.children = addresses.clone();
            parent.on_child_death = policy;
        }
        self.set_status(
            fx,
            address,
            TaskStatus::Blocked,
            actor_address,
            &command.justification,
        );
        self.create_subtasks(
            fx,
            command,
            actor_address,
            address,
            subtasks,
            &addresses,
            &siblings,
        );
        Event::allowed(
            ACTION,
            address,
            Effect::TaskDecomposed {
                address: address.clone(),
                children: addresses,
            },
        )
        .with_warnings(warnings)
    }

    /// Whether the subtasks may be made: 1 to `SUBTASKS_MAX` of them, above the
    /// deepest level, each valid, no cycle among their dependencies, their budget
    /// shares within what the task has left. The siblings' names (`1`, `2`...),
    /// by which they may depend on each other.
    fn check_decomposition(
        &self,
        address: &TaskAddress,
        subtasks: &[NewTask],
    ) -> Result<BTreeSet<String>, crate::event::Reason> {
        if subtasks.is_empty() || subtasks.len() > SUBTASKS_MAX {
            return Err(invalid(format!(
                "a decomposition has 1 to {SUBTASKS_MAX} subtasks"
            )));
        }
        let level = address.level();
        if level >= TASK_DEPTH_MAX {
            return Err(invalid(format!(
                "{address} is at decomposition level {level}, the deepest allowed ({TASK_DEPTH_MAX}): complete it instead"
            )));
        }
        let siblings: BTreeSet<String> = (1..=subtasks.len()).map(|i| i.to_string()).collect();
        for subtask in subtasks {
            self.validate_new_task(subtask, &siblings)?;
        }
        if let Some(cycle) = sibling_cycle(subtasks) {
            return Err(invalid(format!(
                "the subtasks' dependencies form a cycle through subtask {cycle}"
            )));
        }
        let shares: u64 = subtasks.iter().filter_map(|s| s.budget_micro_usd).sum();
        let remaining = self
            .tasks
            .known(address)
            .budget
            .as_ref()
            .map_or(0, |b| b.remaining_micro_usd);
        if shares > remaining {
            return Err(invalid(format!(
                "the subtasks ask for {shares} micro-dollars; the task has {remaining} left"
            )));
        }
        Ok(siblings)
    }

    /// The subtasks made: sibling dependencies turned into addresses, each budget
    /// share taken from the task's, the task's priority when a subtask gives none.
    #[allow(clippy::too_many_arguments)]
    fn create_subtasks(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        address: &TaskAddress,
        subtasks: &[NewTask],
        addresses: &[TaskAddress],
        siblings: &BTreeSet<String>,
    ) {
        let payer = self.tasks.known(address).budget.as_ref().map(|b| b.payer);
        for (subtask, child) in subtasks.iter().zip(addresses) {
            let mut new = subtask.clone();
            // A sibling by its number, or a live task (both checked).
            let depends_on: Vec<TaskAddress> = subtask
                .depends_on
                .iter()
                .filter_map(|d| match siblings.contains(d) {
                    true => Some(addresses[d.parse::<usize>().expect("sibling index") - 1].clone()),
                    false => self.live_address(d),
                })
                .collect();
            let budget = match (subtask.budget_micro_usd, payer) {
                (Some(share), Some(payer)) if share > 0 => {
                    let parent_budget = self
                        .tasks
                        .edit(address)
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
                new.priority = self.tasks.known(address).priority;
            }
            self.insert_task(
                fx,
                command,
                actor_address,
                child,
                Some(address),
                &new,
                depends_on,
                budget,
                ChildDeathPolicy::Fail,
            );
        }
    }
}
