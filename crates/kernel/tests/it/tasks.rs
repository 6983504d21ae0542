//! The task board: matching, priority, atomic claims with fencing, decomposition,
//! retries and dead letters, budgets that travel.

use colony_kernel::tasks::*;
use colony_kernel::*;

use crate::common;
use common::*;

#[test]
fn work_goes_to_workers_with_every_required_capability() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let rust = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("rust", Priority::Normal, &["rust"]),
    )
    .unwrap();
    let python = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("python", Priority::Critical, &["python"]),
    )
    .unwrap();
    let both = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("both", Priority::Critical, &["rust", "docs"]),
    )
    .unwrap();
    assert_eq!(rust, "0.7.1.00001");
    assert_eq!(claim(&mut sim, worker, &["rust"]).unwrap().0, rust);
    assert_eq!(
        claim(&mut sim, worker, &["rust"]),
        None,
        "the others need what it lacks"
    );
    assert_eq!(
        claim(&mut sim, worker, &["docs", "rust", "go"]).unwrap().0,
        both
    );
    assert_eq!(claim(&mut sim, worker, &["python"]).unwrap().0, python);
}

#[test]
fn priority_order_with_aging_and_unblocking() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let low = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("low", Priority::Low, &[]),
    )
    .unwrap();
    let normal = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("normal", Priority::Normal, &[]),
    )
    .unwrap();
    let high = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("high", Priority::High, &[]),
    )
    .unwrap();
    let order: Vec<TaskAddress> = (0..3)
        .map(|_| claim(&mut sim, worker, &[]).unwrap().0)
        .collect();
    assert_eq!(order, vec![high, normal, low.clone()]);

    // Aging: a low task that waited 100 minutes ranks with a fresh normal one, and
    // wins the tie by having waited longer.
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let old_low = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("old low", Priority::Low, &[]),
    )
    .unwrap();
    sim.advance(100 * 60_000);
    let fresh_normal = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("fresh normal", Priority::Normal, &[]),
    )
    .unwrap();
    assert_eq!(
        sim.state
            .effective_priority(sim.state.task(&old_low).unwrap()),
        200
    );
    assert_eq!(claim(&mut sim, worker, &[]).unwrap().0, old_low);
    assert_eq!(claim(&mut sim, worker, &[]).unwrap().0, fresh_normal);

    // Unblocking: a task others wait on goes before an older one of the same priority.
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let older = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("older", Priority::Normal, &[]),
    )
    .unwrap();
    let keystone = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("keystone", Priority::Normal, &[]),
    )
    .unwrap();
    for title in ["waits 1", "waits 2"] {
        let mut waiting = new_task(title, Priority::Normal, &[]);
        waiting.depends_on = vec![keystone.to_string()];
        let address = post(&mut sim, PrincipalId::ADMIN, waiting).unwrap();
        assert_eq!(status(&sim, &address), TaskStatus::Blocked);
    }
    assert_eq!(
        sim.state
            .effective_priority(sim.state.task(&keystone).unwrap()),
        250
    );
    assert_eq!(claim(&mut sim, worker, &[]).unwrap().0, keystone);
    assert_eq!(claim(&mut sim, worker, &[]).unwrap().0, older);
}

#[test]
fn exactly_one_of_many_claimers_wins() {
    let mut sim = Sim::new();
    let workers: Vec<PrincipalId> = (0..8)
        .map(|_| sim.create_ok(PrincipalKind::Ai, None))
        .collect();
    let only = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("only one", Priority::Normal, &[]),
    )
    .unwrap();
    let winners: Vec<(TaskAddress, u64)> = workers
        .iter()
        .filter_map(|w| claim(&mut sim, *w, &[]))
        .collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].0, only);
}

#[test]
fn a_stale_token_is_refused_after_the_lease_expired_and_the_task_moved_on() {
    let mut sim = Sim::new();
    let first = sim.create_ok(PrincipalKind::Ai, None);
    let second = sim.create_ok(PrincipalKind::Ai, None);
    let task = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("fenced", Priority::Normal, &[]),
    )
    .unwrap();
    let (_, old_token) = claim(&mut sim, first, &[]).unwrap();
    update(
        &mut sim,
        first,
        &task,
        old_token,
        TaskUpdate::Checkpoint("{\"step\":3}".into()),
    );
    sim.advance(30_001);
    let expired = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert!(expired
        .events
        .iter()
        .any(|e| e.action == "task.lease_expired"));
    assert_eq!(
        status(&sim, &task),
        TaskStatus::Failed,
        "a lost lease is a failed attempt, retried after backoff"
    );
    sim.advance(1_000);
    let (again, new_token) = claim(&mut sim, second, &[]).unwrap();
    assert_eq!(again, task);
    assert_eq!(
        sim.state.task(&task).unwrap().checkpoint.as_deref(),
        Some("{\"step\":3}"),
        "the next claimant resumes"
    );
    let late = update(
        &mut sim,
        first,
        &task,
        old_token,
        TaskUpdate::Complete("done late".into()),
    );
    match &late.primary().reason {
        Reason::StaleLease {
            presented, current, ..
        } => assert_eq!((*presented, *current), (old_token, Some(new_token))),
        other => panic!("expected stale_lease, got {other:?}"),
    }
    assert!(update(
        &mut sim,
        second,
        &task,
        new_token,
        TaskUpdate::Complete("done".into())
    )
    .primary()
    .decision
    .is_allowed());
    assert_eq!(status(&sim, &task), TaskStatus::Completed);
    assert_eq!(
        update(
            &mut sim,
            second,
            &task,
            new_token,
            TaskUpdate::Complete("twice".into())
        )
        .primary()
        .reason
        .code(),
        "stale_lease"
    );
    let attempts = &sim.state.task(&task).unwrap().attempts;
    assert_eq!(attempts[0].outcome.as_deref(), Some("lease_expired"));
    assert_eq!(attempts[1].outcome.as_deref(), Some("completed"));
}

#[test]
fn a_parent_completes_only_after_its_children() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let root = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("write the docs", Priority::High, &[]),
    )
    .unwrap();
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let mut second = new_task("review", Priority::Normal, &["review"]);
    second.depends_on = vec!["1".into()];
    let decompose = TaskUpdate::Decompose {
        subtasks: vec![new_task("draft", Priority::Normal, &[]), second],
        on_child_death: ChildDeathPolicy::Fail,
    };
    let applied = update(&mut sim, worker, &root, token, decompose);
    let Effect::TaskDecomposed { children, .. } = &applied.primary().effect else {
        panic!("{:?}", applied.primary())
    };
    assert_eq!(children, &vec![format!("{root}.1"), format!("{root}.2")]);
    assert_eq!(status(&sim, &root), TaskStatus::Blocked);
    assert_eq!(
        status(&sim, &children[1]),
        TaskStatus::Blocked,
        "the review waits for the draft"
    );
    assert_eq!(
        sim.state.task(&children[1]).unwrap().depends_on,
        vec![children[0].clone()]
    );
    let (draft, draft_token) = claim(&mut sim, worker, &["review"]).unwrap();
    assert_eq!(draft, children[0]);
    update(
        &mut sim,
        worker,
        &draft,
        draft_token,
        TaskUpdate::Complete("drafted".into()),
    );
    assert_eq!(status(&sim, &children[1]), TaskStatus::Pending);
    assert_eq!(status(&sim, &root), TaskStatus::Blocked);
    let (review, review_token) = claim(&mut sim, worker, &["review"]).unwrap();
    let done = update(
        &mut sim,
        worker,
        &review,
        review_token,
        TaskUpdate::Complete("reviewed".into()),
    );
    assert!(done
        .events
        .iter()
        .any(|e| e.action == "task.complete" && e.subject == root));
    assert_eq!(status(&sim, &root), TaskStatus::Completed);
}

#[test]
fn failures_back_off_then_dead_letter_then_requeue() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let mut flaky = new_task("flaky", Priority::Normal, &[]);
    flaky.max_attempts = Some(2);
    let task = post(&mut sim, PrincipalId::ADMIN, flaky).unwrap();
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    update(
        &mut sim,
        worker,
        &task,
        token,
        TaskUpdate::Fail("the API timed out".into()),
    );
    assert_eq!(status(&sim, &task), TaskStatus::Failed);
    assert_eq!(
        claim(&mut sim, worker, &[]),
        None,
        "not claimable during the backoff"
    );
    sim.advance(1_000);
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let failed = update(
        &mut sim,
        worker,
        &task,
        token,
        TaskUpdate::Fail("timed out again".into()),
    );
    assert!(failed.events.iter().any(|e| e.action == "task.dead"));
    let dead = sim.state.task(&task).unwrap();
    assert_eq!(dead.status, TaskStatus::Dead);
    assert!(
        dead.dead_reasons[0].contains("attempt 2 of 2 failed: timed out again"),
        "{:?}",
        dead.dead_reasons
    );
    assert_eq!(
        sim.run(
            worker,
            CommandBody::RequeueTask {
                address: task.clone()
            }
        )
        .primary()
        .reason
        .code(),
        "forbidden"
    );
    assert!(sim
        .run(
            PrincipalId::ADMIN,
            CommandBody::RequeueTask {
                address: task.clone()
            }
        )
        .primary()
        .decision
        .is_allowed());
    assert_eq!(status(&sim, &task), TaskStatus::Pending);
    assert!(claim(&mut sim, worker, &[]).is_some());
    // Backoff doubles: 1 s after the first failure, 2 s after the second.
    assert_eq!(TaskConfig::defaults().backoff_ms(2), 2_000);
}

#[test]
fn a_budget_travels_with_its_task_across_a_reassignment() {
    let mut sim = Sim::new();
    let poster = sim.create_ok(PrincipalKind::Human, None);
    let first = sim.create_ok(PrincipalKind::Ai, None);
    let second = sim.create_ok(PrincipalKind::Ai, None);
    let mut paid = new_task("paid", Priority::Normal, &[]);
    paid.budget_micro_usd = Some(USD);
    let task = post(&mut sim, poster, paid).unwrap();
    assert_eq!(sim.balance(poster, Resource::LlmBudgetUsd).reserved, USD);
    let (_, token) = claim(&mut sim, first, &[]).unwrap();
    update(&mut sim, first, &task, token, TaskUpdate::Spend(300_000));
    sim.advance(31_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    sim.advance(1_000);
    let (_, token) = claim(&mut sim, second, &[]).unwrap();
    assert_eq!(
        sim.state
            .task(&task)
            .unwrap()
            .budget
            .as_ref()
            .unwrap()
            .remaining_micro_usd,
        700_000
    );
    let spent = update(&mut sim, second, &task, token, TaskUpdate::Spend(500_000));
    assert!(matches!(
        spent.primary().effect,
        Effect::TaskBudgetSpent {
            remaining: 200_000,
            ..
        }
    ));
    update(
        &mut sim,
        second,
        &task,
        token,
        TaskUpdate::Complete("done".into()),
    );
    let balance = sim.balance(poster, Resource::LlmBudgetUsd);
    assert_eq!(
        (balance.used, balance.reserved),
        (800_000, 0),
        "what was left went back to the poster"
    );
    assert_eq!(sim.state.limit("llm_spend_usd").unwrap().usage, 800_000);
}

#[test]
fn bad_task_requests_are_refused_and_change_nothing() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let other = sim.create_ok(PrincipalKind::Ai, None);
    let mut unknown = new_task("x", Priority::Normal, &[]);
    unknown.depends_on = vec!["0.7.1.99999".into()];
    assert_eq!(
        post(&mut sim, PrincipalId::ADMIN, unknown)
            .unwrap_err()
            .code(),
        "not_found"
    );
    let mut rich = new_task("x", Priority::Normal, &[]);
    rich.budget_micro_usd = Some(1_000 * USD);
    assert_eq!(
        post(&mut sim, worker, rich).unwrap_err().code(),
        "insufficient_resource"
    );
    assert_eq!(
        post(&mut sim, worker, new_task(" ", Priority::Normal, &[]))
            .unwrap_err()
            .code(),
        "invalid"
    );

    let task = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("held", Priority::Normal, &[]),
    )
    .unwrap();
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let mut a = new_task("a", Priority::Normal, &[]);
    a.depends_on = vec!["2".into()];
    let mut b = new_task("b", Priority::Normal, &[]);
    b.depends_on = vec!["1".into()];
    let cycle = update(
        &mut sim,
        worker,
        &task,
        token,
        TaskUpdate::Decompose {
            subtasks: vec![a, b],
            on_child_death: ChildDeathPolicy::Fail,
        },
    );
    assert_eq!(cycle.primary().reason.code(), "invalid");
    let stolen = update(
        &mut sim,
        other,
        &task,
        token,
        TaskUpdate::Decompose {
            subtasks: vec![new_task("c", Priority::Normal, &[])],
            on_child_death: ChildDeathPolicy::Fail,
        },
    );
    assert_eq!(
        stolen.primary().reason.code(),
        "forbidden",
        "a subtask under a task the caller does not hold"
    );
    let huge = update(
        &mut sim,
        worker,
        &task,
        token,
        TaskUpdate::Checkpoint("x".repeat(CHECKPOINT_BYTES_MAX + 1)),
    );
    assert_eq!(huge.primary().reason.code(), "invalid");
    let task_after = sim.state.task(&task).unwrap();
    assert!(
        task_after.children.is_empty()
            && task_after.checkpoint.is_none()
            && task_after.status == TaskStatus::Claimed
    );
    assert_eq!(sim.state.tasks().count(), 1);
}

#[test]
fn board_limits_hold() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    for index in 0..100 {
        post(
            &mut sim,
            PrincipalId::ADMIN,
            new_task(&format!("t{index}"), Priority::Normal, &[]),
        )
        .unwrap();
    }
    let denied = post(
        &mut sim,
        PrincipalId::ADMIN,
        new_task("one too many", Priority::Normal, &[]),
    )
    .unwrap_err();
    assert!(matches!(denied, Reason::HardLimit { ref limit, .. } if limit == "task_queue_depth"));
    for _ in 0..5 {
        assert!(claim(&mut sim, worker, &[]).is_some());
    }
    let applied = sim.run(
        worker,
        CommandBody::ClaimTask {
            capabilities: vec![],
            lease_ms: None,
            worker: None,
        },
    );
    assert!(
        matches!(&applied.primary().reason, Reason::HardLimit { limit, .. } if limit == "tasks_per_worker")
    );
}

#[test]
fn a_dead_child_fails_or_redecomposes_its_parent() {
    for policy in [ChildDeathPolicy::Fail, ChildDeathPolicy::Redecompose] {
        let mut sim = Sim::new();
        let worker = sim.create_ok(PrincipalKind::Ai, None);
        let root = post(
            &mut sim,
            PrincipalId::ADMIN,
            new_task("root", Priority::Normal, &[]),
        )
        .unwrap();
        let (_, token) = claim(&mut sim, worker, &[]).unwrap();
        let mut doomed = new_task("doomed", Priority::Normal, &[]);
        doomed.max_attempts = Some(1);
        update(
            &mut sim,
            worker,
            &root,
            token,
            TaskUpdate::Decompose {
                subtasks: vec![doomed, new_task("fine", Priority::Normal, &[])],
                on_child_death: policy,
            },
        );
        let (child, token) = claim(&mut sim, worker, &[]).unwrap();
        assert_eq!(child, format!("{root}.1"));
        update(
            &mut sim,
            worker,
            &child,
            token,
            TaskUpdate::Fail("impossible".into()),
        );
        assert_eq!(
            status(&sim, &format!("{root}.2")),
            TaskStatus::Dead,
            "the plan's other steps are abandoned"
        );
        match policy {
            ChildDeathPolicy::Fail => assert_eq!(status(&sim, &root), TaskStatus::Dead),
            ChildDeathPolicy::Redecompose => {
                assert_eq!(status(&sim, &root), TaskStatus::Failed);
                sim.advance(1_000);
                let (again, token) = claim(&mut sim, worker, &[]).unwrap();
                assert_eq!(again, root);
                let applied = update(
                    &mut sim,
                    worker,
                    &root,
                    token,
                    TaskUpdate::Decompose {
                        subtasks: vec![new_task("retry", Priority::Normal, &[])],
                        on_child_death: policy,
                    },
                );
                assert!(
                    matches!(&applied.primary().effect, Effect::TaskDecomposed { children, .. } if children == &vec![format!("{root}.3")])
                );
            }
        }
    }
}
