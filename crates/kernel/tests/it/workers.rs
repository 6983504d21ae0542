//! Worker sessions: registration within limits, heartbeats, loss and reassignment.

use colony_kernel::tasks::*;
use colony_kernel::workers::*;
use colony_kernel::*;

use crate::common;
use common::*;

fn register(sim: &mut Sim, actor: PrincipalId, capabilities: &[&str]) -> Result<u64, Reason> {
    let new = NewWorker {
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        model: None,
        profile: None,
    };
    let applied = sim.run(actor, CommandBody::RegisterWorker(Box::new(new)));
    match applied.primary().effect {
        Effect::WorkerRegistered { worker, .. } => Ok(worker),
        _ => Err(applied.primary().reason.clone()),
    }
}

fn post(sim: &mut Sim, title: &str) -> TaskAddress {
    let task = NewTask {
        title: title.into(),
        description: String::new(),
        priority: Priority::Normal,
        capabilities: vec!["code".into()],
        depends_on: vec![],
        budget_micro_usd: None,
        max_attempts: None,
        attempt_timeout_ms: None,
    };
    match &sim
        .run(PrincipalId::ADMIN, CommandBody::PostTask(Box::new(task)))
        .primary()
        .effect
    {
        Effect::TaskChanged { address, .. } => address.clone(),
        other => panic!("{other:?}"),
    }
}

fn claim(sim: &mut Sim, actor: PrincipalId, worker: u64) -> Option<(TaskAddress, u64)> {
    let applied = sim.run(
        actor,
        CommandBody::ClaimTask {
            capabilities: vec![],
            lease_ms: Some(600_000),
            worker: Some(worker),
        },
    );
    match &applied.primary().effect {
        Effect::TaskClaimed { address, token, .. } => Some((address.clone(), *token)),
        Effect::NothingToClaim => None,
        _ => panic!("{:?}", applied.primary().reason),
    }
}

/// `active_workers` soft 1 (queue), hard 3.
fn queueing_sim() -> Sim {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    let workers = genesis
        .limits
        .iter_mut()
        .find(|l| l.name == "active_workers")
        .unwrap();
    (workers.soft, workers.hard, workers.on_soft) = (Some(1), Some(3), OnSoft::Queue);
    Sim::with(genesis)
}

/// The bus's report that `worker`'s connection dropped at `dropped_at` and did not
/// come back within a 300 ms grace period.
fn grace_ran_out(sim: &mut Sim, worker: u64, dropped_at: u64) -> Applied {
    sim.run(
        PrincipalId::SYSTEM,
        CommandBody::WorkerDisconnected {
            worker,
            disconnected_at_ms: dropped_at,
            grace_ms: 300,
        },
    )
}

fn tick(sim: &mut Sim) -> Applied {
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick)
}

#[test]
fn registration_is_held_within_active_workers() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let first = register(&mut sim, ai, &["code"]).unwrap();
    register(&mut sim, ai, &["code"]).unwrap();
    let third = sim.run(
        ai,
        CommandBody::RegisterWorker(Box::new(NewWorker {
            capabilities: vec![],
            model: None,
            profile: None,
        })),
    );
    assert_eq!(
        third.primary().decision,
        Decision::Warned,
        "past soft 2: warned"
    );
    let fourth = register(&mut sim, ai, &["code"]).unwrap_err();
    assert!(
        matches!(fourth, Reason::HardLimit { ref limit, usage: 3, hard: 3, .. } if limit == "active_workers")
    );
    assert!(sim
        .run(ai, CommandBody::LeaveWorker { worker: first })
        .primary()
        .decision
        .is_allowed());
    assert_eq!(sim.state.limit("active_workers").unwrap().usage, 2);
    assert!(
        register(&mut sim, ai, &["code"]).is_ok(),
        "a leave makes room"
    );
}

#[test]
fn a_silent_worker_is_declared_lost_and_its_task_resumes_elsewhere() {
    let mut sim = Sim::new();
    let first_ai = sim.create_ok(PrincipalKind::Ai, None);
    let second_ai = sim.create_ok(PrincipalKind::Ai, None);
    let lost = register(&mut sim, first_ai, &["code"]).unwrap();
    let task = post(&mut sim, "port the parser");
    let (claimed, token) = claim(&mut sim, first_ai, lost).unwrap();
    assert_eq!(claimed, task);
    sim.run(
        first_ai,
        CommandBody::UpdateTask {
            address: task.clone(),
            token,
            update: TaskUpdate::Checkpoint("{\"files\":2}".into()),
        },
    );
    let timeout = TaskConfig::defaults().worker_timeout_ms;
    assert_eq!(
        sim.state.next_due_ms(),
        Some(sim.state.worker(lost).unwrap().deadline_ms)
    );
    sim.now_ms = sim.state.next_due_ms().unwrap();
    let declared = tick(&mut sim);
    let event = declared
        .events
        .iter()
        .find(|e| e.action == "worker.lost")
        .expect("declared lost");
    assert!(
        matches!(&event.reason, Reason::WorkerSilent { timeout_ms, revoked, .. } if *timeout_ms == timeout && revoked == &vec![task.clone()])
    );
    assert!(sim
        .state
        .worker(lost)
        .unwrap()
        .evidence
        .as_deref()
        .unwrap()
        .contains("no heartbeat since"));
    assert_eq!(
        sim.state.task(&task).unwrap().status,
        TaskStatus::Pending,
        "back on the board at once"
    );
    assert_eq!(sim.state.limit("active_workers").unwrap().usage, 0);

    let second = register(&mut sim, second_ai, &["code"]).unwrap();
    let (again, new_token) = claim(&mut sim, second_ai, second).unwrap();
    assert_eq!(again, task);
    assert_eq!(
        sim.state.task(&task).unwrap().checkpoint.as_deref(),
        Some("{\"files\":2}")
    );
    // The lost worker comes back: nothing it held is still its own.
    let late = sim.run(
        first_ai,
        CommandBody::UpdateTask {
            address: task.clone(),
            token,
            update: TaskUpdate::Complete("late".into()),
        },
    );
    assert_eq!(late.primary().reason.code(), "stale_lease");
    let heartbeat = sim.run(first_ai, CommandBody::WorkerHeartbeat { worker: lost });
    assert_eq!(heartbeat.primary().reason.code(), "worker_gone");
    assert_eq!(claim_code(&mut sim, first_ai, lost), "worker_gone");
    let done = sim.run(
        second_ai,
        CommandBody::UpdateTask {
            address: task.clone(),
            token: new_token,
            update: TaskUpdate::Complete("done".into()),
        },
    );
    assert!(done.primary().decision.is_allowed());
    let attempts = &sim.state.task(&task).unwrap().attempts;
    assert_eq!(attempts[0].outcome.as_deref(), Some("worker_lost"));
    assert_eq!(
        sim.state.task(&task).unwrap().failures,
        0,
        "losing a worker is not the task's failure"
    );
}

fn claim_code(sim: &mut Sim, actor: PrincipalId, worker: u64) -> &'static str {
    let applied = sim.run(
        actor,
        CommandBody::ClaimTask {
            capabilities: vec![],
            lease_ms: None,
            worker: Some(worker),
        },
    );
    applied.primary().reason.code()
}

#[test]
fn a_slow_worker_within_its_timeout_is_never_lost() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let worker = register(&mut sim, ai, &["code"]).unwrap();
    let timeout = TaskConfig::defaults().worker_timeout_ms;
    for _ in 0..500 {
        sim.advance(timeout - 1);
        tick(&mut sim);
        assert!(sim
            .run(ai, CommandBody::WorkerHeartbeat { worker })
            .primary()
            .decision
            .is_allowed());
    }
    assert_eq!(sim.state.worker(worker).unwrap().state, WorkerState::Active);
}

#[test]
fn sessions_belong_to_their_principal_and_leaving_returns_tasks() {
    let mut sim = Sim::new();
    let owner = sim.create_ok(PrincipalKind::Ai, None);
    let other = sim.create_ok(PrincipalKind::Ai, None);
    let worker = register(&mut sim, owner, &["code"]).unwrap();
    assert_eq!(claim_code(&mut sim, other, worker), "forbidden");
    assert_eq!(
        sim.run(other, CommandBody::WorkerHeartbeat { worker })
            .primary()
            .reason
            .code(),
        "forbidden"
    );
    let task = post(&mut sim, "t");
    claim(&mut sim, owner, worker).unwrap();
    let left = sim.run(owner, CommandBody::LeaveWorker { worker });
    assert!(
        matches!(&left.primary().effect, Effect::WorkerEnded { state: WorkerState::Left, released, .. } if released == &vec![task.clone()])
    );
    assert_eq!(sim.state.task(&task).unwrap().status, TaskStatus::Pending);
    assert_eq!(
        sim.run(owner, CommandBody::LeaveWorker { worker })
            .primary()
            .reason
            .code(),
        "worker_gone"
    );
}

/// Registers a session of `ai` past the soft limit: its ticket and its place in the
/// queue.
fn queue_registration(sim: &mut Sim, ai: PrincipalId) -> (u64, usize) {
    let queued = sim.run(
        ai,
        CommandBody::RegisterWorker(Box::new(NewWorker {
            capabilities: vec!["docs".into()],
            model: None,
            profile: None,
        })),
    );
    match queued.primary().effect {
        Effect::WorkerQueued { ticket, position } => (ticket, position),
        _ => panic!("{:?}", queued.primary()),
    }
}

#[test]
fn registrations_past_soft_wait_in_the_queue_when_the_limit_queues() {
    let mut sim = queueing_sim();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let first = register(&mut sim, ai, &["code"]).unwrap();
    let (ticket, position) = queue_registration(&mut sim, ai);
    assert_eq!(position, 0);
    assert!(sim.state.worker(ticket).is_none(), "not a session yet");
    sim.advance(500);
    let left = sim.run(ai, CommandBody::LeaveWorker { worker: first });
    let admitted = left
        .events
        .iter()
        .find(|e| e.decision == Decision::Admitted)
        .expect("admitted when the place freed");
    assert!(matches!(
        admitted.reason,
        Reason::LimitAllows { waited_ms: 500, .. }
    ));
    let session = sim.state.worker(ticket).unwrap();
    assert_eq!(
        (session.state, session.capabilities.clone()),
        (WorkerState::Active, vec!["docs".to_string()])
    );
    assert_eq!(sim.state.limit("active_workers").unwrap().usage, 1);
}

#[test]
fn a_queued_registration_leaves_the_queue_when_its_worker_leaves() {
    let mut sim = queueing_sim();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let other = sim.create_ok(PrincipalKind::Ai, None);
    let first = register(&mut sim, ai, &["code"]).unwrap();
    let (ticket, _) = queue_registration(&mut sim, ai);
    // Another principal cannot take someone's place out of the queue.
    let refused = sim.run(other, CommandBody::LeaveWorker { worker: ticket });
    assert!(!refused.primary().decision.is_allowed());
    assert_eq!(sim.state.limit("active_workers").unwrap().queue.len(), 1);

    let withdrawn = sim.run(ai, CommandBody::LeaveWorker { worker: ticket });
    let event = withdrawn.primary();
    assert_eq!(
        (event.action, &event.effect),
        ("worker.withdraw", &Effect::WorkerWithdrawn { ticket })
    );
    assert!(sim.state.limit("active_workers").unwrap().queue.is_empty());
    // The place that frees up next admits nobody, and the ticket is gone.
    let left = sim.run(ai, CommandBody::LeaveWorker { worker: first });
    assert!(left.events.iter().all(|e| e.decision != Decision::Admitted));
    assert!(sim.state.worker(ticket).is_none());
    let again = sim.run(ai, CommandBody::LeaveWorker { worker: ticket });
    assert!(!again.primary().decision.is_allowed());
}

#[test]
fn a_queued_registration_whose_connection_is_gone_is_withdrawn_or_lost() {
    let mut sim = queueing_sim();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let first = register(&mut sim, ai, &["code"]).unwrap();
    let queue = |sim: &mut Sim| queue_registration(sim, ai).0;

    // Still queued when the grace period runs out: taken out of the queue, so that
    // freeing a place admits nobody.
    let ticket = queue(&mut sim);
    let dropped_at = sim.state.now_ms;
    sim.advance(300);
    let withdrawn = grace_ran_out(&mut sim, ticket, dropped_at);
    let event = withdrawn.primary();
    assert_eq!(
        (event.action, &event.effect),
        ("worker.withdraw", &Effect::WorkerWithdrawn { ticket })
    );
    assert!(matches!(event.reason, Reason::WorkerDisconnected { worker, .. } if worker == ticket));
    assert!(sim.state.limit("active_workers").unwrap().queue.is_empty());
    let left = sim.run(ai, CommandBody::LeaveWorker { worker: first });
    assert!(left.events.iter().all(|e| e.decision != Decision::Admitted));
    assert!(sim.state.worker(ticket).is_none());

    // Admitted after its connection dropped, and never heard from: lost when the
    // grace period runs out, and its place is free again.
    let first = register(&mut sim, ai, &["code"]).unwrap();
    let ticket = queue(&mut sim);
    let dropped_at = sim.state.now_ms;
    sim.advance(100);
    sim.run(ai, CommandBody::LeaveWorker { worker: first });
    assert_eq!(sim.state.worker(ticket).unwrap().state, WorkerState::Active);
    sim.advance(200);
    let lost = grace_ran_out(&mut sim, ticket, dropped_at);
    assert_eq!(lost.primary().action, "worker.lost");
    assert_eq!(sim.state.worker(ticket).unwrap().state, WorkerState::Lost);
    assert_eq!(sim.state.limit("active_workers").unwrap().usage, 0);

    // A worker that did come back (a heartbeat after the drop) is not lost.
    let back = register(&mut sim, ai, &["code"]).unwrap();
    let dropped_at = sim.state.now_ms;
    sim.advance(100);
    sim.run(ai, CommandBody::WorkerHeartbeat { worker: back });
    sim.advance(200);
    let kept = grace_ran_out(&mut sim, back, dropped_at);
    assert_eq!(kept.primary().action, "worker.disconnected");
    assert_eq!(sim.state.worker(back).unwrap().state, WorkerState::Active);
}

/// Soft liveness: the node renews the sessions it heard from in one command, and
/// declares a silent one lost itself; a node whose view is behind the log, or that
/// declares too early, is refused; only the node may say either.
#[test]
fn the_node_renews_heard_sessions_and_declares_silent_ones_lost() {
    let mut sim = Sim::new();
    let first_ai = sim.create_ok(PrincipalKind::Ai, None);
    let second_ai = sim.create_ok(PrincipalKind::Ai, None);
    let quiet = register(&mut sim, first_ai, &["code"]).unwrap();
    let chatty = register(&mut sim, second_ai, &["code"]).unwrap();
    let task = post(&mut sim, "index the docs");
    let (claimed, _) = claim(&mut sim, first_ai, quiet).unwrap();
    assert_eq!(claimed, task);
    let timeout = TaskConfig::defaults().worker_timeout_ms;

    // Nobody else may renew or declare.
    for body in [
        CommandBody::RenewWorkers {
            heard: vec![WorkerHeard {
                worker: quiet,
                at_ms: sim.now_ms,
            }],
        },
        CommandBody::DeclareWorkerLost {
            worker: quiet,
            last_heard_ms: 0,
        },
    ] {
        let refused = sim.run(first_ai, body);
        assert_eq!(refused.primary().reason.code(), "forbidden");
    }

    // Both heard a second later: one command keeps both for the soft lease, and the
    // lease of the task the quiet one holds as a heartbeat would.
    sim.advance(1_000);
    let lease_before = sim.state.task(&task).unwrap().lease.clone().unwrap();
    let heard_at = sim.now_ms;
    let renewed = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::RenewWorkers {
            heard: vec![
                WorkerHeard {
                    worker: quiet,
                    at_ms: heard_at,
                },
                WorkerHeard {
                    worker: chatty,
                    at_ms: heard_at,
                },
                // An unknown session is skipped, not an error.
                WorkerHeard {
                    worker: 999_999,
                    at_ms: heard_at,
                },
            ],
        },
    );
    assert!(renewed.primary().decision.is_allowed());
    for id in [quiet, chatty] {
        assert_eq!(
            sim.state.worker(id).unwrap().deadline_ms,
            heard_at + SOFT_SESSION_LEASE_MS
        );
    }
    let lease = sim.state.task(&task).unwrap().lease.clone().unwrap();
    assert_eq!(
        lease.expires_at_ms,
        (heard_at + lease.lease_ms).min(lease.attempt_deadline_ms)
    );
    assert!(lease.expires_at_ms > lease_before.expires_at_ms);
    assert_eq!(lease.token, lease_before.token, "the same lease, extended");
    // Past the timeout nothing is declared by the kernel's clock any more...
    sim.advance(timeout * 3);
    tick(&mut sim);
    assert_eq!(sim.state.worker(quiet).unwrap().state, WorkerState::Active);
    // ...but by the node, with its evidence. Too early is refused.
    let early = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::DeclareWorkerLost {
            worker: quiet,
            last_heard_ms: sim.now_ms - timeout / 2,
        },
    );
    assert_eq!(early.primary().reason.code(), "invalid");
    let declared = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::DeclareWorkerLost {
            worker: quiet,
            last_heard_ms: heard_at,
        },
    );
    let event = declared.primary();
    assert_eq!(event.action, "worker.lost");
    assert!(
        matches!(&event.reason, Reason::WorkerSilent { revoked, last_heartbeat_ms, .. } if revoked == &vec![task.clone()] && *last_heartbeat_ms == heard_at)
    );
    assert!(sim
        .state
        .worker(quiet)
        .unwrap()
        .evidence
        .as_deref()
        .unwrap()
        .contains("(heard by the node)"));
    assert_eq!(sim.state.task(&task).unwrap().status, TaskStatus::Pending);
    // Declared twice: the second finds it ended and changes nothing.
    let again = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::DeclareWorkerLost {
            worker: quiet,
            last_heard_ms: heard_at,
        },
    );
    assert!(again.primary().decision.is_allowed());
    assert_eq!(sim.state.limit("active_workers").unwrap().usage, 1);

    // A node whose view is behind the log (a heartbeat logged since) is refused.
    let logged = sim.run(second_ai, CommandBody::WorkerHeartbeat { worker: chatty });
    assert!(logged.primary().decision.is_allowed());
    sim.advance(timeout / 2);
    let stale = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::DeclareWorkerLost {
            worker: chatty,
            last_heard_ms: heard_at,
        },
    );
    assert_eq!(stale.primary().reason.code(), "invalid");
    assert_eq!(sim.state.worker(chatty).unwrap().state, WorkerState::Active);
}

/// Soft lease renewals: the node extends the in-progress leases it heard heartbeat,
/// in one command, as heartbeats then would have; a lease that ended, a claimed task
/// (whose first heartbeat starts it) and a time ahead of the log are skipped; only
/// the node may renew, and at most `RENEW_LEASES_MAX` at once.
#[test]
fn the_node_renews_heard_task_leases_in_one_command() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let started = post(&mut sim, "in progress");
    let waiting = post(&mut sim, "claimed only");
    let (first, first_token) = claim_without_session(&mut sim, ai);
    assert_eq!(first, started);
    let beat = sim.run(
        ai,
        CommandBody::UpdateTask {
            address: started.clone(),
            token: first_token,
            update: TaskUpdate::Heartbeat,
        },
    );
    assert!(beat.primary().decision.is_allowed());
    let (second, second_token) = claim_without_session(&mut sim, ai);
    assert_eq!(second, waiting);
    assert!(
        sim.state
            .soft_renewable(ai, &started, first_token)
            .is_some(),
        "in progress, held: may be heartbeated in memory"
    );
    assert!(
        sim.state
            .soft_renewable(ai, &waiting, second_token)
            .is_none(),
        "only claimed"
    );
    assert!(
        sim.state
            .soft_renewable(ai, &started, first_token + 1)
            .is_none(),
        "stale"
    );

    sim.advance(10_000);
    let heard_at = sim.now_ms - 1_000;
    let before = sim.state.task(&started).unwrap().lease.clone().unwrap();
    let waiting_before = sim.state.task(&waiting).unwrap().lease.clone().unwrap();
    let heard = vec![
        LeaseHeard {
            address: started.clone(),
            token: first_token,
            at_ms: heard_at,
        },
        LeaseHeard {
            address: waiting.clone(),
            token: second_token,
            at_ms: heard_at,
        },
        LeaseHeard {
            address: started.clone(),
            token: first_token + 7,
            at_ms: heard_at,
        },
        LeaseHeard {
            address: task("0.7.1.99999"),
            token: 1,
            at_ms: heard_at,
        },
    ];
    let refused = sim.run(
        ai,
        CommandBody::RenewLeases {
            heard: heard.clone(),
        },
    );
    assert_eq!(refused.primary().reason.code(), "forbidden");
    let renewed = sim.run(PrincipalId::SYSTEM, CommandBody::RenewLeases { heard });
    assert!(renewed.primary().decision.is_allowed());
    let after = sim.state.task(&started).unwrap().lease.clone().unwrap();
    assert_eq!(
        after.expires_at_ms,
        (heard_at + before.lease_ms).min(before.attempt_deadline_ms)
    );
    assert_eq!(after.token, before.token);
    assert_eq!(
        sim.state.task(&waiting).unwrap().lease.clone().unwrap(),
        waiting_before,
        "a claimed task's lease is left to its first heartbeat"
    );
    // Heard in the future of the log: skipped.
    let ahead = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::RenewLeases {
            heard: vec![LeaseHeard {
                address: started.clone(),
                token: first_token,
                at_ms: sim.now_ms + 60_000,
            }],
        },
    );
    assert!(ahead.primary().decision.is_allowed());
    assert_eq!(
        sim.state.task(&started).unwrap().lease.clone().unwrap(),
        after
    );
    let too_many = vec![
        LeaseHeard {
            address: started.clone(),
            token: first_token,
            at_ms: heard_at,
        };
        RENEW_LEASES_MAX + 1
    ];
    let refused = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::RenewLeases { heard: too_many },
    );
    assert_eq!(refused.primary().reason.code(), "invalid");
    sim.state.check_invariants().unwrap();
}

fn claim_without_session(sim: &mut Sim, actor: PrincipalId) -> (TaskAddress, u64) {
    let applied = sim.run(
        actor,
        CommandBody::ClaimTask {
            capabilities: vec!["code".into()],
            lease_ms: None,
            worker: None,
        },
    );
    match &applied.primary().effect {
        Effect::TaskClaimed { address, token, .. } => (address.clone(), *token),
        other => panic!("claim: {other:?}"),
    }
}
