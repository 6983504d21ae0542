//! Behaviour of the kernel at its boundary: commands in, events and state out.

use colony_kernel::*;

use crate::common;
use common::*;

#[test]
fn account_hard_limit_admits_exactly_hard_and_explains_the_denial() {
    let mut sim = Sim::new();
    let mut decisions = Vec::new();
    for _ in 0..12 {
        decisions.push(sim.create(PrincipalKind::Ai, None).primary().clone());
    }
    let allowed = decisions.iter().filter(|e| e.decision.is_allowed()).count();
    assert_eq!(allowed, 10);
    // Soft 8: the 9th and 10th are warned.
    assert_eq!(decisions[7].decision, Decision::Allowed);
    assert_eq!(decisions[8].decision, Decision::Warned);
    assert!(
        matches!(&decisions[8].warnings[0], Reason::SoftLimit { limit, soft: 8, .. } if limit == "ai_accounts")
    );
    match &decisions[10].reason {
        Reason::HardLimit {
            limit,
            usage,
            hard,
            set_by,
            set_via,
            ..
        } => {
            assert_eq!((limit.as_str(), *usage, *hard), ("ai_accounts", 10, 10));
            assert_eq!(set_by, "0.1");
            assert!(set_via.contains("genesis"));
        }
        other => panic!("expected hard_limit, got {other:?}"),
    }
    assert_eq!(
        sim.state.limit("ai_accounts").unwrap().state(),
        LimitState::Blocked
    );
    // Humans are counted separately.
    assert!(sim
        .create(PrincipalKind::Human, None)
        .primary()
        .decision
        .is_allowed());
}

#[test]
fn addresses_follow_hypernet_categories() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let human = sim.create_ok(PrincipalKind::Human, None);
    assert_eq!(
        sim.state.principal(PrincipalId::ADMIN).unwrap().address,
        "1.1"
    );
    assert_eq!(sim.state.principal(ai).unwrap().address, "2.1");
    assert_eq!(sim.state.principal(human).unwrap().address, "1.2");
    let mut request = CreatePrincipal::new("loom", PrincipalKind::Ai, [99; 32]);
    request.address = Some("2.1.loom".into());
    assert!(sim
        .run(
            PrincipalId::ADMIN,
            CommandBody::CreatePrincipal(request.clone())
        )
        .primary()
        .decision
        .is_allowed());
    request.token_hash = [98; 32];
    let taken = sim.run(
        PrincipalId::ADMIN,
        CommandBody::CreatePrincipal(request.clone()),
    );
    assert_eq!(taken.primary().reason.code(), "invalid");
    request.address = Some("1.9".into());
    let wrong_category = sim.run(PrincipalId::ADMIN, CommandBody::CreatePrincipal(request));
    assert_eq!(wrong_category.primary().reason.code(), "invalid");
}

#[test]
fn soft_limit_queue_admits_by_priority_when_usage_drops() {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    let accounts = genesis
        .limits
        .iter_mut()
        .find(|l| l.name == "ai_accounts")
        .unwrap();
    accounts.soft = Some(2);
    accounts.hard = Some(5);
    accounts.on_soft = OnSoft::Queue;
    accounts.queue_max = 2;
    let mut sim = Sim::with(genesis);
    let first = sim.create_ok(PrincipalKind::Ai, None);
    sim.create_ok(PrincipalKind::Ai, None);
    let low = sim.create(PrincipalKind::Ai, None);
    assert_eq!(low.primary().decision, Decision::Queued);
    let mut urgent = CreatePrincipal::new("urgent", PrincipalKind::Ai, [77; 32]);
    urgent.priority = Priority::Critical;
    let queued = sim.run(PrincipalId::ADMIN, CommandBody::CreatePrincipal(urgent));
    assert!(matches!(
        queued.primary().effect,
        Effect::PrincipalQueued { position: 0, .. }
    ));
    assert_eq!(
        sim.create(PrincipalKind::Ai, None).primary().reason.code(),
        "queue_full"
    );
    assert_eq!(
        sim.state.limit("ai_accounts").unwrap().state(),
        LimitState::Queue
    );

    sim.advance(5_000);
    let removal = sim.run(
        PrincipalId::ADMIN,
        CommandBody::RemovePrincipal { principal: first },
    );
    assert!(removal.primary().decision.is_allowed());
    let admitted: Vec<&Event> = removal
        .events
        .iter()
        .filter(|e| e.decision == Decision::Admitted)
        .collect();
    assert_eq!(admitted.len(), 1, "one place freed, one admission");
    assert!(matches!(
        &admitted[0].reason,
        Reason::LimitAllows {
            waited_ms: 5_000,
            ..
        }
    ));
    assert!(
        sim.state.principal_by_token(&[77; 32]).is_some(),
        "the critical request went first"
    );
    assert!(sim.state.principal_by_token(&[first.0 as u8; 32]).is_none());
}

#[test]
fn removed_principal_loses_standing_and_releases_everything() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let reservation = sim.reserve(ai, Resource::LlmBudgetUsd, USD).unwrap();
    let removed = sim.run(
        PrincipalId::ADMIN,
        CommandBody::RemovePrincipal { principal: ai },
    );
    assert!(matches!(
        removed.primary().effect,
        Effect::PrincipalRemoved {
            released_reservations: 1,
            ..
        }
    ));
    assert!(sim.state.reservation(reservation).is_none());
    assert_eq!(sim.state.limit("llm_spend_usd").unwrap().reserved, 0);
    let denied = sim.run(
        ai,
        CommandBody::Reserve {
            resource: Resource::IoOps,
            amount: 1,
            ttl_ms: None,
        },
    );
    assert_eq!(denied.primary().reason.code(), "no_standing");
    assert_eq!(sim.state.limit("ai_accounts").unwrap().usage, 0);
}

#[test]
fn test_quota_check_before_llm_call() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    match sim.reserve(ai, Resource::LlmBudgetUsd, 11 * USD) {
        Err(Reason::InsufficientResource {
            resource,
            requested,
            available,
            principal,
            refill_at_ms,
        }) => {
            assert_eq!(resource, Resource::LlmBudgetUsd);
            assert_eq!((requested, available), (11 * USD, 10 * USD));
            assert_eq!(principal, "2.1");
            assert_eq!(refill_at_ms, None, "stock never refills");
        }
        other => panic!("expected insufficient_resource, got {other:?}"),
    }
    assert_eq!(
        sim.balance(ai, Resource::LlmBudgetUsd).used,
        0,
        "a denial charges nothing"
    );
    assert!(
        sim.reserve(ai, Resource::LlmBudgetUsd, 10 * USD).is_ok(),
        "exactly the quota fits"
    );
}

#[test]
fn test_quota_deduction_after_llm_call() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let reservation = sim.reserve(ai, Resource::LlmBudgetUsd, 2 * USD).unwrap();
    assert_eq!(sim.balance(ai, Resource::LlmBudgetUsd).available(), 8 * USD);
    let event = sim.commit(ai, reservation, 1_250_000);
    assert!(matches!(
        event.effect,
        Effect::Committed {
            charged: 1_250_000,
            refunded: 750_000,
            shortfall: 0,
            ..
        }
    ));
    let balance = sim.balance(ai, Resource::LlmBudgetUsd);
    assert_eq!(
        (balance.used, balance.reserved, balance.available()),
        (1_250_000, 0, 8_750_000)
    );
    assert_eq!(
        sim.state.limit("llm_spend_usd").unwrap().usage,
        1_250_000,
        "agent spend counts toward the global cap"
    );
    // Decimal precision: 1.1 + 2.2 is exactly 3.3 in micro-dollars.
    for actual in [1_100_000, 2_200_000] {
        let r = sim.reserve(ai, Resource::LlmBudgetUsd, actual).unwrap();
        sim.commit(ai, r, actual);
    }
    assert_eq!(
        sim.balance(ai, Resource::LlmBudgetUsd).used,
        1_250_000 + 3_300_000
    );
}

#[test]
fn overrun_is_charged_up_to_what_remains_and_recorded() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let first = sim.reserve(ai, Resource::LlmBudgetUsd, 9 * USD).unwrap();
    sim.commit(ai, first, 9 * USD);
    let second = sim.reserve(ai, Resource::LlmBudgetUsd, USD / 2).unwrap();
    let event = sim.commit(ai, second, 3 * USD);
    assert!(
        matches!(event.effect, Effect::Committed { charged, shortfall, .. } if charged == USD && shortfall == 2 * USD)
    );
    let balance = sim.balance(ai, Resource::LlmBudgetUsd);
    assert_eq!(
        (balance.used, balance.shortfall, balance.available()),
        (10 * USD, 2 * USD, 0)
    );
}

#[test]
fn test_disk_quota_enforced() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    assert!(matches!(
        sim.reserve(ai, Resource::DiskBytes, (1 << 20) + 1),
        Err(Reason::InsufficientResource { .. })
    ));
    let r = sim.reserve(ai, Resource::DiskBytes, 600_000).unwrap();
    sim.commit(ai, r, 600_000);
    assert!(
        sim.reserve(ai, Resource::DiskBytes, 600_000).is_err(),
        "the second large artifact does not fit"
    );
    // Deleting data gives disk quota back, which the old system never did.
    let freed = sim.run(
        ai,
        CommandBody::Free {
            resource: Resource::DiskBytes,
            amount: 600_000,
        },
    );
    assert!(freed.primary().decision.is_allowed());
    assert!(sim.reserve(ai, Resource::DiskBytes, 600_000).is_ok());
    let too_much = sim.run(
        ai,
        CommandBody::Free {
            resource: Resource::DiskBytes,
            amount: 1,
        },
    );
    assert_eq!(
        too_much.primary().reason.code(),
        "invalid",
        "cannot free what is not in use"
    );
}

#[test]
fn test_artifact_runs_until_exhausted() {
    // An artifact loop needs no scheduler: it runs while its quota lasts, is denied
    // when it runs out, and runs again when its flow refills.
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    let mut quotas = std::collections::BTreeMap::new();
    quotas.insert(Resource::ComputeMs, Some(1_000));
    quotas.insert(Resource::IoOps, Some(1_000));
    genesis
        .quotas
        .defaults
        .insert(PrincipalKind::Artifact, quotas);
    let mut sim = Sim::with(genesis);
    let artifact = sim.create_ok(PrincipalKind::Artifact, None);
    assert_eq!(sim.state.principal(artifact).unwrap().address, "3.1");
    let mut steps = 0;
    let denial = loop {
        match sim.reserve(artifact, Resource::ComputeMs, 100) {
            Ok(r) => {
                sim.commit(artifact, r, 70);
                steps += 1;
            }
            Err(reason) => break reason,
        }
        assert!(steps < 100, "the loop must stop by itself");
    };
    assert_eq!(
        steps, 13,
        "13 steps of 70 ms leave 90 ms, less than the next reserve of 100"
    );
    let Reason::InsufficientResource {
        refill_at_ms: Some(refill_at_ms),
        ..
    } = denial
    else {
        panic!("expected a flow denial with its refill time, got {denial:?}")
    };
    sim.now_ms = refill_at_ms;
    assert!(
        sim.reserve(artifact, Resource::ComputeMs, 100).is_ok(),
        "the window turned"
    );
}

#[test]
fn test_no_has_loop_property() {
    // Whether something runs is decided by its quotas, never by a flag on it.
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let principal = format!("{:?}", sim.state.principal(ai).unwrap());
    assert!(
        !principal.contains("has_loop") && !principal.contains("scheduled"),
        "{principal}"
    );
}

#[test]
fn a_child_never_spends_beyond_its_parent() {
    let mut sim = Sim::new();
    let parent = sim.create_ok(PrincipalKind::Ai, None);
    let child = sim.create_ok(PrincipalKind::Ai, Some(parent));
    let grant = sim.run(
        parent,
        CommandBody::Grant {
            to: child,
            resource: Resource::LlmBudgetUsd,
            amount: 8 * USD,
        },
    );
    assert!(grant.primary().decision.is_allowed());
    let r = sim
        .reserve(parent, Resource::LlmBudgetUsd, 5 * USD)
        .unwrap();
    sim.commit(parent, r, 5 * USD);
    // The child's own quota is 8, but its parent has only 5 left.
    match sim.reserve(child, Resource::LlmBudgetUsd, 6 * USD) {
        Err(Reason::InsufficientResource {
            principal,
            available,
            ..
        }) => {
            assert_eq!((principal.as_str(), available), ("2.1", 5 * USD));
        }
        other => panic!("expected the parent to bound the child, got {other:?}"),
    }
    let r = sim.reserve(child, Resource::LlmBudgetUsd, 5 * USD).unwrap();
    sim.commit(child, r, 5 * USD);
    assert_eq!(
        sim.balance(parent, Resource::LlmBudgetUsd).used,
        10 * USD,
        "child spend counts at the parent"
    );
    let stranger = sim.create_ok(PrincipalKind::Ai, None);
    let denied = sim.run(
        stranger,
        CommandBody::Grant {
            to: child,
            resource: Resource::LlmBudgetUsd,
            amount: 1,
        },
    );
    assert_eq!(denied.primary().reason.code(), "forbidden");
    let too_much = sim.run(
        parent,
        CommandBody::Grant {
            to: child,
            resource: Resource::LlmBudgetUsd,
            amount: 11 * USD,
        },
    );
    assert_eq!(too_much.primary().reason.code(), "invalid");
}

#[test]
fn interleaved_reservations_never_overdraw_and_one_exhaustion_does_not_stop_others() {
    let mut sim = Sim::new();
    let agents: Vec<PrincipalId> = (0..4)
        .map(|_| sim.create_ok(PrincipalKind::Ai, None))
        .collect();
    let mut open = Vec::new();
    for round in 0..30 {
        for (index, agent) in agents.iter().enumerate() {
            let amount = if index == 0 { 2 * USD } else { USD / 10 };
            if let Ok(r) = sim.reserve(*agent, Resource::LlmBudgetUsd, amount) {
                open.push((*agent, r, amount));
            }
        }
        if round % 2 == 1 {
            for (agent, r, amount) in open.drain(..) {
                sim.commit(agent, r, amount);
            }
        }
    }
    for agent in &agents {
        let balance = sim.balance(*agent, Resource::LlmBudgetUsd);
        assert!(balance.used + balance.reserved <= 10 * USD);
    }
    assert_eq!(
        sim.balance(agents[0], Resource::LlmBudgetUsd).available(),
        0
    );
    assert!(
        sim.reserve(agents[1], Resource::LlmBudgetUsd, USD / 10)
            .is_ok(),
        "others go on"
    );
}

#[test]
fn system_spend_cap_holds_across_principals() {
    let mut sim = Sim::new();
    let agents: Vec<PrincipalId> = (0..6)
        .map(|_| sim.create_ok(PrincipalKind::Ai, None))
        .collect();
    let mut granted = 0;
    let mut last = None;
    for agent in &agents {
        match sim.reserve(*agent, Resource::LlmBudgetUsd, 9 * USD) {
            Ok(_) => granted += 1,
            Err(reason) => last = Some(reason),
        }
    }
    assert_eq!(
        granted, 5,
        "45 of the 50 dollars a day; the sixth would pass 50"
    );
    assert!(matches!(last, Some(Reason::HardLimit { ref limit, .. }) if limit == "llm_spend_usd"));
}

#[test]
fn reservations_expire_when_their_time_is_up() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let applied = sim.run(
        ai,
        CommandBody::Reserve {
            resource: Resource::MemoryBytes,
            amount: 1 << 20,
            ttl_ms: Some(1_000),
        },
    );
    let Effect::Reserved {
        reservation,
        expires_at_ms,
        ..
    } = applied.primary().effect
    else {
        panic!()
    };
    assert_eq!(sim.state.next_due_ms(), Some(expires_at_ms));
    sim.advance(999);
    assert!(sim.run(PrincipalId::SYSTEM, CommandBody::Tick).events.len() == 1);
    sim.advance(1);
    let tick = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(tick.events[0].decision, Decision::Expired);
    assert!(sim.state.reservation(reservation).is_none());
    assert_eq!(sim.balance(ai, Resource::MemoryBytes).reserved, 0);
    assert_eq!(sim.commit(ai, reservation, 1).reason.code(), "not_found");
}

#[test]
fn gauges_are_held_until_released() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let r = sim.reserve(ai, Resource::MemoryBytes, 200 << 20).unwrap();
    sim.commit(ai, r, 100 << 20);
    assert_eq!(sim.balance(ai, Resource::MemoryBytes).used, 100 << 20);
    assert!(sim.reserve(ai, Resource::MemoryBytes, 200 << 20).is_err());
    sim.advance(10_000_000);
    assert!(sim.state.reservation(r).is_some(), "a hold does not expire");
    let released = sim.run(ai, CommandBody::Release { reservation: r });
    assert!(released.primary().decision.is_allowed());
    assert_eq!(sim.balance(ai, Resource::MemoryBytes).used, 0);
}

#[test]
fn bad_requests_are_denied_with_reasons() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let other = sim.create_ok(PrincipalKind::Ai, None);
    let check = |sim: &mut Sim, actor, body, code: &str| {
        let applied = sim.run(actor, body);
        assert_eq!(
            applied.primary().reason.code(),
            code,
            "{:?}",
            applied.primary()
        );
    };
    check(
        &mut sim,
        ai,
        CommandBody::Reserve {
            resource: Resource::IoOps,
            amount: 0,
            ttl_ms: None,
        },
        "invalid",
    );
    check(
        &mut sim,
        ai,
        CommandBody::Reserve {
            resource: Resource::IoOps,
            amount: u64::MAX,
            ttl_ms: None,
        },
        "insufficient_resource",
    );
    check(
        &mut sim,
        ai,
        CommandBody::Reserve {
            resource: Resource::IoOps,
            amount: 1,
            ttl_ms: Some(0),
        },
        "invalid",
    );
    check(
        &mut sim,
        ai,
        CommandBody::Commit {
            reservation: 999_999,
            actual: 1,
        },
        "not_found",
    );
    let r = sim.reserve(ai, Resource::ComputeMs, 10).unwrap();
    check(
        &mut sim,
        other,
        CommandBody::Commit {
            reservation: r,
            actual: 1,
        },
        "forbidden",
    );
    check(
        &mut sim,
        ai,
        CommandBody::CreatePrincipal(CreatePrincipal::new("x", PrincipalKind::Ai, [200; 32])),
        "forbidden",
    );
    check(&mut sim, ai, CommandBody::Tick, "forbidden");
    check(
        &mut sim,
        PrincipalId(424242),
        CommandBody::Tick,
        "no_standing",
    );
    check(
        &mut sim,
        PrincipalId::ADMIN,
        CommandBody::CreatePrincipal(CreatePrincipal::new("", PrincipalKind::Ai, [201; 32])),
        "invalid",
    );
    check(
        &mut sim,
        PrincipalId::ADMIN,
        CommandBody::RemovePrincipal {
            principal: PrincipalId::ADMIN,
        },
        "forbidden",
    );
    check(
        &mut sim,
        PrincipalId::SYSTEM,
        CommandBody::Genesis(Box::new(Genesis::for_tests([3; 32]))),
        "invalid",
    );
}

#[test]
fn observers_read_but_do_not_act() {
    let mut sim = Sim::new();
    let mut request = CreatePrincipal::new("watcher", PrincipalKind::Human, [55; 32]);
    request.roles = vec![Role::Observer];
    sim.run(PrincipalId::ADMIN, CommandBody::CreatePrincipal(request));
    let observer = sim.state.principal_by_token(&[55; 32]).unwrap().id;
    let denied = sim.run(
        observer,
        CommandBody::Reserve {
            resource: Resource::IoOps,
            amount: 1,
            ttl_ms: None,
        },
    );
    assert_eq!(denied.primary().reason.code(), "forbidden");
}

#[test]
fn io_ops_gate_every_command() {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    genesis
        .quotas
        .defaults
        .get_mut(&PrincipalKind::Ai)
        .unwrap()
        .insert(Resource::IoOps, Some(3));
    let mut sim = Sim::with(genesis);
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    for _ in 0..3 {
        assert!(sim.reserve(ai, Resource::ComputeMs, 1).is_ok());
    }
    assert!(matches!(
        sim.reserve(ai, Resource::ComputeMs, 1),
        Err(Reason::InsufficientResource {
            resource: Resource::IoOps,
            ..
        })
    ));
    sim.advance(60_000);
    assert!(sim.reserve(ai, Resource::ComputeMs, 1).is_ok());
}

/// A seeded stream of mixed commands, replayed twice, gives the same events and
/// state, and a state restored from a snapshot goes on exactly like the original.
#[test]
fn replay_is_deterministic_and_snapshots_restore_exactly() {
    fn script(seed: u64, count: usize, start_ms: u64) -> Vec<(u64, PrincipalId, CommandBody)> {
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut commands = Vec::new();
        let mut at = start_ms;
        for index in 0..count {
            at += next() % 5_000;
            let actor = PrincipalId(1 + next() % 8);
            let resource = Resource::ALL[(next() % 5) as usize];
            let body = match next() % 10 {
                0 => CommandBody::CreatePrincipal(CreatePrincipal::new(
                    format!("n{index}"),
                    if next() % 2 == 0 {
                        PrincipalKind::Ai
                    } else {
                        PrincipalKind::Human
                    },
                    [
                        (index % 250) as u8 + 2,
                        (index / 250) as u8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        7,
                    ],
                )),
                1 | 2 => CommandBody::Reserve {
                    resource,
                    amount: 1 + next() % 2_000_000,
                    ttl_ms: Some(1 + next() % 20_000),
                },
                3 | 4 => CommandBody::Commit {
                    reservation: next() % (index as u64 + 2),
                    actual: next() % 3_000_000,
                },
                5 => CommandBody::Release {
                    reservation: next() % (index as u64 + 2),
                },
                7 => CommandBody::PostTask(Box::new(colony_kernel::tasks::NewTask {
                    title: format!("task {index}"),
                    description: String::new(),
                    priority: Priority::Normal,
                    capabilities: if next() % 2 == 0 {
                        vec!["rust".into()]
                    } else {
                        vec![]
                    },
                    depends_on: vec![],
                    budget_micro_usd: Some(next() % 100_000),
                    max_attempts: Some(2),
                    attempt_timeout_ms: None,
                })),
                8 => CommandBody::ClaimTask {
                    capabilities: vec!["rust".into()],
                    lease_ms: Some(1 + next() % 10_000),
                    worker: None,
                },
                9 => CommandBody::UpdateTask {
                    address: TaskAddress::root(1 + next() % 50),
                    token: next() % (index as u64 + 2),
                    update: match next() % 3 {
                        0 => TaskUpdate::Complete("ok".into()),
                        1 => TaskUpdate::Fail("no".into()),
                        _ => TaskUpdate::Spend(next() % 50_000),
                    },
                },
                _ => CommandBody::Tick,
            };
            let actor = if matches!(body, CommandBody::Tick) {
                PrincipalId::SYSTEM
            } else {
                actor
            };
            commands.push((at, actor, body));
        }
        commands
    }
    let run = |state: &mut State, commands: &[(u64, PrincipalId, CommandBody)]| -> Vec<Applied> {
        commands
            .iter()
            .map(|(at, actor, body)| {
                state.apply(&Command::new(
                    state.last_seq + 1,
                    *at,
                    *actor,
                    "sim",
                    body.clone(),
                ))
            })
            .collect()
    };
    let mut commands = vec![(
        1_000_000,
        PrincipalId::SYSTEM,
        CommandBody::Genesis(Box::new(Genesis::for_tests(ADMIN_TOKEN))),
    )];
    commands.extend(script(0x5eed, 3_000, 1_000_000));
    let (mut first, mut second) = (State::new(), State::new());
    let events_first = run(&mut first, &commands);
    let events_second = run(&mut second, &commands);
    assert_eq!(events_first, events_second);
    assert_eq!(first, second);
    let decided: std::collections::BTreeSet<&str> = events_first
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.decision.as_str()))
        .collect();
    assert!(
        decided.contains("allowed") && decided.contains("denied") && decided.contains("expired"),
        "{decided:?}"
    );

    let mut restored: State = postcard::from_bytes(&postcard::to_stdvec(&first).unwrap()).unwrap();
    assert_eq!(restored, first);
    let tail = script(0xfeed, 500, first.now_ms);
    assert_eq!(run(&mut first, &tail), run(&mut restored, &tail));
    assert_eq!(first, restored);
}
