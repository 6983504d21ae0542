//! An LLM call settles in one decision: the commit and the task's charge together,
//! the system's spend counted once, and a lost lease never undoing the commit.

use colony_kernel::*;

use crate::common;
use common::*;

fn budgeted_task(sim: &mut Sim, budget: u64) -> TaskAddress {
    let mut task = new_task("call a model", Priority::Normal, &[]);
    task.budget_micro_usd = Some(budget);
    post(sim, PrincipalId::ADMIN, task).unwrap()
}

fn spend(sim: &Sim) -> u64 {
    sim.state.limit("llm_spend_usd").unwrap().usage
}

#[test]
fn a_task_call_settles_its_commit_and_its_charge_in_one_decision() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let task = budgeted_task(&mut sim, 10_000);
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let reservation = sim.reserve(worker, Resource::LlmBudgetUsd, 500).unwrap();
    let before = spend(&sim);
    let applied = sim.run(
        worker,
        CommandBody::Settle {
            reservation,
            actual: 300,
            task: Some((task.clone(), token)),
        },
    );
    let primary = applied.primary();
    assert_eq!(primary.action, "llm.settle");
    assert!(matches!(
        primary.effect,
        Effect::Committed {
            charged: 300,
            refunded: 200,
            ..
        }
    ));
    let charge = applied
        .events
        .iter()
        .find(|e| e.action == "task.spend")
        .expect("the task's charge is part of the same command");
    assert!(matches!(
        charge.effect,
        Effect::TaskBudgetSpent {
            charged: 300,
            remaining: 9_700,
            ..
        }
    ));
    assert_eq!(spend(&sim), before + 300, "the system's spend counts once");
    assert_eq!(sim.balance(worker, Resource::LlmBudgetUsd).reserved, 0);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_lost_lease_does_not_undo_the_commit() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let task = budgeted_task(&mut sim, 10_000);
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let reservation = sim.reserve(worker, Resource::LlmBudgetUsd, 500).unwrap();
    // The lease is lost while the call runs.
    update(&mut sim, worker, &task, token, TaskUpdate::Release);
    let applied = sim.run(
        worker,
        CommandBody::Settle {
            reservation,
            actual: 300,
            task: Some((task.clone(), token)),
        },
    );
    assert!(applied.primary().decision.is_allowed());
    let charge = applied
        .events
        .iter()
        .find(|e| e.action == "task.spend")
        .unwrap();
    assert_eq!(charge.decision, Decision::Denied);
    assert!(matches!(charge.reason, Reason::StaleLease { .. }));
    let shown = sim.state.task(&task).unwrap();
    assert_eq!(shown.budget.as_ref().unwrap().spent_micro_usd, 0);
    assert_eq!(sim.balance(worker, Resource::LlmBudgetUsd).used, 300);
    sim.state.check_invariants().unwrap();
}
