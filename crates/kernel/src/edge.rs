//! Edge allowances in a cluster: leases of quota a node holds for publishes.
//!
//! On one node the bus spends a principal's `io_ops` (and the system's
//! `data_creation_bytes`) in memory against the kernel's exact balance and charges
//! what it spent in a [`crate::CommandBody::ChargeEdge`]. In a cluster several nodes
//! spend at once, so each node holds a *lease*: an amount the kernel reserved for it
//! out of what is available, exactly like a reservation. A node spends only from its
//! lease; every `edge_flush` it sends one [`EdgeLeaseRequest`]: its previous lease is
//! released, what it spent is charged, and a new lease is granted from what is then
//! available. The kernel's balances therefore always hold every node's spending or
//! reservation, and the cluster together never spends more than one node would have
//! allowed. A lease a node stops renewing (it died, or lost the cluster) ends by
//! itself at `expires_at_ms`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::principal::PrincipalId;
use crate::streams::EdgeUsage;

/// Longest a lease may run before it ends by itself unless renewed.
pub const EDGE_LEASE_TTL_MAX_MS: u64 = 60_000;

/// Most principals one lease request may ask allowances for.
pub const EDGE_LEASE_PRINCIPALS_MAX: usize = 10_000;

/// One node's report and request (system only): what it spent since its last one,
/// and the allowances it asks for until its next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeLeaseRequest {
    /// The node's name in the cluster (one lease per node).
    pub node: String,
    /// Spent since the last request, charged like a `ChargeEdge`.
    pub usage: Vec<EdgeUsage>,
    /// `io_ops` wanted per principal; the kernel grants what is available, at most
    /// this.
    pub io_ops: Vec<(PrincipalId, u64)>,
    /// Bytes of `data_creation_bytes` wanted.
    pub data_bytes: u64,
    /// How long the new lease holds unless renewed (1 to `EDGE_LEASE_TTL_MAX_MS`).
    pub ttl_ms: u64,
}

/// One principal's part of a node's lease: the amount reserved, and the chain it is
/// reserved at (the principal and its ancestors, as they were when granted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedIoOps {
    pub amount: u64,
    pub chain: Vec<PrincipalId>,
}

/// What a node holds until `expires_at_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    pub io_ops: BTreeMap<PrincipalId, LeasedIoOps>,
    /// Reserved on the `data_creation_bytes` limit.
    pub data_bytes: u64,
    pub expires_at_ms: u64,
}

/// One principal's allowance granted to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeGrant {
    pub principal: PrincipalId,
    pub io_ops: u64,
}
