//! Edge leases in a cluster: the nodes together never hold or spend more of a
//! quota than is available, a renewal charges what was spent and releases the rest,
//! and a lease nobody renews ends by itself.

use colony_kernel::edge::{EdgeGrant, EdgeLeaseRequest};
use colony_kernel::streams::EdgeUsage;
use colony_kernel::*;

use crate::common;
use common::*;

/// What `node` asks: `usage` spent by `principal`, `want` io_ops for it.
fn lease(
    sim: &mut Sim,
    node: &str,
    principal: PrincipalId,
    spent: u64,
    want: u64,
    ttl_ms: u64,
) -> Event {
    let request = EdgeLeaseRequest {
        node: node.into(),
        usage: if spent > 0 {
            vec![EdgeUsage {
                principal,
                io_ops: spent,
                data_bytes: 0,
            }]
        } else {
            Vec::new()
        },
        io_ops: vec![(principal, want)],
        data_bytes: 1_000,
        ttl_ms,
    };
    sim.run(
        PrincipalId::SYSTEM,
        CommandBody::LeaseEdge(Box::new(request)),
    )
    .primary()
    .clone()
}

fn granted(event: &Event) -> u64 {
    match &event.effect {
        Effect::EdgeLeased { granted, .. } => {
            granted.iter().map(|EdgeGrant { io_ops, .. }| io_ops).sum()
        }
        other => panic!("not a lease: {other:?} ({:?})", event.reason),
    }
}

#[test]
fn the_nodes_together_never_hold_more_than_is_available() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let quota = sim.balance(ai, Resource::IoOps).quota.unwrap();
    let first = granted(&lease(&mut sim, "node-1", ai, 0, quota - 1_000, 30_000));
    assert_eq!(first, quota - 1_000);
    // The second node gets what is left, not what it asked for.
    let second = granted(&lease(&mut sim, "node-2", ai, 0, quota, 30_000));
    assert_eq!(second, 1_000);
    assert_eq!(sim.state.edge_leased_io_ops(ai), quota);
    let balance = sim.balance(ai, Resource::IoOps);
    assert_eq!((balance.reserved, balance.available()), (quota, 0));
    // The principal's own commands compete with the leases: nothing is left.
    let refused = sim.run(
        ai,
        CommandBody::ClaimTask {
            capabilities: vec!["none".into()],
            lease_ms: None,
            worker: None,
        },
    );
    assert!(!refused.primary().decision.is_allowed());
    // A third node gets nothing.
    assert_eq!(granted(&lease(&mut sim, "node-3", ai, 0, 10, 30_000)), 0);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_renewal_charges_what_was_spent_and_grants_from_what_is_left() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let quota = sim.balance(ai, Resource::IoOps).quota.unwrap();
    let used_before = sim.balance(ai, Resource::IoOps).used;
    assert_eq!(
        granted(&lease(&mut sim, "node-1", ai, 0, 6_000, 30_000)),
        6_000
    );
    assert_eq!(
        granted(&lease(&mut sim, "node-2", ai, 0, 6_000, 30_000)),
        quota - used_before - 6_000
    );
    // node-1 spent 5 000 of its 6 000: charged, the other 1 000 released, and a new
    // lease from what is left (node-2 still holds its own).
    let renewed = lease(&mut sim, "node-1", ai, 5_000, 6_000, 30_000);
    assert_eq!(granted(&renewed), 1_000);
    let balance = sim.balance(ai, Resource::IoOps);
    assert_eq!(balance.used, used_before + 5_000);
    assert_eq!(balance.used + balance.reserved, quota);
    assert!(matches!(
        renewed.effect,
        Effect::EdgeLeased {
            io_ops: 5_000,
            shortfall: 0,
            ..
        }
    ));
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_lease_nobody_renews_ends_by_itself() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let quota = sim.balance(ai, Resource::IoOps).quota.unwrap();
    let available = sim.balance(ai, Resource::IoOps).available();
    assert_eq!(
        granted(&lease(&mut sim, "node-1", ai, 0, quota, 5_000)),
        available
    );
    let due = sim.state.next_due_ms().unwrap();
    assert_eq!(due, sim.now_ms + 5_000);
    sim.advance(5_000);
    let tick = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    let expired = tick
        .events
        .iter()
        .find(|event| event.action == "edge.lease")
        .expect("the lease ends");
    assert_eq!(expired.decision, Decision::Expired);
    assert_eq!(sim.balance(ai, Resource::IoOps).reserved, 0);
    assert!(sim.state.edge_lease("node-1").is_none());
    let data = sim
        .state
        .limit_named(LimitName::DataCreationBytes)
        .unwrap()
        .reserved;
    assert_eq!(data, 0);
    sim.state.check_invariants().unwrap();
}

#[test]
fn only_the_system_leases_and_within_bounds() {
    let mut sim = Sim::new();
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let request = EdgeLeaseRequest {
        node: "node-1".into(),
        usage: Vec::new(),
        io_ops: vec![(ai, 10)],
        data_bytes: 0,
        ttl_ms: 1_000,
    };
    let by_ai = sim.run(ai, CommandBody::LeaseEdge(Box::new(request.clone())));
    assert!(!by_ai.primary().decision.is_allowed());
    for bad in [
        EdgeLeaseRequest {
            ttl_ms: 0,
            ..request.clone()
        },
        EdgeLeaseRequest {
            ttl_ms: colony_kernel::edge::EDGE_LEASE_TTL_MAX_MS + 1,
            ..request.clone()
        },
        EdgeLeaseRequest {
            node: String::new(),
            ..request.clone()
        },
        EdgeLeaseRequest {
            node: "n".repeat(NAME_BYTES_MAX + 1),
            ..request.clone()
        },
    ] {
        let refused = sim.run(PrincipalId::SYSTEM, CommandBody::LeaseEdge(Box::new(bad)));
        assert!(!refused.primary().decision.is_allowed());
    }
    assert_eq!(sim.balance(ai, Resource::IoOps).reserved, 0);
}
