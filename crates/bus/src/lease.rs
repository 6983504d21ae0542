//! The edge allowances of a node of a cluster: leases from the kernel.
//!
//! Several nodes publish for the same principals at once, so none may spend from
//! the kernel's balance directly. Each `edge_flush` the node sends one
//! `LeaseEdge` command (through the cluster's log, like every command): what it spent
//! since the last one, and the allowances it wants next. The kernel releases its
//! previous lease, charges what was spent, and reserves the new allowances out of
//! what is available; the node then spends only from them. Every node's spending
//! and holding is therefore in the kernel's balances at all times: together the
//! nodes never spend more than one node alone would have allowed.
//!
//! What a node asks for a principal: its fair part of the pool (what is available
//! plus what all nodes hold, divided by the live nodes), but no more than it seems
//! to need (four times what it spent in the last round, at least an eighth of its
//! fair part), so that the rest stays available to the principal's commands and to
//! the other nodes. A lease runs `LEASE_ROUNDS` rounds; a node that could not renew
//! it stops spending at its own deadline, before the kernel ends the lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use colony_kernel::edge::{EdgeGrant, EdgeLeaseRequest, EDGE_LEASE_TTL_MAX_MS};
use colony_kernel::{LimitName, PrincipalId, Resource, State};

use crate::meter::{refresh_one, Meters};

/// A lease holds for this many rounds (`edge_flush`) unless renewed.
pub const LEASE_ROUNDS: u64 = 5;
/// Least `io_ops` a node asks for a principal it holds a meter of.
const IO_OPS_FLOOR: u64 = 64;
/// Least bytes of `data_creation_bytes` a node asks for.
const DATA_BYTES_FLOOR: u64 = 64 * 1024;

/// A node's leasing: when its lease lapses, and its rounds.
#[derive(Debug)]
pub(crate) struct Leasing {
    /// The node's own deadline for spending its lease (Unix ms; 0 before the first).
    until_ms: AtomicU64,
    /// Woken when a new meter has no allowance: a round is wanted now.
    pub(crate) wanted: tokio::sync::Notify,
    /// Counts the leases applied.
    rounds: tokio::sync::watch::Sender<u64>,
    /// Whether the last lease granted anything (to be released when no longer wanted).
    holds: std::sync::atomic::AtomicBool,
    /// The rounds' period (`edge_flush`, ms), as the last round said.
    period_ms: AtomicU64,
    /// This node's name, as the last round said (its lease in the kernel's state).
    node: std::sync::Mutex<String>,
}

impl Default for Leasing {
    fn default() -> Leasing {
        Leasing {
            until_ms: AtomicU64::new(0),
            wanted: tokio::sync::Notify::new(),
            rounds: tokio::sync::watch::channel(0).0,
            holds: std::sync::atomic::AtomicBool::new(false),
            period_ms: AtomicU64::new(1_000),
            node: std::sync::Mutex::default(),
        }
    }
}

impl Leasing {
    /// Past the node's deadline: nothing may be spent until a new lease.
    pub(crate) fn lapsed(&self) -> bool {
        colony_pipeline::sequencer::now_ms() >= self.until_ms.load(Ordering::Relaxed)
    }

    /// Whether the cluster may still have `principal`'s io_ops when this node's lease
    /// of them is spent: some no node holds, or some other nodes' leases hold.
    pub(crate) fn io_ops_elsewhere(
        &self,
        state: &State,
        principal: PrincipalId,
        now_ms: u64,
    ) -> bool {
        if state
            .available_at(principal, Resource::IoOps, now_ms)
            .is_some_and(|available| available > 0)
        {
            return true;
        }
        let own = state
            .edge_lease(&self.node.lock().expect("node lock"))
            .and_then(|lease| lease.io_ops.get(&principal))
            .map_or(0, |leased| leased.amount);
        state.edge_leased_io_ops(principal) > own
    }

    /// The refusal of a publish for want of this node's lease of `what`: the next
    /// round is at most a period away. (A refusal asks for no round of its own: an
    /// agent that publishes on regardless would have the node log one per refusal.)
    pub(crate) fn spent(&self, what: &'static str) -> crate::meter::Spent {
        crate::meter::Spent::Lease {
            what,
            retry_after_ms: self.period_ms.load(Ordering::Relaxed).max(1),
        }
    }
}

/// What one round asks: the request to log, and the node's deadline if granted.
pub struct LeaseRound {
    pub request: EdgeLeaseRequest,
    pub until_ms: u64,
    /// Nothing to charge, nothing held, nothing wanted: the round need not be logged.
    pub idle: bool,
}

impl Meters {
    /// Whether this node's allowances are leases (a cluster).
    pub fn is_leasing(&self) -> bool {
        self.leasing.is_some()
    }

    /// Takes what was spent since the last round and says what to ask for next.
    /// `period_ms` is the node's `edge_flush`; `nodes` the live nodes of the cluster.
    pub fn lease_request(&self, node: &str, period_ms: u64, nodes: u64) -> LeaseRound {
        let now_ms = colony_pipeline::sequencer::now_ms();
        if let Some(leasing) = &self.leasing {
            leasing.period_ms.store(period_ms, Ordering::Relaxed);
            node.clone_into(&mut leasing.node.lock().expect("node lock"));
        }
        let ttl_ms = period_ms
            .saturating_mul(LEASE_ROUNDS)
            .clamp(1, EDGE_LEASE_TTL_MAX_MS);
        let usage = self.flush();
        // A meter nobody holds any more (its connections closed) and with nothing
        // unspent is dropped: an idle node stops asking for leases.
        self.by_principal
            .lock()
            .expect("meters lock")
            .retain(|_, meter| std::sync::Arc::strong_count(meter) > 1);
        let spent: HashMap<PrincipalId, (u64, u64)> = usage
            .iter()
            .map(|u| (u.principal, (u.io_ops, u.data_bytes)))
            .collect();
        let nodes = nodes.max(1);
        let state = self.state.read().expect("state lock");
        let mut io_ops = Vec::new();
        for principal in self.by_principal.lock().expect("meters lock").keys() {
            let Some(available) = state.available_at(*principal, Resource::IoOps, now_ms) else {
                continue; // unlimited: no lease needed
            };
            let pool = available.saturating_add(state.edge_leased_io_ops(*principal));
            let fair = pool / nodes;
            let recent = spent.get(principal).map_or(0, |(ops, _)| *ops);
            let want = fair.min(recent.saturating_mul(4).max(fair / 8).max(IO_OPS_FLOOR));
            if want > 0 {
                io_ops.push((*principal, want));
            }
        }
        io_ops.sort_unstable();
        let metered = !self.by_principal.lock().expect("meters lock").is_empty();
        let data_bytes = match state.limit_named_at(LimitName::DataCreationBytes, now_ms) {
            _ if !metered => 0,
            Some(limit) => match limit.spec.hard {
                // The limit's reserved bytes are the nodes' leases.
                Some(hard) => {
                    let fair = hard.saturating_sub(limit.usage) / nodes;
                    let recent: u64 = spent.values().map(|(_, bytes)| *bytes).sum();
                    fair.min(recent.saturating_mul(4).max(fair / 8).max(DATA_BYTES_FLOOR))
                }
                None => 0,
            },
            None => 0,
        };
        let holds = self
            .leasing
            .as_ref()
            .is_some_and(|leasing| leasing.holds.load(Ordering::Relaxed));
        LeaseRound {
            idle: usage.is_empty() && io_ops.is_empty() && data_bytes == 0 && !holds,
            request: EdgeLeaseRequest {
                node: node.to_string(),
                usage,
                io_ops,
                data_bytes,
                ttl_ms,
            },
            until_ms: now_ms.saturating_add(ttl_ms.saturating_sub(period_ms)),
        }
    }

    /// The kernel granted a lease: each allowance is what was granted less what was
    /// spent since the round was asked for (that came out of the previous lease,
    /// which the kernel has just released).
    pub fn apply_lease(&self, granted: &[EdgeGrant], data_bytes: u64, until_ms: u64) {
        let Some(leasing) = &self.leasing else {
            return;
        };
        let now_ms = colony_pipeline::sequencer::now_ms();
        let granted: HashMap<PrincipalId, u64> =
            granted.iter().map(|g| (g.principal, g.io_ops)).collect();
        let state = self.state.read().expect("state lock");
        for (principal, meter) in self.by_principal.lock().expect("meters lock").iter() {
            refresh_one(&state, *principal, meter, now_ms, false);
            let mut io_ops = meter.io_ops.lock().expect("meter lock");
            if io_ops.left != u64::MAX {
                io_ops.left = granted
                    .get(principal)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(io_ops.unflushed);
            }
        }
        let unlimited = state
            .limit_named(LimitName::DataCreationBytes)
            .is_none_or(|limit| limit.spec.hard.is_none());
        // (`data_unlimited` would take the state lock again.)
        let mut data = self.data.lock().expect("data meter lock");
        data.left = if unlimited {
            u64::MAX
        } else {
            data_bytes.saturating_sub(data.unflushed)
        };
        drop(data);
        drop(state);
        leasing.until_ms.store(until_ms, Ordering::Relaxed);
        leasing
            .holds
            .store(!granted.is_empty() || data_bytes > 0, Ordering::Relaxed);
        leasing.rounds.send_modify(|rounds| *rounds += 1);
    }

    /// The meter of `principal`, with an allowance: in a cluster, a new principal's
    /// waits (at most `within`) for the lease round it asks for, so that its first
    /// publish is not refused for want of a lease.
    pub async fn meter_with_lease(
        &self,
        principal: PrincipalId,
        within: std::time::Duration,
    ) -> std::sync::Arc<crate::meter::Meter> {
        let meter = self.meter(principal);
        let Some(leasing) = &self.leasing else {
            return meter;
        };
        let mut rounds = leasing.rounds.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        // Until one has granted it (one already under way may not have asked for it).
        loop {
            // An unlimited allowance needs no lease (and no round may come at all:
            // an idle node logs none); a leased one needs a lease that holds.
            let lapsed = leasing.lapsed();
            let io_left = meter.io_ops.lock().expect("meter lock").left;
            let io_ops = io_left == u64::MAX || (io_left > 0 && !lapsed);
            let data_left = self.data.lock().expect("data meter lock").left;
            let data = self.data_unlimited() || (data_left > 0 && !lapsed);
            if io_ops && data {
                break;
            }
            leasing.wanted.notify_one();
            let seen = *rounds.borrow_and_update();
            let next = rounds.wait_for(|round| *round > seen);
            if tokio::time::timeout_at(deadline, next).await.is_err() {
                break;
            }
        }
        meter
    }

    /// Whether `data_creation_bytes` has no hard value (nothing to lease).
    fn data_unlimited(&self) -> bool {
        self.state
            .read()
            .expect("state lock")
            .limit_named(LimitName::DataCreationBytes)
            .is_none_or(|limit| limit.spec.hard.is_none())
    }

    /// Waits until a round is wanted (a new meter without allowance).
    pub async fn round_wanted(&self) {
        match &self.leasing {
            Some(leasing) => leasing.wanted.notified().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use colony_kernel::{CommandBody, Effect, Genesis, PrincipalId, Reason, State};

    use crate::meter::Spent;
    use crate::test_kernel::{kernel, logged};

    use super::*;

    /// A kernel after `genesis`, and the meters of one node leasing from it.
    fn leasing(genesis: Genesis) -> (Arc<RwLock<State>>, Meters) {
        let state = kernel(genesis);
        let meters = Meters::leased(Arc::clone(&state));
        (state, meters)
    }

    /// One lease round of node-1 alone, logged and applied: the io_ops granted, the
    /// data bytes granted, and the node's deadline.
    fn round(state: &Arc<RwLock<State>>, meters: &Meters) -> (Vec<EdgeGrant>, u64, u64) {
        let round = meters.lease_request("node-1", 1_000, 1);
        let Effect::EdgeLeased {
            granted,
            data_bytes_granted,
            ..
        } = logged(state, CommandBody::LeaseEdge(Box::new(round.request)))
        else {
            panic!("the lease is granted");
        };
        meters.apply_lease(&granted, data_bytes_granted, round.until_ms);
        (granted, data_bytes_granted, round.until_ms)
    }

    /// Two nodes lease from one kernel: neither spends before its lease, each
    /// spends exactly what it was granted, and together no more than the quota.
    #[test]
    fn two_nodes_spend_their_leases_and_never_more_than_the_quota() {
        let state = kernel(Genesis::for_tests([1; 32]));
        let quota = 10_000;
        let nodes: Vec<Meters> = (0..2).map(|_| Meters::leased(Arc::clone(&state))).collect();
        let meters: Vec<_> = nodes.iter().map(|m| m.meter(PrincipalId::ADMIN)).collect();
        assert!(
            nodes[0].take(&meters[0], "1.1", 1).is_err(),
            "nothing before the first lease"
        );
        let mut spent = 0;
        for _round in 0..6 {
            for (node, (meters, meter)) in nodes.iter().zip(&meters).enumerate() {
                let round = meters.lease_request(&format!("node-{node}"), 1_000, 2);
                let Effect::EdgeLeased {
                    granted,
                    data_bytes_granted,
                    ..
                } = logged(&state, CommandBody::LeaseEdge(Box::new(round.request)))
                else {
                    panic!("the lease is granted");
                };
                meters.apply_lease(&granted, data_bytes_granted, round.until_ms);
                let grant = granted.first().map_or(0, |g| g.io_ops);
                for _ in 0..grant {
                    meters.take(meter, "1.1", 1).unwrap();
                }
                spent += grant;
                assert!(
                    meters.take(meter, "1.1", 1).is_err(),
                    "no more than granted"
                );
            }
        }
        // The last spending is charged by the next round.
        for (node, meters) in nodes.iter().enumerate() {
            let mut round = meters.lease_request(&format!("node-{node}"), 1_000, 2);
            round.request.io_ops.clear();
            logged(&state, CommandBody::LeaseEdge(Box::new(round.request)));
        }
        let state = state.read().unwrap();
        let balance = state
            .balances_at(PrincipalId::ADMIN, state.now_ms)
            .into_iter()
            .find(|(resource, _)| *resource == Resource::IoOps)
            .unwrap()
            .1;
        assert!(spent > quota / 2, "the leases grew with use: {spent}");
        assert!(spent <= quota, "{spent} spent of {quota}");
        assert_eq!(balance.used, spent);
        assert_eq!(balance.shortfall, 0);
        state.check_invariants().unwrap();
    }

    /// On a node where nothing needs a lease (the principal's io_ops and the data
    /// limit unlimited) no round is ever logged, and publishes go through.
    #[test]
    fn an_unlimited_allowance_needs_no_lease() {
        let mut genesis = Genesis::for_tests([1; 32]);
        for quotas in genesis.quotas.defaults.values_mut() {
            quotas.insert(Resource::IoOps, None);
        }
        for limit in genesis.limits.iter_mut() {
            if limit.name == "data_creation_bytes" {
                limit.hard = None;
                limit.soft = None;
            }
        }
        let (_state, meters) = leasing(genesis);
        let meter = meters.meter(PrincipalId::ADMIN);
        for _ in 0..1_000 {
            meters.take(&meter, "1.1", 128).unwrap();
        }
        assert!(meters
            .lease_request("node-1", 1_000, 3)
            .request
            .io_ops
            .is_empty());
    }

    /// A node that could not renew its lease stops spending at its own deadline.
    #[test]
    fn a_lapsed_lease_spends_nothing() {
        let (state, meters) = leasing(Genesis::for_tests([1; 32]));
        let meter = meters.meter(PrincipalId::ADMIN);
        let (granted, _, _) = round(&state, &meters);
        meters.take(&meter, "1.1", 1).unwrap();
        let now = colony_pipeline::sequencer::now_ms();
        meters.apply_lease(&granted, 0, now.saturating_sub(1));
        assert!(meters.take(&meter, "1.1", 1).is_err());
    }

    /// A node's spent lease is told apart from a spent quota: the first is refused
    /// until the node's next round (the cluster has room), the second until the
    /// quota's window refills.
    #[test]
    fn a_spent_lease_is_told_apart_from_a_spent_quota() {
        let mut genesis = Genesis::for_tests([1; 32]);
        for limit in genesis.limits.iter_mut() {
            if limit.name == "data_creation_bytes" {
                limit.hard = Some(16 << 20);
            }
        }
        let (state, meters) = leasing(genesis);
        let meter = meters.meter(PrincipalId::ADMIN);
        let lease_spent = |what| Spent::Lease {
            what,
            retry_after_ms: 1_000,
        };
        let mut spent = 0;
        let mut rounds = 0;
        let refusal = loop {
            let (_, data_bytes_granted, _) = round(&state, &meters);
            if rounds == 0 {
                // More bytes than the lease holds, fewer than the limit has left.
                assert_eq!(
                    meters.take(&meter, "1.1", data_bytes_granted + 1),
                    Err(lease_spent("data_creation_bytes"))
                );
            }
            rounds += 1;
            let refusal = loop {
                match meters.take(&meter, "1.1", 1) {
                    Ok(()) => spent += 1,
                    Err(refusal) => break refusal,
                }
            };
            if refusal != lease_spent("io_ops") {
                break refusal;
            }
            assert!(rounds < 100, "the quota was never spent: {spent}");
        };
        assert!(
            matches!(
                refusal,
                Spent::Denied(Reason::InsufficientResource {
                    resource: Resource::IoOps,
                    available: 0,
                    ..
                })
            ),
            "{refusal:?}"
        );
        assert!(rounds > 1, "the lease grew over rounds: {rounds}");
        assert_eq!(spent, 10_000, "the whole quota, and no more");
    }

    /// A round whose command certainly never reached the log (the node had lost
    /// NATS) is put back: the next round charges it with what was spent meanwhile.
    #[test]
    fn a_round_that_was_not_decided_is_charged_by_the_next() {
        let (state, meters) = leasing(Genesis::for_tests([1; 32]));
        let meter = meters.meter(PrincipalId::ADMIN);
        round(&state, &meters);
        for _ in 0..10 {
            meters.take(&meter, "1.1", 1).unwrap();
        }
        let lost = meters.lease_request("node-1", 1_000, 1);
        assert_eq!(lost.request.usage[0].io_ops, 10);
        meters.restore(&lost.request.usage);
        for _ in 0..5 {
            meters.take(&meter, "1.1", 1).unwrap();
        }
        let next = meters.lease_request("node-1", 1_000, 1);
        assert_eq!(next.request.usage[0].io_ops, 15, "both rounds' spending");
        logged(&state, CommandBody::LeaseEdge(Box::new(next.request)));
        let state = state.read().unwrap();
        let used = state
            .balances_at(PrincipalId::ADMIN, state.now_ms)
            .into_iter()
            .find(|(resource, _)| *resource == Resource::IoOps)
            .unwrap()
            .1
            .used;
        assert_eq!(used, 15);
        state.check_invariants().unwrap();
    }
}
