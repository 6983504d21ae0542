//! Anomalous behaviour and quarantine: a principal far outside its own baseline, or
//! past a fixed ceiling, is quarantined at once with the evidence; a steady, busy
//! principal never is; a human releases it.

use colony_kernel::anomaly::*;
use colony_kernel::tasks::*;
use colony_kernel::workers::NewWorker;
use colony_kernel::*;

use crate::common;
use common::*;

const WINDOW_MS: u64 = 60_000;

/// A command that costs nothing and is always allowed: an empty claim.
fn idle_claim(sim: &mut Sim, actor: PrincipalId) -> Applied {
    sim.run(
        actor,
        CommandBody::ClaimTask {
            capabilities: vec!["nothing-offers-this".into()],
            lease_ms: None,
            worker: None,
        },
    )
}

fn quarantine_event(applied: &Applied) -> Option<&Event> {
    applied
        .events
        .iter()
        .find(|e| e.action == "principal.quarantine")
}

fn unlimited_io() -> Genesis {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    for quotas in genesis.quotas.defaults.values_mut() {
        quotas.insert(Resource::IoOps, None);
    }
    genesis
}

#[test]
fn a_steady_busy_principal_is_never_quarantined() {
    let mut sim = Sim::with(unlimited_io());
    let busy = sim.create_ok(PrincipalKind::Ai, None);
    // 5 000 commands a window, four times `min` for commands, for an hour.
    for _ in 0..60 {
        for i in 0..5_000 {
            let applied = idle_claim(&mut sim, busy);
            assert!(quarantine_event(&applied).is_none(), "quarantined at {i}");
            if i % 500 == 0 {
                sim.advance(WINDOW_MS / 10);
            }
        }
    }
    assert!(sim.state.quarantine_of(busy).is_none());
    let activity = sim.state.activity_of(busy).unwrap();
    let baseline = activity.baselines[0] / BASELINE_SCALE;
    assert!((4_500..=5_000).contains(&baseline), "{baseline}");
}

#[test]
fn a_burst_far_outside_its_baseline_is_quarantined_with_the_evidence() {
    let mut sim = Sim::with(unlimited_io());
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    // Its habit: 100 commands a window for ten windows.
    for _ in 0..10 {
        for _ in 0..100 {
            idle_claim(&mut sim, agent);
        }
        sim.advance(WINDOW_MS);
    }
    // It holds a reservation, a task's lease and a worker session.
    let reservation = sim.reserve(agent, Resource::LlmBudgetUsd, 5_000).unwrap();
    let registered = sim.run(
        agent,
        CommandBody::RegisterWorker(Box::new(NewWorker {
            capabilities: vec![],
            model: None,
            profile: None,
        })),
    );
    assert!(registered.primary().decision.is_allowed());
    let task = post_plain(&mut sim, "t");
    let (claimed, _) = claim(&mut sim, agent, &[]).unwrap();
    assert_eq!(claimed, task);
    // Then a burst past 20 times its baseline.
    let mut quarantined = None;
    for i in 0..10_000 {
        let applied = idle_claim(&mut sim, agent);
        if let Some(event) = quarantine_event(&applied) {
            quarantined = Some((i, event.clone()));
            break;
        }
    }
    let (at, event) = quarantined.expect("the burst is quarantined");
    assert!(at < 2_100, "at once: after {at} commands");
    let Reason::Anomalous { evidence } = &event.reason else {
        panic!("{:?}", event.reason)
    };
    assert_eq!(evidence.signal, Signal::Commands);
    assert_eq!(evidence.rule, EvidenceRule::Baseline);
    assert!(evidence.count > evidence.threshold);
    // Ten windows of 100 move an average from 0 to 100 * (1 - (7/8)^10), about 74.
    assert!(
        (70 * BASELINE_SCALE..=78 * BASELINE_SCALE).contains(&evidence.baseline_sixteenths),
        "{evidence:?}"
    );
    assert_eq!(
        evidence.threshold,
        (evidence.baseline_sixteenths * 20).div_ceil(BASELINE_SCALE)
    );
    let Effect::Quarantined {
        released_reservations,
        revoked_leases,
        ended_workers,
        ..
    } = &event.effect
    else {
        panic!("{:?}", event.effect)
    };
    assert_eq!(*released_reservations, 1);
    assert_eq!(revoked_leases, &vec![task.clone()]);
    assert_eq!(ended_workers.len(), 1);
    // Everything it held is back.
    assert!(sim.state.reservation(reservation).is_none());
    assert_eq!(status(&sim, &task), TaskStatus::Pending);
    assert_eq!(sim.balance(agent, Resource::LlmBudgetUsd).reserved, 0);
    // Its commands are refused, saying why.
    let refused = idle_claim(&mut sim, agent);
    assert!(matches!(
        refused.primary().reason,
        Reason::Quarantined { .. }
    ));
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_ceiling_applies_from_the_first_window() {
    let mut sim = Sim::with(unlimited_io());
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    // Denials: every claim of a task that does not exist is denied.
    let mut quarantined = false;
    for _ in 0..4_000 {
        let applied = sim.run(
            agent,
            CommandBody::ClaimSpecificTask {
                address: task("0.7.1.99999"),
                lease_ms: None,
            },
        );
        if let Some(event) = quarantine_event(&applied) {
            let Reason::Anomalous { evidence } = &event.reason else {
                panic!()
            };
            assert_eq!(
                (evidence.signal, evidence.rule, evidence.threshold),
                (Signal::Denials, EvidenceRule::Ceiling, 3_000)
            );
            quarantined = true;
            break;
        }
    }
    assert!(quarantined);
}

#[test]
fn a_human_releases_a_quarantine_and_an_ai_cannot() {
    let mut sim = Sim::with(unlimited_io());
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let other_ai = sim.create_ok(PrincipalKind::Ai, None);
    let human = sim.create_ok(PrincipalKind::Human, None);
    while sim.state.quarantine_of(agent).is_none() {
        sim.run(
            agent,
            CommandBody::ClaimSpecificTask {
                address: task("0.7.1.99999"),
                lease_ms: None,
            },
        );
    }
    let by_ai = sim.run(
        other_ai,
        CommandBody::ReleaseQuarantine { principal: agent },
    );
    assert!(matches!(by_ai.primary().reason, Reason::Forbidden { .. }));
    let by_human = sim.run(human, CommandBody::ReleaseQuarantine { principal: agent });
    assert!(
        by_human.primary().decision.is_allowed(),
        "{:?}",
        by_human.primary().reason
    );
    assert!(sim.state.quarantine_of(agent).is_none());
    assert!(idle_claim(&mut sim, agent).primary().decision.is_allowed());
}

#[test]
fn admins_are_watched_by_people_not_quarantined() {
    let mut sim = Sim::with(unlimited_io());
    for _ in 0..4_000 {
        let applied = sim.run(
            PrincipalId::ADMIN,
            CommandBody::ClaimSpecificTask {
                address: task("0.7.1.99999"),
                lease_ms: None,
            },
        );
        assert!(quarantine_event(&applied).is_none());
    }
}

#[test]
fn a_publish_flood_reported_by_the_edge_is_quarantined() {
    let mut sim = Sim::with(unlimited_io());
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let applied = sim.run(
        PrincipalId::SYSTEM,
        CommandBody::ChargeEdge {
            usage: vec![colony_kernel::streams::EdgeUsage {
                principal: agent,
                io_ops: 700_000,
                data_bytes: 1_000,
            }],
        },
    );
    let event = quarantine_event(&applied).expect("quarantined");
    let Reason::Anomalous { evidence } = &event.reason else {
        panic!()
    };
    assert_eq!(evidence.signal, Signal::Publishes);
}

#[test]
fn a_child_cannot_act_while_its_parent_is_quarantined() {
    let mut sim = Sim::with(unlimited_io());
    let parent = sim.create_ok(PrincipalKind::Ai, None);
    let child = sim.create_ok(PrincipalKind::Ai, Some(parent));
    assert!(idle_claim(&mut sim, child).primary().decision.is_allowed());
    for _ in 0..4_000 {
        let applied = sim.run(
            parent,
            CommandBody::ClaimSpecificTask {
                address: task("0.7.1.99999"),
                lease_ms: None,
            },
        );
        if quarantine_event(&applied).is_some() {
            break;
        }
    }
    assert!(sim.state.quarantine_of(parent).is_some());
    let refused = idle_claim(&mut sim, child);
    assert!(
        matches!(refused.primary().reason, Reason::Quarantined { .. }),
        "{:?}",
        refused.primary().reason
    );
}
