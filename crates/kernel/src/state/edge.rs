//! What the bus let through at the edge, charged; and in a cluster, the leases of
//! allowance each node spends from (see [`crate::edge`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Effects;
use super::{invalid, State};
use crate::edge::{
    EdgeGrant, EdgeLeaseRequest, LeasedIoOps, NodeLease, EDGE_LEASE_PRINCIPALS_MAX,
    EDGE_LEASE_TTL_MAX_MS,
};
use crate::event::{Decision, Effect, Event, Reason};
use crate::ledger::Resource;
use crate::limits::LimitName;
use crate::streams::EdgeUsage;
use crate::NAME_BYTES_MAX;

/// The part of the state that holds what each node of a cluster holds of the edge
/// allowances, by node name, and when each lease ends unless renewed. Its index is
/// its own. Its fields are in the order the state held them before it had parts:
/// a snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Leases {
    by_node: BTreeMap<String, NodeLease>,
    /// `(at_ms, node)` of each lease.
    ends: BTreeSet<(u64, String)>,
}

impl Leases {
    pub(super) fn get(&self, node: &str) -> Option<&NodeLease> {
        self.by_node.get(node)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &NodeLease> {
        self.by_node.values()
    }

    /// `node`'s lease, in place of any it held (which the caller ended first).
    fn file(&mut self, node: String, lease: NodeLease) {
        self.ends.insert((lease.expires_at_ms, node.clone()));
        self.by_node.insert(node, lease);
    }

    fn remove(&mut self, node: &str) -> Option<NodeLease> {
        let lease = self.by_node.remove(node)?;
        self.ends.remove(&(lease.expires_at_ms, node.to_string()));
        Some(lease)
    }

    /// The first lease whose time ran out by `now_ms`: its end and node.
    #[inline]
    fn due(&self, now_ms: u64) -> Option<(u64, String)> {
        self.ends
            .first()
            .filter(|(at_ms, _)| *at_ms <= now_ms)
            .cloned()
    }

    #[inline]
    fn next_due_ms(&self) -> Option<u64> {
        self.ends.first().map(|(at_ms, _)| *at_ms)
    }

    /// Its invariants: each lease has its one end, and each end its lease.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.ends.len() != self.by_node.len()
            || self
                .by_node
                .iter()
                .any(|(node, lease)| !self.ends.contains(&(lease.expires_at_ms, node.clone())))
        {
            return Err("an edge lease without its expiry entry, or the reverse".into());
        }
        Ok(())
    }
}

/// Most principals one edge report may name.
pub const EDGE_USAGE_ENTRIES_MAX: usize = 100_000;

/// Totals of one charge: principals, io_ops, bytes, and io_ops beyond a quota.
struct Charged {
    principals: usize,
    io_ops: u64,
    data_bytes: u64,
    shortfall: u64,
}

impl State {
    /// Charges what the edge let through. The edge admitted it against the exact
    /// balances, so it is charged even past a quota (a race with a command in
    /// between); what goes beyond is recorded as shortfall.
    pub(super) fn charge_edge(&mut self, fx: &mut Effects, usage: &[EdgeUsage]) -> Event {
        const ACTION: &str = "edge.charge";
        if usage.len() > EDGE_USAGE_ENTRIES_MAX {
            return Event::denied(
                ACTION,
                "edge",
                invalid(format!(
                    "an edge report names at most {EDGE_USAGE_ENTRIES_MAX} principals"
                )),
            );
        }
        let charged = self.charge_usage(fx, usage);
        Event::allowed(
            ACTION,
            "edge",
            Effect::EdgeCharged {
                principals: charged.principals,
                io_ops: charged.io_ops,
                data_bytes: charged.data_bytes,
                shortfall: charged.shortfall,
            },
        )
    }

    fn charge_usage(&mut self, fx: &mut Effects, usage: &[EdgeUsage]) -> Charged {
        let window_ms = self.quota_window_ms(Resource::IoOps);
        let now_ms = self.now_ms;
        let mut charged = Charged {
            principals: 0,
            io_ops: 0,
            data_bytes: 0,
            shortfall: 0,
        };
        for entry in usage {
            if !self.principals.contains(entry.principal) {
                continue;
            }
            if let Some(quarantined) = self.observe_signals(
                fx,
                entry.principal,
                &[(crate::anomaly::Signal::Publishes, entry.io_ops)],
            ) {
                fx.consequences.push(quarantined);
            }
            charged.principals += 1;
            charged.io_ops = charged.io_ops.saturating_add(entry.io_ops);
            charged.data_bytes = charged.data_bytes.saturating_add(entry.data_bytes);
            for member in self.chain(entry.principal) {
                if let Some(balance) = self.book.balance_mut(member, Resource::IoOps) {
                    balance.roll_window(now_ms, window_ms);
                    let room = balance.available();
                    if entry.io_ops > room && member == entry.principal {
                        let over = entry.io_ops - room;
                        balance.shortfall = balance.shortfall.saturating_add(over);
                        charged.shortfall = charged.shortfall.saturating_add(over);
                    }
                    balance.used = balance.used.saturating_add(entry.io_ops);
                }
            }
        }
        if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
            limit.roll_window(now_ms);
            limit.usage = limit.usage.saturating_add(charged.data_bytes);
        }
        charged
    }

    /// A node's lease renewed: the previous one released, what it spent charged, and
    /// a new one granted from what is then available (at most what it asked for).
    pub(super) fn lease_edge(&mut self, fx: &mut Effects, request: &EdgeLeaseRequest) -> Event {
        const ACTION: &str = "edge.lease";
        let subject = format!("node:{}", request.node);
        let bad = if request.node.is_empty() || request.node.len() > NAME_BYTES_MAX {
            Some(format!("a node's name is 1 to {NAME_BYTES_MAX} bytes"))
        } else if request.usage.len() > EDGE_USAGE_ENTRIES_MAX {
            Some(format!(
                "an edge report names at most {EDGE_USAGE_ENTRIES_MAX} principals"
            ))
        } else if request.io_ops.len() > EDGE_LEASE_PRINCIPALS_MAX {
            Some(format!(
                "a lease names at most {EDGE_LEASE_PRINCIPALS_MAX} principals"
            ))
        } else if request.ttl_ms == 0 || request.ttl_ms > EDGE_LEASE_TTL_MAX_MS {
            Some(format!("a lease's ttl_ms is 1 to {EDGE_LEASE_TTL_MAX_MS}"))
        } else {
            None
        };
        if let Some(message) = bad {
            return Event::denied(ACTION, subject, invalid(message));
        }
        self.end_edge_lease(&request.node);
        let charged = self.charge_usage(fx, &request.usage);
        let window_ms = self.quota_window_ms(Resource::IoOps);
        let now_ms = self.now_ms;
        let mut lease = NodeLease {
            expires_at_ms: now_ms.saturating_add(request.ttl_ms),
            ..NodeLease::default()
        };
        let mut granted = Vec::new();
        for &(principal, want) in &request.io_ops {
            let standing = self.principals.get(principal).is_some_and(|p| p.standing);
            if !standing
                || want == 0
                || lease.io_ops.contains_key(&principal)
                || self.quarantine_over(principal).is_some()
            {
                continue;
            }
            let chain = self.chain(principal);
            let mut amount = want;
            let mut limited = false;
            for member in &chain {
                if let Some(balance) = self.book.balance_mut(*member, Resource::IoOps) {
                    balance.roll_window(now_ms, window_ms);
                    limited |= balance.quota.is_some();
                    amount = amount.min(balance.available());
                }
            }
            // Unlimited along its whole chain: the node needs no lease to spend.
            if amount == 0 || !limited {
                continue;
            }
            for member in &chain {
                if let Some(balance) = self.book.balance_mut(*member, Resource::IoOps) {
                    balance.reserved = balance.reserved.saturating_add(amount);
                }
            }
            granted.push(EdgeGrant {
                principal,
                io_ops: amount,
            });
            lease
                .io_ops
                .insert(principal, LeasedIoOps { amount, chain });
        }
        if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
            limit.roll_window(now_ms);
            // Without a hard value there is nothing to lease: nodes spend freely.
            let room = match limit.spec.hard {
                Some(hard) => hard.saturating_sub(limit.committed_and_reserved()),
                None => 0,
            };
            lease.data_bytes = request.data_bytes.min(room);
            limit.reserved = limit.reserved.saturating_add(lease.data_bytes);
        }
        let data_bytes_granted = lease.data_bytes;
        let expires_at_ms = lease.expires_at_ms;
        self.edge_leases.file(request.node.clone(), lease);
        Event::allowed(
            ACTION,
            subject,
            Effect::EdgeLeased {
                node: request.node.clone(),
                principals: charged.principals,
                io_ops: charged.io_ops,
                data_bytes: charged.data_bytes,
                shortfall: charged.shortfall,
                granted,
                data_bytes_granted,
                expires_at_ms,
            },
        )
    }

    /// Releases what `node` holds; the amounts released.
    fn end_edge_lease(&mut self, node: &str) -> Option<(u64, u64)> {
        let lease = self.edge_leases.remove(node)?;
        let mut io_ops = 0u64;
        for leased in lease.io_ops.values() {
            io_ops = io_ops.saturating_add(leased.amount);
            for member in &leased.chain {
                if let Some(balance) = self.book.balance_mut(*member, Resource::IoOps) {
                    balance.reserved = balance.reserved.saturating_sub(leased.amount);
                }
            }
        }
        if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
            limit.reserved = limit.reserved.saturating_sub(lease.data_bytes);
        }
        Some((io_ops, lease.data_bytes))
    }

    /// Ends the leases nobody renewed in time (their node died or lost the cluster).
    pub(super) fn expire_edge_leases(&mut self, events: &mut Vec<Event>) {
        while let Some((at_ms, node)) = self.edge_leases.due(self.now_ms) {
            let (io_ops, data_bytes) = self.end_edge_lease(&node).unwrap_or((0, 0));
            let mut event = Event::allowed(
                "edge.lease",
                format!("node:{node}"),
                Effect::EdgeLeaseExpired {
                    node,
                    io_ops,
                    data_bytes,
                },
            );
            event.decision = Decision::Expired;
            event.reason = Reason::ReservationExpired {
                expired_at_ms: at_ms,
            };
            events.push(event);
        }
    }

    /// When the first edge lease ends unless renewed.
    pub(super) fn edge_leases_next_due_ms(&self) -> Option<u64> {
        self.edge_leases.next_due_ms()
    }

    /// What `node` holds (in a cluster).
    pub fn edge_lease(&self, node: &str) -> Option<&NodeLease> {
        self.edge_leases.get(node)
    }

    /// `io_ops` of `principal` held in leases by all nodes together.
    pub fn edge_leased_io_ops(&self, principal: crate::PrincipalId) -> u64 {
        self.edge_leases
            .all()
            .filter_map(|lease| lease.io_ops.get(&principal))
            .fold(0u64, |sum, leased| sum.saturating_add(leased.amount))
    }

    /// Bytes of `data_creation_bytes` held in leases by all nodes together.
    pub fn edge_leased_data_bytes(&self) -> u64 {
        self.edge_leases
            .all()
            .fold(0u64, |sum, lease| sum.saturating_add(lease.data_bytes))
    }
}
