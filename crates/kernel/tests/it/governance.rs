//! Governance scenarios: brakes, consensus, vetoes, removal, relaxation, rollback.

use colony_kernel::governance::*;
use colony_kernel::*;

use crate::common;
use common::*;

fn limit_change(name: &str, soft: Change, hard: Change) -> ProposalTarget {
    ProposalTarget::Limit {
        limit: name.to_string(),
        soft,
        hard,
    }
}

fn propose(sim: &mut Sim, actor: PrincipalId, target: ProposalTarget) -> Event {
    sim.run(
        actor,
        CommandBody::Propose {
            target,
            brake_only: false,
        },
    )
    .primary()
    .clone()
}

fn proposal_id(event: &Event) -> u64 {
    match event.effect {
        Effect::ProposalOpened { proposal, .. } | Effect::LimitChanged { proposal, .. } => proposal,
        _ => panic!("no proposal in {event:?}"),
    }
}

fn vote(sim: &mut Sim, actor: PrincipalId, proposal: u64, choice: VoteChoice) -> Applied {
    sim.run(actor, CommandBody::Vote { proposal, choice })
}

fn tick(sim: &mut Sim) -> Applied {
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick)
}

fn values(sim: &Sim, name: &str) -> (Option<u64>, Option<u64>) {
    let limit = sim.state.limit(name).unwrap();
    (limit.spec.soft, limit.spec.hard)
}

#[test]
fn an_ai_brakes_and_it_applies_at_once() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let event = sim
        .run(
            ai,
            CommandBody::Propose {
                target: limit_change("ai_accounts", Change::Set(2), Change::Set(3)),
                brake_only: true,
            },
        )
        .primary()
        .clone();
    assert_eq!(event.decision, Decision::Allowed);
    assert!(matches!(
        event.effect,
        Effect::LimitChanged {
            soft: Some(2),
            hard: Some(3),
            previous_soft: Some(8),
            previous_hard: Some(10),
            ..
        }
    ));
    assert_eq!(values(&sim, "ai_accounts"), (Some(2), Some(3)));
    let limit = sim.state.limit("ai_accounts").unwrap();
    assert_eq!(
        (limit.set_by.as_str(), limit.set_via.as_str()),
        ("2.1", "proposal 1")
    );
    assert_eq!(sim.state.proposal(1).unwrap().state, ProposalState::Applied);
    // Already admitted stays; new ones meet the new value.
    sim.create_ok(PrincipalKind::Ai, None);
    sim.create_ok(PrincipalKind::Ai, None);
    assert_eq!(
        sim.create(PrincipalKind::Ai, None).primary().reason.code(),
        "hard_limit"
    );
}

#[test]
fn a_raise_approved_by_a_human_and_an_ai_applies_when_the_review_ends() {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    let accounts = genesis
        .limits
        .iter_mut()
        .find(|l| l.name == "ai_accounts")
        .unwrap();
    (accounts.soft, accounts.hard, accounts.on_soft) = (Some(2), Some(10), OnSoft::Queue);
    let mut sim = Sim::with(genesis);
    let human = sim.create_ok(PrincipalKind::Human, None);
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    sim.create_ok(PrincipalKind::Ai, None);
    assert_eq!(
        sim.create(PrincipalKind::Ai, None).primary().decision,
        Decision::Queued
    );

    let opened = propose(
        &mut sim,
        human,
        limit_change("ai_accounts", Change::Set(4), Change::Keep),
    );
    let id = proposal_id(&opened);
    assert!(
        matches!(opened.effect, Effect::ProposalOpened { change: ChangeKind::Raise, review_ends_at_ms, .. } if review_ends_at_ms == sim.now_ms + 10_000)
    );
    assert!(vote(&mut sim, PrincipalId::ADMIN, id, VoteChoice::Approve)
        .primary()
        .decision
        .is_allowed());
    assert!(vote(&mut sim, ai, id, VoteChoice::Approve)
        .primary()
        .decision
        .is_allowed());
    sim.advance(9_999);
    tick(&mut sim);
    assert_eq!(
        values(&sim, "ai_accounts"),
        (Some(2), Some(10)),
        "nothing changes during the review"
    );
    assert_eq!(sim.state.next_due_ms(), Some(sim.now_ms + 1));
    sim.advance(1);
    let decided = tick(&mut sim);
    let decision = decided
        .events
        .iter()
        .find(|e| e.action == "governance.decide")
        .unwrap();
    assert!(
        matches!(&decision.reason, Reason::ConsensusReached { tally } if tally.human.approve == 1 && tally.ai.approve == 1)
    );
    assert_eq!(values(&sim, "ai_accounts"), (Some(4), Some(10)));
    assert!(
        decided
            .events
            .iter()
            .any(|e| e.decision == Decision::Admitted),
        "the queued request is admitted"
    );
    let proposal = sim.state.proposal(id).unwrap();
    assert_eq!(proposal.state, ProposalState::Applied);
    assert_eq!(
        sim.state.limit("ai_accounts").unwrap().set_via,
        format!("proposal {id}")
    );
}

#[test]
fn only_humans_approving_does_not_pass() {
    let mut sim = Sim::new();
    let human = sim.create_ok(PrincipalKind::Human, None);
    let id = proposal_id(&propose(
        &mut sim,
        human,
        limit_change("ai_accounts", Change::Keep, Change::Set(20)),
    ));
    vote(&mut sim, PrincipalId::ADMIN, id, VoteChoice::Approve);
    vote(&mut sim, human, id, VoteChoice::Approve);
    sim.advance(10_000);
    let decided = tick(&mut sim);
    let decision = decided
        .events
        .iter()
        .find(|e| e.action == "governance.decide")
        .unwrap();
    assert_eq!(decision.decision, Decision::Denied);
    assert!(
        matches!(&decision.reason, Reason::ConsensusNotReached { tally } if !tally.ai.quorum_met && tally.human.approval_met)
    );
    assert_eq!(values(&sim, "ai_accounts"), (Some(8), Some(10)));
    let proposal = sim.state.proposal(id).unwrap();
    assert_eq!(proposal.state, ProposalState::Rejected);
    assert!(
        proposal
            .outcome
            .as_deref()
            .unwrap()
            .contains("AI side cast 0 of the 1 votes"),
        "{:?}",
        proposal.outcome
    );
}

#[test]
fn rejections_count_against_the_threshold() {
    let mut sim = Sim::new();
    let ais: Vec<PrincipalId> = (0..3)
        .map(|_| sim.create_ok(PrincipalKind::Ai, None))
        .collect();
    let id = proposal_id(&propose(
        &mut sim,
        ais[0],
        limit_change("ai_accounts", Change::Keep, Change::Set(20)),
    ));
    vote(&mut sim, PrincipalId::ADMIN, id, VoteChoice::Approve);
    vote(&mut sim, ais[0], id, VoteChoice::Approve);
    vote(&mut sim, ais[1], id, VoteChoice::Reject);
    vote(&mut sim, ais[2], id, VoteChoice::Abstain);
    sim.advance(10_000);
    tick(&mut sim);
    assert_eq!(
        sim.state.proposal(id).unwrap().state,
        ProposalState::Rejected,
        "1 of 2 is short of two thirds"
    );
}

#[test]
fn a_veto_blocks_at_once() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let id = proposal_id(&propose(
        &mut sim,
        ai,
        limit_change("human_accounts", Change::Keep, Change::Set(100)),
    ));
    let denied = vote(&mut sim, ai, id, VoteChoice::Veto);
    assert_eq!(
        denied.primary().reason.code(),
        "forbidden",
        "members cannot veto by default"
    );
    let vetoed = vote(&mut sim, PrincipalId::ADMIN, id, VoteChoice::Veto);
    assert_eq!(vetoed.events.len(), 2);
    assert!(matches!(&vetoed.events[1].reason, Reason::Vetoed { by } if by == "1.1"));
    assert_eq!(sim.state.proposal(id).unwrap().state, ProposalState::Vetoed);
    assert_eq!(
        vote(&mut sim, ai, id, VoteChoice::Approve)
            .primary()
            .reason
            .code(),
        "invalid"
    );
    sim.advance(10_000);
    tick(&mut sim);
    assert_eq!(values(&sim, "human_accounts"), (Some(8), Some(10)));
}

#[test]
fn a_removal_needs_the_stricter_rule() {
    let mut sim = Sim::new();
    let humans: Vec<PrincipalId> = (0..2)
        .map(|_| sim.create_ok(PrincipalKind::Human, None))
        .collect();
    let ais: Vec<PrincipalId> = (0..2)
        .map(|_| sim.create_ok(PrincipalKind::Ai, None))
        .collect();
    let three_days = 3 * 86_400_000;
    // One of each approving is enough for a raise but not for a removal.
    let first = propose(
        &mut sim,
        humans[0],
        limit_change("ai_accounts", Change::Unlimited, Change::Unlimited),
    );
    assert!(
        matches!(first.effect, Effect::ProposalOpened { change: ChangeKind::Remove, review_ends_at_ms, .. } if review_ends_at_ms == sim.now_ms + three_days)
    );
    let first = proposal_id(&first);
    vote(&mut sim, humans[0], first, VoteChoice::Approve);
    vote(&mut sim, ais[0], first, VoteChoice::Approve);
    sim.advance(three_days);
    tick(&mut sim);
    assert_eq!(
        sim.state.proposal(first).unwrap().state,
        ProposalState::Rejected
    );
    let second = proposal_id(&propose(
        &mut sim,
        ais[0],
        limit_change("ai_accounts", Change::Unlimited, Change::Unlimited),
    ));
    for voter in humans.iter().chain(&ais) {
        vote(&mut sim, *voter, second, VoteChoice::Approve);
    }
    sim.advance(three_days);
    tick(&mut sim);
    assert_eq!(
        sim.state.proposal(second).unwrap().state,
        ProposalState::Applied
    );
    assert_eq!(values(&sim, "ai_accounts"), (None, None));
}

#[test]
fn bad_proposals_and_votes_are_refused_and_change_nothing() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let id = proposal_id(&propose(
        &mut sim,
        ai,
        limit_change("ai_accounts", Change::Keep, Change::Set(20)),
    ));
    let before = sim.state.proposal(id).unwrap().clone();
    let limits_before = values(&sim, "ai_accounts");
    let cases: Vec<(PrincipalId, CommandBody, &str)> = vec![
        (
            ai,
            CommandBody::Vote {
                proposal: 999,
                choice: VoteChoice::Approve,
            },
            "not_found",
        ),
        (
            ai,
            CommandBody::Propose {
                target: limit_change("no_such_limit", Change::Set(1), Change::Keep),
                brake_only: false,
            },
            "not_found",
        ),
        (
            ai,
            CommandBody::Propose {
                target: limit_change("ai_accounts", Change::Set(30), Change::Keep),
                brake_only: false,
            },
            "invalid",
        ),
        (
            ai,
            CommandBody::Propose {
                target: limit_change("ai_accounts", Change::Set(8), Change::Set(10)),
                brake_only: false,
            },
            "invalid",
        ),
        (
            ai,
            CommandBody::Propose {
                target: limit_change("ai_accounts", Change::Keep, Change::Set(12)),
                brake_only: true,
            },
            "invalid",
        ),
        (
            PrincipalId(999),
            CommandBody::Propose {
                target: limit_change("ai_accounts", Change::Set(1), Change::Keep),
                brake_only: true,
            },
            "no_standing",
        ),
    ];
    for (actor, body, code) in cases {
        let applied = sim.run(actor, body.clone());
        assert_eq!(applied.primary().reason.code(), code, "{body:?}");
    }
    assert!(vote(&mut sim, ai, id, VoteChoice::Approve)
        .primary()
        .decision
        .is_allowed());
    assert_eq!(
        vote(&mut sim, ai, id, VoteChoice::Reject)
            .primary()
            .reason
            .code(),
        "invalid",
        "one principal, one vote"
    );
    assert_eq!(
        sim.state.proposal(id).unwrap().votes.len(),
        before.votes.len() + 1
    );
    sim.advance(10_000);
    // The review ended: this vote arrives after the decision.
    assert_eq!(
        vote(&mut sim, PrincipalId::ADMIN, id, VoteChoice::Approve)
            .primary()
            .reason
            .code(),
        "invalid"
    );
    assert_eq!(
        sim.state.proposal(id).unwrap().state,
        ProposalState::Rejected
    );
    assert_eq!(values(&sim, "ai_accounts"), limits_before);
}

fn relaxing_genesis() -> Genesis {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    genesis.governance.relaxation = Some(RelaxationConfig {
        window_ms: 60_000,
        min_decisions: 5,
        max_denial_rate: Ratio::new(1, 10),
        max_error_rate: Ratio::new(5, 100),
        max_anomalies: 3,
        step: Ratio::new(1, 2),
        monitoring_window_ms: 180_000,
        limits: vec!["ai_accounts".into(), "human_accounts".into()],
        propose: true,
    });
    genesis
}

/// Advances to the next stability window's end and ticks.
fn close_window(sim: &mut Sim) -> Applied {
    sim.now_ms = sim.state.next_due_ms().unwrap();
    tick(sim)
}

#[test]
fn the_system_proposes_a_raise_after_a_stable_window_and_rolls_it_back_when_stability_degrades() {
    let mut sim = Sim::with(relaxing_genesis());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    for _ in 0..3 {
        sim.create_ok(PrincipalKind::Ai, None);
    }
    for _ in 0..6 {
        sim.reserve(ai, Resource::ComputeMs, 1).unwrap();
    }
    sim.run(
        PrincipalId::SYSTEM,
        CommandBody::ReportHealth(NodeHealth {
            requests: 100,
            errors: 1,
            anomalies: 0,
        }),
    );
    let closed = close_window(&mut sim);
    let proposed = closed
        .events
        .iter()
        .find(|e| e.action == "governance.propose")
        .expect("a relaxation proposal");
    assert!(
        matches!(&proposed.reason, Reason::Stable { figures } if figures.decisions == 10 && figures.denials == 0 && figures.requests == 100)
    );
    let id = proposal_id(proposed);
    let proposal = sim.state.proposal(id).unwrap().clone();
    assert!(proposal.automatic);
    assert_eq!(proposal.proposer_address, "0.1");
    assert_eq!(
        proposal.target,
        limit_change("ai_accounts", Change::Set(12), Change::Set(15)),
        "the fullest limit, by half"
    );
    assert!(proposal
        .justification
        .contains("10 decisions with 0 denials"));

    // The same vote as any raise.
    vote(&mut sim, PrincipalId::ADMIN, id, VoteChoice::Approve);
    vote(&mut sim, ai, id, VoteChoice::Approve);
    sim.advance(10_000);
    tick(&mut sim);
    assert_eq!(values(&sim, "ai_accounts"), (Some(12), Some(15)));
    assert!(sim.state.proposal(id).unwrap().monitor_until_ms.is_some());

    // Then the next window goes badly: most requests are denied.
    for _ in 0..6 {
        assert!(sim
            .reserve(ai, Resource::LlmBudgetUsd, 1_000 * USD)
            .is_err());
    }
    sim.reserve(ai, Resource::ComputeMs, 1).unwrap();
    let closed = close_window(&mut sim);
    let rollback = closed
        .events
        .iter()
        .find(|e| e.action == "governance.rollback")
        .expect("a rollback");
    match &rollback.reason {
        Reason::StabilityDegraded { figures, breaches } => {
            assert!(figures.denials >= 6, "{figures:?}");
            assert!(breaches[0].starts_with("denial rate"), "{breaches:?}");
        }
        other => panic!("expected stability_degraded, got {other:?}"),
    }
    assert_eq!(values(&sim, "ai_accounts"), (Some(8), Some(10)));
    assert_eq!(
        sim.state.proposal(id).unwrap().state,
        ProposalState::RolledBack
    );
    assert_eq!(
        sim.state.limit("ai_accounts").unwrap().set_via,
        format!("rollback of proposal {id}")
    );
}

#[test]
fn no_relaxation_without_evidence_or_while_degraded() {
    let mut sim = Sim::with(relaxing_genesis());
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    // Too few decisions.
    let closed = close_window(&mut sim);
    assert!(closed
        .events
        .iter()
        .all(|e| e.action != "governance.propose"));
    // Enough decisions but too many node errors.
    for _ in 0..6 {
        sim.reserve(ai, Resource::ComputeMs, 1).unwrap();
    }
    sim.run(
        PrincipalId::SYSTEM,
        CommandBody::ReportHealth(NodeHealth {
            requests: 10,
            errors: 5,
            anomalies: 0,
        }),
    );
    let closed = close_window(&mut sim);
    assert!(closed
        .events
        .iter()
        .all(|e| e.action != "governance.propose"));
    assert!(sim.state.proposals().next().is_none());
}

#[test]
fn quota_defaults_are_governed_too() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let lower = ProposalTarget::QuotaDefault {
        kind: PrincipalKind::Ai,
        resource: Resource::IoOps,
        amount: Change::Set(100),
    };
    assert!(matches!(
        propose(&mut sim, ai, lower).effect,
        Effect::QuotaDefaultChanged {
            amount: Some(100),
            previous: Some(10_000),
            ..
        }
    ));
    let newcomer = sim.create_ok(PrincipalKind::Ai, None);
    assert_eq!(sim.balance(newcomer, Resource::IoOps).quota, Some(100));
    let raise = ProposalTarget::QuotaDefault {
        kind: PrincipalKind::Ai,
        resource: Resource::IoOps,
        amount: Change::Set(500),
    };
    assert!(matches!(
        propose(&mut sim, ai, raise).effect,
        Effect::ProposalOpened {
            change: ChangeKind::QuotaDefault,
            ..
        }
    ));
}
