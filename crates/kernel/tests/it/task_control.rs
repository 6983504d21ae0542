//! Work that is never stuck (issue 26): an attempt past its `attempt_timeout` fails
//! however often its lease is renewed; a poster cancels a task with its open
//! subtasks (budgets back, holders told) or changes its priority.

use colony_kernel::tasks::*;
use colony_kernel::*;

use crate::common;
use common::*;

fn tick(sim: &mut Sim) -> Applied {
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick)
}

fn cancel(sim: &mut Sim, actor: PrincipalId, address: &str) -> Event {
    sim.run(
        actor,
        CommandBody::CancelTask {
            address: task(address),
        },
    )
    .primary()
    .clone()
}

#[test]
fn issue_26_a_hung_attempt_times_out_however_often_its_lease_is_renewed() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let mut task = new_task("hangs", Priority::Normal, &[]);
    task.attempt_timeout_ms = Some(60_000);
    task.max_attempts = Some(2);
    let address = post(&mut sim, PrincipalId::ADMIN, task).unwrap();
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let claimed_at = sim.now_ms;
    // The worker renews every 10 s, as a hung command's worker would.
    for _ in 0..5 {
        sim.advance(10_000);
        let renewed = update(&mut sim, worker, &address, token, TaskUpdate::Heartbeat);
        assert!(renewed.primary().decision.is_allowed());
    }
    let lease = sim.state.task(&address).unwrap().lease.clone().unwrap();
    assert_eq!(
        lease.expires_at_ms,
        claimed_at + 60_000,
        "a renewal never runs past the attempt's deadline"
    );
    sim.advance(10_000);
    let applied = tick(&mut sim);
    let timed_out = applied
        .events
        .iter()
        .find(|e| e.action == "task.timed_out")
        .expect("the attempt timed out at its deadline");
    match &timed_out.reason {
        Reason::AttemptTimedOut {
            attempt,
            timeout_ms,
            started_at_ms,
            deadline_ms,
            last_renewed_at_ms,
            ..
        } => {
            assert_eq!((*attempt, *timeout_ms), (1, 60_000));
            assert_eq!(*started_at_ms, claimed_at);
            assert_eq!(*deadline_ms, claimed_at + 60_000);
            assert_eq!(*last_renewed_at_ms, claimed_at + 50_000);
        }
        other => panic!("{other:?}"),
    }
    let task = sim.state.task(&address).unwrap();
    assert_eq!((task.status, task.failures), (TaskStatus::Failed, 1));
    assert_eq!(task.attempts[0].outcome.as_deref(), Some("timed_out"));
    // The hung worker's next renewal is refused, saying why.
    let late = update(&mut sim, worker, &address, token, TaskUpdate::Heartbeat);
    assert_eq!(late.primary().reason.code(), "attempt_timed_out");
    // Retried after its backoff; the second time out is its last attempt.
    sim.advance(5_000);
    tick(&mut sim);
    let (_, second) = claim(&mut sim, worker, &[]).unwrap();
    for _ in 0..2 {
        sim.advance(25_000);
        let renewed = update(&mut sim, worker, &address, second, TaskUpdate::Heartbeat);
        assert!(renewed.primary().decision.is_allowed());
    }
    sim.advance(10_000);
    tick(&mut sim);
    let task = sim.state.task(&address).unwrap();
    assert_eq!(task.status, TaskStatus::Dead);
    assert!(task.dead_reasons[0].contains("attempt_timeout of 60000 ms"));
    assert_ne!(second, token);
}

#[test]
fn an_attempt_timeout_is_bounded_where_it_enters() {
    let mut sim = Sim::new();
    let max = sim.state.task_config().attempt_timeout_max_ms;
    for (timeout_ms, accepted) in [
        (999, false),
        (1_000, true),
        (max, true),
        (max + 1, false),
        (u64::MAX, false),
    ] {
        let mut task = new_task("bounded", Priority::Normal, &[]);
        task.attempt_timeout_ms = Some(timeout_ms);
        let posted = post(&mut sim, PrincipalId::ADMIN, task);
        assert_eq!(posted.is_ok(), accepted, "{timeout_ms}: {posted:?}");
    }
    let default = post_plain(&mut sim, "default");
    assert_eq!(
        sim.state.task(&default).unwrap().attempt_timeout_ms,
        30 * 60_000
    );
}

/// A poster's task with a budget, decomposed by one worker into two subtasks, one
/// of them claimed by another.
struct Tree {
    poster: PrincipalId,
    decomposer: PrincipalId,
    holder: PrincipalId,
    root: TaskAddress,
    children: Vec<TaskAddress>,
    held: (TaskAddress, u64),
}

fn tree(sim: &mut Sim) -> Tree {
    let poster = sim.create_ok(PrincipalKind::Ai, None);
    let decomposer = sim.create_ok(PrincipalKind::Ai, None);
    let holder = sim.create_ok(PrincipalKind::Ai, None);
    let mut task = new_task("report", Priority::Normal, &["plan"]);
    task.budget_micro_usd = Some(3 * USD);
    let root = post(sim, poster, task).unwrap();
    let (_, token) = claim(sim, decomposer, &["plan"]).unwrap();
    let mut first = new_task("draft", Priority::Normal, &["write"]);
    first.budget_micro_usd = Some(USD);
    let second = new_task("check", Priority::Normal, &["write"]);
    let applied = update(
        sim,
        decomposer,
        &root,
        token,
        TaskUpdate::Decompose {
            subtasks: vec![first, second],
            on_child_death: ChildDeathPolicy::Fail,
        },
    );
    let Effect::TaskDecomposed { children, .. } = &applied.primary().effect else {
        panic!("{:?}", applied.primary())
    };
    let children = children.clone();
    let held = claim(sim, holder, &["write"]).unwrap();
    Tree {
        poster,
        decomposer,
        holder,
        root,
        children,
        held,
    }
}

#[test]
fn issue_26_a_poster_cancels_a_tree_its_holders_are_told_and_its_budget_comes_back() {
    let mut sim = Sim::new();
    let t = tree(&mut sim);
    assert_eq!(
        sim.balance(t.poster, Resource::LlmBudgetUsd).reserved,
        3 * USD
    );
    // Nobody outside the tree's posters and their ancestors directs it.
    let stranger = sim.create_ok(PrincipalKind::Ai, None);
    let refused = cancel(&mut sim, stranger, &t.root);
    assert_eq!(refused.reason.code(), "forbidden");
    assert_eq!(status(&sim, &t.root), TaskStatus::Blocked);

    let cancelled = cancel(&mut sim, t.poster, &t.root);
    assert!(cancelled.decision.is_allowed(), "{cancelled:?}");
    match &cancelled.effect {
        Effect::TaskCancelled {
            cancelled,
            leases_ended,
            refunded_micro_usd,
            ..
        } => {
            assert_eq!(cancelled.len(), 3);
            assert_eq!(cancelled[0], t.root);
            assert_eq!(leases_ended, &vec![(t.held.0.clone(), "2.3".to_string())]);
            assert_eq!(*refunded_micro_usd, 3 * USD);
        }
        other => panic!("{other:?}"),
    }
    for task in [&t.root, &t.children[0], &t.children[1]] {
        assert_eq!(status(&sim, task), TaskStatus::Cancelled, "{task}");
    }
    let balance = sim.balance(t.poster, Resource::LlmBudgetUsd);
    assert_eq!(
        (balance.reserved, balance.used),
        (0, 0),
        "the whole budget came back"
    );
    // The holder's next call is a 409 `cancelled` naming who and which task.
    let (held, token) = t.held.clone();
    let late = update(
        &mut sim,
        t.holder,
        &held,
        token,
        TaskUpdate::Complete("done".into()),
    );
    match &late.primary().reason {
        Reason::Cancelled { by, cancelled, .. } => {
            assert_eq!(by, "2.1");
            assert_eq!(cancelled, &t.root);
        }
        other => panic!("{other:?}"),
    }
    // Cancelled work is not claimable, and a second cancel changes nothing.
    assert!(claim(&mut sim, t.holder, &["write"]).is_none());
    assert_eq!(cancel(&mut sim, t.poster, &t.root).reason.code(), "invalid");
}

#[test]
fn a_cancelled_subtask_is_not_waited_for_by_its_parent() {
    let mut sim = Sim::new();
    let t = tree(&mut sim);
    // The decomposer posted the subtasks: it may cancel one of them.
    let (held, token) = t.held.clone();
    let other = t.children.iter().find(|c| **c != held).unwrap().clone();
    assert!(cancel(&mut sim, t.decomposer, &other).decision.is_allowed());
    assert_eq!(status(&sim, &t.root), TaskStatus::Blocked);
    let done = update(
        &mut sim,
        t.holder,
        &held,
        token,
        TaskUpdate::Complete("ok".into()),
    );
    assert!(done.primary().decision.is_allowed());
    assert_eq!(status(&sim, &t.root), TaskStatus::Completed);
    let balance = sim.balance(t.poster, Resource::LlmBudgetUsd);
    assert_eq!(balance.reserved, 0, "every budget is back");
}

#[test]
fn a_poster_changes_the_priority_of_its_waiting_task() {
    let mut sim = Sim::new();
    let poster = sim.create_ok(PrincipalKind::Ai, None);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let first = post(&mut sim, poster, new_task("first", Priority::Normal, &[])).unwrap();
    let later = post(&mut sim, poster, new_task("later", Priority::Low, &[])).unwrap();
    let changed = sim
        .run(
            poster,
            CommandBody::SetTaskPriority {
                address: later.clone(),
                priority: Priority::Critical,
            },
        )
        .primary()
        .clone();
    assert!(matches!(
        changed.effect,
        Effect::TaskPriorityChanged {
            priority: Priority::Critical,
            previous: Priority::Low,
            ..
        }
    ));
    let (claimed, _) = claim(&mut sim, worker, &[]).unwrap();
    assert_eq!(claimed, later, "the raised task is handed out first");
    let refused = sim.run(
        worker,
        CommandBody::SetTaskPriority {
            address: first,
            priority: Priority::High,
        },
    );
    assert_eq!(refused.primary().reason.code(), "forbidden");
}
