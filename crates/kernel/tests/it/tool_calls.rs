//! Calls of upstream MCP tools (issue 28): recorded with their charges settled in
//! one decision, and a human's approval of one call used by that call only.

use colony_kernel::grants::{GrantState, GrantWhat};
use colony_kernel::tool_calls::{ToolCallRecord, ToolOutcome};
use colony_kernel::*;

use crate::common::*;

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn member(sim: &mut Sim, kind: PrincipalKind, parent: Option<PrincipalId>) -> PrincipalId {
    sim.next_token += 1;
    let mut request =
        CreatePrincipal::new(format!("m{}", sim.next_token), kind, [sim.next_token; 32]);
    request.parent = parent;
    request.roles = vec![Role::Member];
    let actor = parent.unwrap_or(PrincipalId::ADMIN);
    match sim
        .run(actor, CommandBody::CreatePrincipal(request))
        .primary()
        .effect
    {
        Effect::PrincipalCreated { id, .. } => id,
        ref other => panic!("{other:?}"),
    }
}

fn record(charges: Vec<(ReservationId, u64)>, grant: Option<u64>) -> CommandBody {
    CommandBody::RecordToolCall(Box::new(ToolCallRecord {
        tool: "files__delete_file".into(),
        arguments_sha256: DIGEST.into(),
        arguments_bytes: 30,
        outcome: ToolOutcome::Ok,
        result_bytes: 12,
        duration_ms: 5,
        charges,
        grant,
    }))
}

fn ask(sim: &mut Sim, caller: PrincipalId, ttl_ms: u64) -> u64 {
    let applied = sim.run(
        caller,
        CommandBody::RequestGrant {
            what: GrantWhat::ToolCall {
                tool: "files__delete_file".into(),
                arguments_sha256: DIGEST.into(),
            },
            ttl_ms,
        },
    );
    match applied.primary().effect {
        Effect::GrantRequested { grant, .. } => grant,
        ref other => panic!("{other:?} {:?}", applied.primary().reason),
    }
}

fn decide(sim: &mut Sim, who: PrincipalId, grant: u64, approve: bool) -> Event {
    sim.run(who, CommandBody::DecideGrant { grant, approve })
        .primary()
        .clone()
}

#[test]
fn a_call_is_recorded_with_its_charges_settled_once() {
    let mut sim = Sim::new();
    let agent = member(&mut sim, PrincipalKind::Ai, None);
    let io = sim.reserve(agent, Resource::IoOps, 3).unwrap();
    let compute = sim.reserve(agent, Resource::ComputeMs, 500).unwrap();
    let applied = sim.run(agent, record(vec![(io, 3), (compute, 500)], None));
    let event = applied.primary();
    assert_eq!(event.action, "mcp.tool_call");
    match &event.effect {
        Effect::ToolCalled {
            tool,
            outcome,
            charged,
            ..
        } => {
            assert_eq!(tool, "files__delete_file");
            assert_eq!(*outcome, ToolOutcome::Ok);
            assert_eq!(
                charged,
                &vec![(Resource::IoOps, 3), (Resource::ComputeMs, 500)]
            );
        }
        other => panic!("{other:?}"),
    }
    let commits = |applied: &Applied| {
        applied
            .events
            .iter()
            .filter(|e| matches!(e.effect, Effect::Committed { .. }))
            .count()
    };
    assert_eq!(commits(&applied), 2, "each reservation is committed");
    assert_eq!(sim.balance(agent, Resource::IoOps).reserved, 0);
    // Sent again after an uncertain answer: refused, nothing charged twice.
    let again = sim.run(agent, record(vec![(io, 3)], None));
    assert_eq!(again.primary().decision, Decision::Denied);
    assert_eq!(commits(&again), 0);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_record_is_refused_whole_when_any_part_is_wrong() {
    let mut sim = Sim::new();
    let agent = member(&mut sim, PrincipalKind::Ai, None);
    let other = member(&mut sim, PrincipalKind::Ai, None);
    let mine = sim.reserve(agent, Resource::IoOps, 2).unwrap();
    let theirs = sim.reserve(other, Resource::IoOps, 2).unwrap();
    // Another's reservation, more than reserved, a bad digest, a bad name.
    let refused = sim.run(agent, record(vec![(mine, 2), (theirs, 2)], None));
    assert_eq!(refused.primary().decision, Decision::Denied);
    let refused = sim.run(agent, record(vec![(mine, 3)], None));
    assert_eq!(refused.primary().decision, Decision::Denied);
    for (tool, digest) in [("files__x", "ABC"), ("bad name!", DIGEST)] {
        let body = CommandBody::RecordToolCall(Box::new(ToolCallRecord {
            tool: tool.into(),
            arguments_sha256: digest.into(),
            arguments_bytes: 0,
            outcome: ToolOutcome::Ok,
            result_bytes: 0,
            duration_ms: 0,
            charges: vec![(mine, 1)],
            grant: None,
        }));
        assert_eq!(
            sim.run(agent, body).primary().decision,
            Decision::Denied,
            "{tool} {digest}"
        );
    }
    // Nothing was settled by any of them.
    assert_eq!(sim.balance(agent, Resource::IoOps).reserved, 2);
    assert_eq!(sim.balance(other, Resource::IoOps).reserved, 2);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_call_needing_approval_is_approved_by_a_human_of_another_lineage_and_runs_once() {
    let mut sim = Sim::new();
    let owner = member(&mut sim, PrincipalKind::Human, None);
    let agent = member(&mut sim, PrincipalKind::Ai, Some(owner));
    let reviewer = member(&mut sim, PrincipalKind::Human, None);
    let ai_reviewer = member(&mut sim, PrincipalKind::Ai, None);
    let grant = ask(&mut sim, agent, 60_000);
    sim.state.check_invariants().unwrap();
    // Not the caller's own human, not an AI.
    let own = decide(&mut sim, owner, grant, true);
    assert_eq!(own.decision, Decision::Denied);
    assert!(format!("{:?}", own.reason).contains("own lineage"));
    let by_ai = decide(&mut sim, ai_reviewer, grant, true);
    assert_eq!(by_ai.decision, Decision::Denied);
    assert!(format!("{:?}", by_ai.reason).contains("human member or admin"));
    let approved = decide(&mut sim, reviewer, grant, true);
    assert!(matches!(
        approved.effect,
        Effect::GrantApproved { active: true, .. }
    ));
    sim.state.check_invariants().unwrap();
    // A record for other arguments cannot use it.
    let io = sim.reserve(agent, Resource::IoOps, 1).unwrap();
    let other_call = CommandBody::RecordToolCall(Box::new(ToolCallRecord {
        arguments_sha256: "f".repeat(64),
        ..match record(vec![(io, 1)], Some(grant)) {
            CommandBody::RecordToolCall(r) => *r,
            _ => unreachable!(),
        }
    }));
    assert_eq!(
        sim.run(agent, other_call).primary().decision,
        Decision::Denied
    );
    // The call it approved uses it, once.
    let used = sim.run(agent, record(vec![(io, 1)], Some(grant)));
    assert!(used.primary().decision.is_allowed(), "{used:?}");
    assert_eq!(
        sim.state.grant_request(grant).unwrap().state,
        GrantState::Used
    );
    let io = sim.reserve(agent, Resource::IoOps, 1).unwrap();
    let twice = sim.run(agent, record(vec![(io, 1)], Some(grant)));
    assert_eq!(twice.primary().decision, Decision::Denied);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_call_not_decided_in_time_ends_and_a_denied_one_is_never_usable() {
    let mut sim = Sim::new();
    let agent = member(&mut sim, PrincipalKind::Ai, None);
    let reviewer = member(&mut sim, PrincipalKind::Human, None);
    let late = ask(&mut sim, agent, 30_000);
    assert!(sim
        .state
        .next_due_ms()
        .is_some_and(|at| at <= sim.now_ms + 30_000));
    sim.advance(30_000);
    let ticked = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert!(ticked
        .events
        .iter()
        .any(|e| e.action == "grant.expire" && e.effect == Effect::GrantExpired { grant: late }));
    assert_eq!(
        sim.state.grant_request(late).unwrap().state,
        GrantState::Expired
    );
    assert_eq!(
        decide(&mut sim, reviewer, late, true).decision,
        Decision::Denied
    );
    let denied = ask(&mut sim, agent, 30_000);
    assert!(decide(&mut sim, reviewer, denied, false)
        .decision
        .is_allowed());
    sim.state.check_invariants().unwrap();
    let io = sim.reserve(agent, Resource::IoOps, 1).unwrap();
    for grant in [late, denied] {
        let refused = sim.run(agent, record(vec![(io, 1)], Some(grant)));
        assert_eq!(refused.primary().decision, Decision::Denied);
    }
    // Nothing is left due for them.
    sim.advance(60_000);
    let ticked = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert!(!ticked.events.iter().any(|e| e.action == "grant.expire"));
    sim.state.check_invariants().unwrap();
}

#[test]
fn an_approval_that_ends_while_its_call_runs_still_records_the_call() {
    let mut sim = Sim::new();
    let agent = member(&mut sim, PrincipalKind::Ai, None);
    let reviewer = member(&mut sim, PrincipalKind::Human, None);
    let grant = ask(&mut sim, agent, 10_000);
    assert!(decide(&mut sim, reviewer, grant, true)
        .decision
        .is_allowed());
    let io = sim.reserve(agent, Resource::IoOps, 1).unwrap();
    // The call outlives the approval's time.
    sim.advance(20_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(
        sim.state.grant_request(grant).unwrap().state,
        GrantState::Expired
    );
    let recorded = sim.run(agent, record(vec![(io, 1)], Some(grant)));
    assert!(recorded.primary().decision.is_allowed(), "{recorded:?}");
    assert_eq!(
        sim.state.grant_request(grant).unwrap().state,
        GrantState::Used
    );
    sim.state.check_invariants().unwrap();
    // Once used, never again.
    let io = sim.reserve(agent, Resource::IoOps, 1).unwrap();
    let again = sim.run(agent, record(vec![(io, 1)], Some(grant)));
    assert_eq!(again.primary().decision, Decision::Denied);
}
