//! Issue 12: no single agent can crash, lock or starve the colony. Each test is an
//! attack that worked before: a brake that locks a limit for good, a principal chain
//! that panicked the kernel, decompositions that passed a hard limit, a starved admin.

use colony_kernel::governance::*;
use colony_kernel::tasks::*;
use colony_kernel::*;

use crate::common;
use common::*;

fn brake(sim: &mut Sim, actor: PrincipalId, limit: &str, soft: Change, hard: Change) -> Event {
    sim.run(
        actor,
        CommandBody::Propose {
            target: ProposalTarget::Limit {
                limit: limit.to_string(),
                soft,
                hard,
            },
            brake_only: true,
        },
    )
    .primary()
    .clone()
}

fn values(sim: &Sim, name: &str) -> (Option<u64>, Option<u64>) {
    let limit = sim.state.limit(name).unwrap();
    (limit.spec.soft, limit.spec.hard)
}

/// Genesis for tests, with a brake floor on `ai_accounts` and a one-minute brake ttl.
fn guarded() -> Genesis {
    let mut genesis = genesis_with_limit("ai_accounts", |limit| {
        limit.brake_floor = 2;
    });
    genesis.governance.brake_ttl_ms = Some(60_000);
    genesis.governance.brakes_per_hour_max = 3;
    genesis
}

#[test]
fn a_brake_cannot_go_below_the_floor() {
    let mut sim = Sim::with(guarded());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let denied = brake(&mut sim, ai, "ai_accounts", Change::Set(0), Change::Set(0));
    assert_eq!(denied.decision, Decision::Denied);
    assert!(
        matches!(
            denied.reason,
            Reason::BrakeFloor {
                floor: 2,
                requested: 0,
                ..
            }
        ),
        "{:?}",
        denied.reason
    );
    assert_eq!(values(&sim, "ai_accounts"), (Some(8), Some(10)));
    // At the floor is a brake like any other.
    let allowed = brake(&mut sim, ai, "ai_accounts", Change::Set(2), Change::Set(2));
    assert!(allowed.decision.is_allowed(), "{:?}", allowed.reason);
    assert_eq!(values(&sim, "ai_accounts"), (Some(2), Some(2)));
}

#[test]
fn an_unconfirmed_brake_expires_and_the_earlier_values_come_back() {
    let mut sim = Sim::with(guarded());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let applied = brake(&mut sim, ai, "ai_accounts", Change::Set(3), Change::Set(4));
    assert!(applied.decision.is_allowed());
    let id = match applied.effect {
        Effect::LimitChanged { proposal, .. } => proposal,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        sim.state.next_due_ms(),
        Some(sim.now_ms + 60_000),
        "the expiry is a due time: nobody has to act"
    );
    sim.advance(59_999);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(values(&sim, "ai_accounts"), (Some(3), Some(4)));
    sim.advance(1);
    let tick = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    let expired = tick
        .events
        .iter()
        .find(|e| e.action == "governance.brake_expired")
        .expect("the expiry is a logged decision");
    assert!(matches!(
        expired.reason,
        Reason::BrakeExpired { ttl_ms: 60_000, .. }
    ));
    assert_eq!(values(&sim, "ai_accounts"), (Some(8), Some(10)));
    assert_eq!(
        sim.state.proposal(id).unwrap().state,
        ProposalState::Expired
    );
    assert_eq!(
        sim.state.limit("ai_accounts").unwrap().set_via,
        format!("expiry of brake {id}")
    );
}

#[test]
fn the_other_side_confirms_a_brake_and_then_it_holds() {
    let mut sim = Sim::with(guarded());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let other_ai = sim.create_ok(PrincipalKind::Ai, None);
    let applied = brake(&mut sim, ai, "ai_accounts", Change::Set(3), Change::Set(4));
    let Effect::LimitChanged { proposal: id, .. } = applied.effect else {
        panic!("{applied:?}")
    };
    // An AI approving an AI's brake does not confirm it.
    let same_side = sim.run(
        other_ai,
        CommandBody::Vote {
            proposal: id,
            choice: VoteChoice::Approve,
        },
    );
    assert!(same_side.primary().decision.is_allowed());
    assert!(sim.state.proposal(id).unwrap().confirmed_by.is_none());
    // A human does; the admin is human.
    let confirmed = sim.run(
        PrincipalId::ADMIN,
        CommandBody::Vote {
            proposal: id,
            choice: VoteChoice::Approve,
        },
    );
    assert!(confirmed
        .events
        .iter()
        .any(|e| matches!(e.reason, Reason::BrakeConfirmed { .. })));
    assert_eq!(
        sim.state.proposal(id).unwrap().confirmed_by.as_deref(),
        Some("1.1")
    );
    sim.advance(3_600_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(values(&sim, "ai_accounts"), (Some(3), Some(4)));
}

#[test]
fn an_expiring_brake_leaves_later_changes_alone() {
    let mut sim = Sim::with(guarded());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    assert!(
        brake(&mut sim, ai, "ai_accounts", Change::Set(5), Change::Set(6))
            .decision
            .is_allowed()
    );
    sim.advance(30_000);
    // A later brake of hard only: at expiry of the first, hard stays as the second set it.
    assert!(brake(
        &mut sim,
        PrincipalId::ADMIN,
        "ai_accounts",
        Change::Keep,
        Change::Set(5)
    )
    .decision
    .is_allowed());
    sim.advance(30_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(
        values(&sim, "ai_accounts"),
        (Some(5), Some(5)),
        "soft is back only where the first brake's value held"
    );
    sim.advance(30_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(values(&sim, "ai_accounts"), (Some(5), Some(6)));
}

#[test]
fn one_principal_cannot_flap_limits() {
    let mut sim = Sim::with(guarded());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    for value in [7, 6, 5] {
        assert!(brake(
            &mut sim,
            ai,
            "ai_accounts",
            Change::Set(value),
            Change::Set(value)
        )
        .decision
        .is_allowed());
        sim.advance(1_000);
    }
    let denied = brake(&mut sim, ai, "ai_accounts", Change::Set(4), Change::Set(4));
    assert!(
        matches!(denied.reason, Reason::BrakeRate { max: 3, .. }),
        "{:?}",
        denied.reason
    );
    // Others still may; and the same principal again once its oldest brake is an hour old.
    assert!(brake(
        &mut sim,
        PrincipalId::ADMIN,
        "ai_accounts",
        Change::Set(4),
        Change::Set(4)
    )
    .decision
    .is_allowed());
    sim.advance(3_600_000);
    assert!(
        brake(&mut sim, ai, "ai_accounts", Change::Set(3), Change::Set(3))
            .decision
            .is_allowed()
    );
}

#[test]
fn one_principal_has_a_bounded_number_of_proposals_in_review() {
    let mut genesis = guarded();
    genesis.governance.open_proposals_per_principal_max = 2;
    let mut sim = Sim::with(genesis);
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let raise = |sim: &mut Sim, hard: u64| {
        sim.run(
            ai,
            CommandBody::Propose {
                target: ProposalTarget::Limit {
                    limit: "ai_accounts".into(),
                    soft: Change::Keep,
                    hard: Change::Set(hard),
                },
                brake_only: false,
            },
        )
        .primary()
        .clone()
    };
    assert!(raise(&mut sim, 11).decision.is_allowed());
    assert!(raise(&mut sim, 12).decision.is_allowed());
    let denied = raise(&mut sim, 13);
    assert!(matches!(denied.reason, Reason::TooManyProposals { max: 2 }));
}

#[test]
fn a_deep_chain_of_principals_is_refused_not_a_panic() {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    for limit in &mut genesis.limits {
        if limit.name == "ai_accounts" || limit.name == "human_accounts" {
            (limit.soft, limit.hard) = (None, None);
        }
    }
    let mut sim = Sim::with(genesis);
    // The admin (1.1) is the root of its own chain; each principal the parent of the next.
    let mut parent = sim.create_ok(PrincipalKind::Ai, None);
    let mut depth = 1;
    loop {
        let applied = sim.create(PrincipalKind::Ai, Some(parent));
        match &applied.primary().effect {
            Effect::PrincipalCreated { id, .. } => {
                parent = *id;
                depth += 1;
            }
            _ => {
                let reason = &applied.primary().reason;
                assert!(
                    matches!(reason, Reason::Invalid { message } if message.contains("levels deep")),
                    "{reason:?}"
                );
                break;
            }
        }
        assert!(depth <= PRINCIPAL_DEPTH_MAX, "the depth bound did not hold");
    }
    assert_eq!(depth, PRINCIPAL_DEPTH_MAX);
    // The deepest principal acts; every ledger operation walks its whole chain.
    let reservation = sim.reserve(parent, Resource::LlmBudgetUsd, 1_000).unwrap();
    assert!(sim.commit(parent, reservation, 500).decision.is_allowed());
}

#[test]
fn decomposition_depth_is_bounded_and_completion_does_not_recurse() {
    let mut sim = Sim::new();
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let root = post_plain(&mut sim, "root");
    let mut address = root.clone();
    for level in 0..=TASK_DEPTH_MAX {
        let (claimed, token) = claim(&mut sim, worker, &[]).unwrap();
        assert_eq!(claimed, address);
        let applied = update(
            &mut sim,
            worker,
            &address,
            token,
            TaskUpdate::Decompose {
                subtasks: vec![new_task("deeper", Priority::Normal, &[])],
                on_child_death: ChildDeathPolicy::Fail,
            },
        );
        if level == TASK_DEPTH_MAX {
            let reason = &applied.primary().reason;
            assert!(
                matches!(reason, Reason::Invalid { message } if message.contains("deepest allowed")),
                "{reason:?}"
            );
            // Completing the deepest completes every ancestor, in one command.
            let completed = update(
                &mut sim,
                worker,
                &address,
                token,
                TaskUpdate::Complete("done".into()),
            );
            assert!(completed.primary().decision.is_allowed());
            assert_eq!(
                completed
                    .events
                    .iter()
                    .filter(|e| e.action == "task.complete")
                    .count(),
                TASK_DEPTH_MAX + 1
            );
            assert_eq!(status(&sim, &root), TaskStatus::Completed);
            return;
        }
        assert!(
            applied.primary().decision.is_allowed(),
            "{:?}",
            applied.primary().reason
        );
        address = address.child(1);
    }
    unreachable!("the depth bound refused a decomposition");
}

#[test]
fn a_decomposition_is_admitted_whole_or_not_at_all() {
    let genesis = genesis_with_limit("task_queue_depth", |limit| {
        (limit.soft, limit.hard) = (None, Some(5));
    });
    let mut sim = Sim::with(genesis);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let task = post_plain(&mut sim, "big");
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let data_before = sim.state.limit("data_creation_bytes").unwrap().usage;
    let ten = (0..10)
        .map(|i| new_task(&format!("part {i}"), Priority::Normal, &[]))
        .collect();
    let applied = update(
        &mut sim,
        worker,
        &task,
        token,
        TaskUpdate::Decompose {
            subtasks: ten,
            on_child_death: ChildDeathPolicy::Fail,
        },
    );
    assert!(
        matches!(applied.primary().reason, Reason::HardLimit { ref limit, .. } if limit == "task_queue_depth"),
        "{:?}",
        applied.primary().reason
    );
    assert_eq!(sim.state.limit("task_queue_depth").unwrap().usage, 1);
    assert_eq!(status(&sim, &task), TaskStatus::Claimed);
    // Only the justification of the denied command was counted: nothing of the ten.
    assert_eq!(
        sim.state.limit("data_creation_bytes").unwrap().usage,
        data_before + "test".len() as u64
    );
    let four = (0..4)
        .map(|i| new_task(&format!("part {i}"), Priority::Normal, &[]))
        .collect();
    let applied = update(
        &mut sim,
        worker,
        &task,
        token,
        TaskUpdate::Decompose {
            subtasks: four,
            on_child_death: ChildDeathPolicy::Fail,
        },
    );
    assert!(applied.primary().decision.is_allowed());
    assert_eq!(sim.state.limit("task_queue_depth").unwrap().usage, 5);
}

#[test]
fn every_byte_kept_counts_toward_data_creation() {
    let genesis = genesis_with_limit("data_creation_bytes", |limit| {
        (limit.soft, limit.hard) = (None, Some(10_000));
    });
    let mut sim = Sim::with(genesis);
    let usage = |sim: &Sim| sim.state.limit("data_creation_bytes").unwrap().usage;
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let before = usage(&sim);
    let mut task = new_task("title!", Priority::Normal, &["cap"]);
    task.description = "d".repeat(100);
    let address = post(&mut sim, PrincipalId::ADMIN, task).unwrap();
    // justification "test" + title + description + capability.
    assert_eq!(usage(&sim), before + 4 + 6 + 100 + 3);
    let (_, token) = claim(&mut sim, worker, &["cap"]).unwrap();
    let before = usage(&sim);
    let checkpoint = "c".repeat(1_000);
    assert!(update(
        &mut sim,
        worker,
        &address,
        token,
        TaskUpdate::Checkpoint(checkpoint)
    )
    .primary()
    .decision
    .is_allowed());
    assert_eq!(usage(&sim), before + 4 + 1_000, "checkpoints count");
    let before = usage(&sim);
    let result = "r".repeat(2_000);
    assert!(update(
        &mut sim,
        worker,
        &address,
        token,
        TaskUpdate::Complete(result)
    )
    .primary()
    .decision
    .is_allowed());
    assert_eq!(usage(&sim), before + 4 + 2_000, "results count");
    // Past hard: refused, and nothing is counted.
    let address = post_plain(&mut sim, "t");
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let before = usage(&sim);
    let denied = update(
        &mut sim,
        worker,
        &address,
        token,
        TaskUpdate::Checkpoint("x".repeat(9_000)),
    );
    assert!(
        matches!(denied.primary().reason, Reason::HardLimit { ref limit, .. } if limit == "data_creation_bytes"),
        "{:?}",
        denied.primary().reason
    );
    assert_eq!(usage(&sim), before);
}

#[test]
fn an_admin_whose_io_ops_are_spent_still_governs() {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    genesis
        .quotas
        .defaults
        .get_mut(&PrincipalKind::Human)
        .unwrap()
        .insert(Resource::IoOps, Some(5));
    let mut sim = Sim::with(genesis);
    // Spend the admin's I/O operations with ordinary work.
    loop {
        // Any command costs its actor one I/O operation, even a refused one.
        let applied = sim.run(PrincipalId::ADMIN, CommandBody::Tick);
        if let Reason::InsufficientResource { resource, .. } = applied.primary().reason {
            assert_eq!(resource, Resource::IoOps);
            break;
        }
    }
    // Governance and administration still get through.
    assert!(brake(
        &mut sim,
        PrincipalId::ADMIN,
        "ai_accounts",
        Change::Keep,
        Change::Set(9)
    )
    .decision
    .is_allowed());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    // The other side's brake, which the admin (another lineage) confirms.
    assert!(
        brake(&mut sim, ai, "ai_accounts", Change::Keep, Change::Set(8))
            .decision
            .is_allowed()
    );
    let vote = sim.run(
        PrincipalId::ADMIN,
        CommandBody::Vote {
            proposal: 2,
            choice: VoteChoice::Approve,
        },
    );
    assert!(
        vote.primary().decision.is_allowed(),
        "{:?}",
        vote.primary().reason
    );
    // Ordinary work still meets the quota.
    assert!(matches!(
        sim.run(PrincipalId::ADMIN, CommandBody::Tick)
            .primary()
            .reason,
        Reason::InsufficientResource { .. }
    ));
}

#[test]
fn a_claim_without_a_session_holds_an_implicit_one() {
    let genesis = genesis_with_limit("active_workers", |limit| {
        (limit.soft, limit.hard) = (None, Some(1));
    });
    let mut sim = Sim::with(genesis);
    let usage = |sim: &Sim| sim.state.limit("active_workers").unwrap().usage;
    let first = sim.create_ok(PrincipalKind::Ai, None);
    let second = sim.create_ok(PrincipalKind::Ai, None);
    let a = post_plain(&mut sim, "a");
    let b = post_plain(&mut sim, "b");
    let (claimed, token) = claim(&mut sim, first, &[]).unwrap();
    assert_eq!(claimed, a);
    assert_eq!(usage(&sim), 1, "the lease holder counts as a worker");
    // A second lease of the same principal is the same implicit session.
    let (claimed_b, token_b) = claim(&mut sim, first, &[]).unwrap();
    assert_eq!(claimed_b, b);
    assert_eq!(usage(&sim), 1);
    // Another principal without a session meets the limit.
    let c = post_plain(&mut sim, "c");
    let denied = sim.run(
        second,
        CommandBody::ClaimTask {
            capabilities: vec![],
            lease_ms: None,
            worker: None,
        },
    );
    assert!(
        matches!(denied.primary().reason, Reason::HardLimit { ref limit, .. } if limit == "active_workers"),
        "{:?}",
        denied.primary().reason
    );
    assert_eq!(status(&sim, &c), TaskStatus::Pending);
    // The implicit session ends with the last lease.
    update(
        &mut sim,
        first,
        &a,
        token,
        TaskUpdate::Complete("done".into()),
    );
    assert_eq!(usage(&sim), 1);
    update(&mut sim, first, &b, token_b, TaskUpdate::Release);
    assert_eq!(usage(&sim), 0);
    assert_eq!(
        claim(&mut sim, second, &[])
            .map(|(address, _)| address)
            .as_deref(),
        Some(b.as_str())
    );
}

#[test]
fn one_principal_cannot_fill_an_admission_queue() {
    let genesis = genesis_with_limit("active_workers", |limit| {
        (limit.soft, limit.hard, limit.on_soft) = (Some(1), Some(100), OnSoft::Queue);
        limit.queue_max = 30;
    });
    let mut sim = Sim::with(genesis);
    let greedy = sim.create_ok(PrincipalKind::Ai, None);
    let other = sim.create_ok(PrincipalKind::Ai, None);
    let register = |sim: &mut Sim, actor| {
        let new = colony_kernel::workers::NewWorker {
            capabilities: vec![],
            model: None,
            profile: None,
        };
        sim.run(actor, CommandBody::RegisterWorker(Box::new(new)))
            .primary()
            .clone()
    };
    assert!(register(&mut sim, greedy).decision.is_allowed());
    // The queue holds 30; one principal holds at most a tenth of it.
    for _ in 0..3 {
        assert_eq!(register(&mut sim, greedy).decision, Decision::Queued);
    }
    let denied = register(&mut sim, greedy);
    assert!(
        matches!(
            denied.reason,
            Reason::QueueShare {
                held: 3,
                share: 3,
                ..
            }
        ),
        "{:?}",
        denied.reason
    );
    // Others still find room.
    assert_eq!(register(&mut sim, other).decision, Decision::Queued);
    assert_eq!(sim.state.limit("active_workers").unwrap().queue.len(), 4);
}
