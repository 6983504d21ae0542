//! One independent principal, one voice (issue 26): a principal and everything it
//! spawned count once, on the side of their root, wherever sides or people are
//! counted; no lineage confirms or approves its own request.

use colony_kernel::governance::*;
use colony_kernel::grants::GrantWhat;
use colony_kernel::*;

use crate::common;
use common::*;

/// A human member (created by the admin) and two AIs it spawned under itself.
fn human_with_two_ais(sim: &mut Sim) -> (PrincipalId, PrincipalId, PrincipalId) {
    let human = sim.create_ok(PrincipalKind::Human, None);
    let spawn = |sim: &mut Sim, n: u8| {
        let mut request =
            CreatePrincipal::new(format!("puppet{n}"), PrincipalKind::Ai, [200 + n; 32]);
        request.parent = Some(human);
        request.roles = vec![Role::Member];
        match sim
            .run(human, CommandBody::CreatePrincipal(request))
            .primary()
            .effect
        {
            Effect::PrincipalCreated { id, .. } => id,
            ref other => panic!("spawning was refused: {other:?}"),
        }
    };
    let (first, second) = (spawn(sim, 1), spawn(sim, 2));
    (human, first, second)
}

fn raise_ai_accounts(sim: &mut Sim, proposer: PrincipalId) -> u64 {
    let applied = sim.run(
        proposer,
        CommandBody::Propose {
            target: ProposalTarget::Limit {
                limit: "ai_accounts".into(),
                soft: Change::Keep,
                hard: Change::Set(50),
            },
            brake_only: false,
        },
    );
    match applied.primary().effect {
        Effect::ProposalOpened { proposal, .. } => proposal,
        ref other => panic!("no proposal: {other:?}"),
    }
}

fn vote(sim: &mut Sim, voter: PrincipalId, proposal: u64, choice: VoteChoice) -> Event {
    sim.run(voter, CommandBody::Vote { proposal, choice })
        .primary()
        .clone()
}

fn message(event: &Event) -> String {
    format!("{:?}", event.reason)
}

fn end_review(sim: &mut Sim) {
    sim.advance(2 * 86_400_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
}

#[test]
fn spawned_ais_take_their_roots_lineage_and_admin_creations_start_their_own() {
    let mut sim = Sim::new();
    let (human, first, second) = human_with_two_ais(&mut sim);
    let independent = sim.create_ok(PrincipalKind::Ai, Some(human));
    assert_eq!(sim.state.lineage_root(human), human);
    assert_eq!(sim.state.lineage_root(first), human);
    assert_eq!(sim.state.lineage_root(second), human);
    // Created by the admin, even under the human: a root of its own.
    assert_eq!(sim.state.lineage_root(independent), independent);
    let puppet = sim.state.principal(first).unwrap().clone();
    assert_eq!(sim.state.lineage_side(&puppet), Some(Side::Human));
}

#[test]
fn issue_26_one_human_with_two_spawned_ais_cannot_raise_a_limit_alone() {
    let mut sim = Sim::new();
    let (human, first, second) = human_with_two_ais(&mut sim);
    let proposal = raise_ai_accounts(&mut sim, human);
    assert!(vote(&mut sim, human, proposal, VoteChoice::Approve)
        .decision
        .is_allowed());
    for puppet in [first, second] {
        let refused = vote(&mut sim, puppet, proposal, VoteChoice::Approve);
        assert_eq!(refused.decision, Decision::Denied);
        let text = message(&refused);
        assert!(
            text.contains("lineage of 1.2") && text.contains("1.2 cast `approve`"),
            "{text}"
        );
    }
    let votes = &sim.state.proposal(proposal).unwrap().votes;
    assert_eq!(votes.len(), 1, "only the root's vote stands");
    end_review(&mut sim);
    let decided = sim.state.proposal(proposal).unwrap();
    assert_eq!(decided.state, ProposalState::Rejected);
    let tally = decided.tally.as_ref().unwrap();
    assert_eq!((tally.human.approve, tally.ai.approve), (1, 0));
    assert_eq!(
        sim.state.limit("ai_accounts").unwrap().spec.hard,
        Some(10),
        "the raise did not apply"
    );
}

#[test]
fn a_spawned_ai_votes_on_its_roots_side_and_an_independent_ai_completes_the_consensus() {
    let mut sim = Sim::new();
    let (human, first, _) = human_with_two_ais(&mut sim);
    let independent = sim.create_ok(PrincipalKind::Ai, None);
    let proposal = raise_ai_accounts(&mut sim, human);
    // The puppet votes first: its vote is the human lineage's, on the human side.
    assert!(vote(&mut sim, first, proposal, VoteChoice::Approve)
        .decision
        .is_allowed());
    let cast = &sim.state.proposal(proposal).unwrap().votes[&first];
    assert_eq!((cast.side, cast.lineage.as_str()), (Side::Human, "1.2"));
    assert_eq!(
        vote(&mut sim, human, proposal, VoteChoice::Approve).decision,
        Decision::Denied,
        "the root itself has no second vote"
    );
    assert!(vote(&mut sim, independent, proposal, VoteChoice::Approve)
        .decision
        .is_allowed());
    end_review(&mut sim);
    assert_eq!(
        sim.state.proposal(proposal).unwrap().state,
        ProposalState::Applied
    );
    assert_eq!(sim.state.limit("ai_accounts").unwrap().spec.hard, Some(50));
}

#[test]
fn issue_26_a_lineage_cannot_confirm_its_own_brake() {
    let mut sim = Sim::new();
    let (human, first, _) = human_with_two_ais(&mut sim);
    let applied = sim.run(
        human,
        CommandBody::Propose {
            target: ProposalTarget::Limit {
                limit: "ai_accounts".into(),
                soft: Change::Set(2),
                hard: Change::Set(3),
            },
            brake_only: true,
        },
    );
    let brake = match applied.primary().effect {
        Effect::LimitChanged { proposal, .. } => proposal,
        ref other => panic!("no brake: {other:?}"),
    };
    let refused = vote(&mut sim, first, brake, VoteChoice::Approve);
    assert_eq!(refused.decision, Decision::Denied);
    assert!(message(&refused).contains("never the braker's own lineage"));
    let proposal = sim.state.proposal(brake).unwrap();
    assert!(proposal.confirmed_by.is_none() && proposal.brake_expires_at_ms.is_some());
    assert!(proposal.votes.is_empty(), "a refused vote changes nothing");
    // Someone of the other side, of another lineage, confirms it.
    let independent = sim.create_ok(PrincipalKind::Ai, None);
    assert!(vote(&mut sim, independent, brake, VoteChoice::Approve)
        .decision
        .is_allowed());
    let proposal = sim.state.proposal(brake).unwrap();
    assert_eq!(proposal.confirmed_by.as_deref(), Some("2.3"));
}

#[test]
fn issue_26_a_grant_needing_a_human_and_an_ai_is_not_passed_by_one_lineage() {
    let mut sim = Sim::new();
    let (human, first, _) = human_with_two_ais(&mut sim);
    let requester = sim.create_ok(PrincipalKind::Ai, None);
    let applied = sim.run(
        requester,
        CommandBody::RequestGrant {
            what: GrantWhat::Quota {
                resource: Resource::IoOps,
                amount: 1_000_000,
            },
            ttl_ms: 3_600_000,
        },
    );
    let grant = match applied.primary().effect {
        Effect::GrantRequested { grant, .. } => grant,
        ref other => panic!("no grant: {other:?}"),
    };
    let decide = |sim: &mut Sim, who: PrincipalId| {
        sim.run(
            who,
            CommandBody::DecideGrant {
                grant,
                approve: true,
            },
        )
        .primary()
        .clone()
    };
    let by_human = decide(&mut sim, human);
    assert!(matches!(
        by_human.effect,
        Effect::GrantApproved { active: false, .. }
    ));
    // The human's own AI approves for the human side again: still one side.
    let by_puppet = decide(&mut sim, first);
    assert!(
        matches!(
            by_puppet.effect,
            Effect::GrantApproved { active: false, .. }
        ),
        "{by_puppet:?}"
    );
    // A requester's lineage never approves its own request.
    let mut request = CreatePrincipal::new("helper", PrincipalKind::Ai, [250; 32]);
    request.parent = Some(requester);
    let helper = match sim
        .run(requester, CommandBody::CreatePrincipal(request))
        .primary()
        .effect
    {
        Effect::PrincipalCreated { id, .. } => id,
        ref other => panic!("{other:?}"),
    };
    let own = decide(&mut sim, helper);
    assert_eq!(own.decision, Decision::Denied);
    assert!(message(&own).contains("of its own lineage"));
    // An AI of another lineage completes it.
    let independent = sim.create_ok(PrincipalKind::Ai, None);
    let by_ai = decide(&mut sim, independent);
    assert!(matches!(
        by_ai.effect,
        Effect::GrantApproved { active: true, .. }
    ));
}

#[test]
fn issue_26_nobody_releases_a_quarantine_of_its_own_lineage() {
    let mut sim = Sim::new();
    let (human, first, _) = human_with_two_ais(&mut sim);
    let refused = sim
        .run(human, CommandBody::ReleaseQuarantine { principal: first })
        .primary()
        .clone();
    assert_eq!(refused.decision, Decision::Denied);
    assert!(message(&refused).contains("outside the quarantined lineage"));
}

#[test]
fn brakes_and_open_proposals_are_counted_per_lineage() {
    let mut sim = Sim::new();
    let (human, first, second) = human_with_two_ais(&mut sim);
    let max = sim.state.governance_config().brakes_per_hour_max as u64;
    let brakers = [human, first, second];
    let mut applied = 0;
    for step in 0..(max + 3) {
        let braker = brakers[(step % 3) as usize];
        let event = sim
            .run(
                braker,
                CommandBody::Propose {
                    target: ProposalTarget::Limit {
                        limit: "task_queue_depth".into(),
                        soft: Change::Set(79 - step),
                        hard: Change::Keep,
                    },
                    brake_only: true,
                },
            )
            .primary()
            .clone();
        if event.decision.is_allowed() {
            applied += 1;
        } else {
            assert!(
                matches!(event.reason, Reason::BrakeRate { .. }),
                "{event:?}"
            );
        }
    }
    assert_eq!(
        applied, max,
        "one lineage brakes at most brakes_per_hour_max"
    );
}
