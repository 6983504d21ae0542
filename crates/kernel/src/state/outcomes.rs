//! How tasks end: completion (climbing to parents that are done), failed attempts with
//! backoff, death and the parent's policy, and the budgets that come back.

use super::Effects;
use super::{invalid, State};
use crate::event::{Effect, Event, Reason};
use crate::ledger::Resource;
use crate::limits::LimitName;
use crate::tasks::*;
use crate::TaskAddress;

impl State {
    /// Marks a task completed, returns its budget, unblocks its dependents and
    /// completes its parent when this was the parent's last open child.
    pub(super) fn complete(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        result: Option<String>,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        // Up the tree without recursion: each completed parent may complete its own.
        let mut next = self.complete_one(fx, address, result, by, justification);
        while let Some(parent) = next {
            let why = "every subtask completed";
            next = self.complete_one(fx, &parent, Some(why.to_string()), "0.1", why);
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
    pub(super) fn complete_one(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        result: Option<String>,
        by: &str,
        justification: &str,
    ) -> Option<TaskAddress> {
        self.tasks.edit(address).expect("exists").result = result;
        self.set_status(fx, address, TaskStatus::Completed, by, justification);
        self.return_budget(address);
        let dependents: Vec<TaskAddress> = self
            .index
            .take_waiting(address)
            .into_iter()
            .flatten()
            .collect();
        for dependent in dependents {
            let ready = self.tasks.get(&dependent).is_some_and(|task| {
                task.status == TaskStatus::Blocked
                    && task.children.is_empty()
                    && task.depends_on.iter().all(|d| self.dependency_met(d))
            });
            if ready {
                self.set_status(
                    fx,
                    &dependent,
                    TaskStatus::Pending,
                    "0.1",
                    &format!("its dependency {address} completed"),
                );
            }
        }
        let parent = self.tasks.known(address).parent.clone()?;
        // A subtask cancelled by its poster is no longer waited for.
        let done = self.tasks.get(&parent).is_some_and(|p| {
            p.status == TaskStatus::Blocked
                && p.children.iter().all(|c| {
                    self.tasks.get(c).is_some_and(|t| {
                        matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled)
                    })
                })
        });
        done.then_some(parent)
    }

    /// Counts a failed attempt: back off and retry, or go to the dead-letter queue.
    pub(super) fn fail_attempt(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        reason: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        let Some(why) = self.fail_attempt_one(fx, address, reason, by, justification) else {
            return;
        };
        // Up the tree without recursion: a parent whose policy is `fail` dies too.
        let mut next = self.kill(fx, address, &why, by, justification, events);
        while let Some((parent, why, justification)) = next {
            next = self.kill(fx, &parent, &why, "0.1", justification, events);
        }
    }

    /// Counts a failed attempt and backs off; why the task must die instead, when it
    /// has no attempt left.
    pub(super) fn fail_attempt_one(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        reason: &str,
        by: &str,
        justification: &str,
    ) -> Option<String> {
        let config = self.tasks.config().clone();
        let task = self.tasks.edit(address).expect("exists");
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
            self.leases.unback_off(address, previous);
            let not_before = self.tasks.known(address).not_before_ms;
            self.leases.back_off(address, not_before);
        }
        self.set_status(fx, address, TaskStatus::Failed, by, justification);
        None
    }

    /// Puts a task in the dead-letter queue and applies its parent's policy; the
    /// parent when it must die too, with why.
    pub(super) fn kill(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        why: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) -> Option<(TaskAddress, String, &'static str)> {
        self.bury(fx, address, why, by, justification, events);
        let parent = self.tasks.known(address).parent.clone()?;
        if self.tasks.known(&parent).status != TaskStatus::Blocked {
            return None;
        }
        // The siblings still open are abandoned with the parent's plan.
        let siblings: Vec<TaskAddress> = self
            .tasks
            .known(&parent)
            .children
            .iter()
            .filter(|c| self.tasks.known(c).status.is_open())
            .cloned()
            .collect();
        for sibling in siblings {
            self.bury(
                fx,
                &sibling,
                &format!("its sibling {address} died"),
                "0.1",
                "the parent's plan failed",
                events,
            );
        }
        match self.tasks.known(&parent).on_child_death {
            ChildDeathPolicy::Fail => Some((
                parent,
                format!("its subtask {address} died"),
                "a subtask died and the policy is fail",
            )),
            ChildDeathPolicy::Redecompose => {
                self.tasks.edit(&parent).expect("exists").children.clear();
                const WHY: &str = "a subtask died; the parent will be decomposed anew";
                self.fail_attempt_one(
                    fx,
                    &parent,
                    &format!("its subtask {address} died"),
                    "0.1",
                    WHY,
                )
                .map(|why| (parent, why, WHY))
            }
        }
    }

    /// Moves one task to the dead-letter queue, nothing more.
    pub(super) fn bury(
        &mut self,
        fx: &mut Effects,
        address: &TaskAddress,
        why: &str,
        by: &str,
        justification: &str,
        events: &mut Vec<Event>,
    ) {
        self.clear_lease(address);
        self.tasks
            .edit(address)
            .expect("exists")
            .dead_reasons
            .push(why.to_string());
        self.set_status(fx, address, TaskStatus::Dead, by, justification);
        self.return_budget(address);
        let mut event = Event::allowed(
            "task.dead",
            address,
            Effect::TaskChanged {
                address: address.clone(),
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
    pub(super) fn return_budget(&mut self, address: &TaskAddress) {
        let Some(budget) = self.tasks.edit(address).and_then(|t| t.budget.as_mut()) else {
            return;
        };
        let remaining = std::mem::take(&mut budget.remaining_micro_usd);
        let payer = budget.payer;
        if remaining == 0 {
            return;
        }
        let parent = self.tasks.known(address).parent.clone();
        if let Some(parent_budget) = parent
            .filter(|p| self.tasks.known(p).status.is_open())
            .and_then(|p| self.tasks.edit(&p))
            .and_then(|p| p.budget.as_mut())
        {
            parent_budget.remaining_micro_usd += remaining;
            return;
        }
        for member in self.chain(payer) {
            if let Some(balance) = self.book.balance_mut(member, Resource::LlmBudgetUsd) {
                balance.reserved = balance.reserved.saturating_sub(remaining);
            }
        }
    }

    pub(super) fn spend_task_budget(&mut self, address: &TaskAddress, amount: u64) -> Event {
        self.spend_task_budget_counted(address, amount, true)
    }

    /// Charges a task's budget; `count_system_spend` adds the amount to
    /// `llm_spend_usd` (a settlement has counted it already).
    pub(super) fn spend_task_budget_counted(
        &mut self,
        address: &TaskAddress,
        amount: u64,
        count_system_spend: bool,
    ) -> Event {
        const ACTION: &str = "task.spend";
        let Some(budget) = self.tasks.edit(address).and_then(|t| t.budget.as_mut()) else {
            return Event::denied(ACTION, address, invalid("this task has no budget"));
        };
        let charged = amount.min(budget.remaining_micro_usd);
        let shortfall = amount - charged;
        budget.remaining_micro_usd -= charged;
        budget.spent_micro_usd = budget.spent_micro_usd.saturating_add(charged);
        let (payer, remaining) = (budget.payer, budget.remaining_micro_usd);
        for member in self.chain(payer) {
            if let Some(balance) = self.book.balance_mut(member, Resource::LlmBudgetUsd) {
                balance.reserved = balance.reserved.saturating_sub(charged);
                balance.used = balance.used.saturating_add(charged);
            }
        }
        if let Some(balance) = self.book.balance_mut(payer, Resource::LlmBudgetUsd) {
            balance.shortfall = balance.shortfall.saturating_add(shortfall);
        }
        if count_system_spend {
            if let Some(limit) = self.limits.edit(&LimitName::LlmSpendUsd) {
                limit.roll_window(self.now_ms);
                limit.usage = limit.usage.saturating_add(amount);
            }
        }
        Event::allowed(
            ACTION,
            address,
            Effect::TaskBudgetSpent {
                address: address.clone(),
                charged,
                shortfall,
                remaining,
            },
        )
    }
}
