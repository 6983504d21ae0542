//! Edge gating of bus publishes (DESIGN.md, "Two speeds of gating").
//!
//! Each publish costs its publisher one `io_ops` and counts its data bytes toward
//! the system's `data_creation_bytes` window. Checking the kernel for every message
//! would put the log on the hot path, so the node keeps, per principal, an
//! allowance computed from the kernel's exact balance, spends it in memory, and
//! charges the kernel what was spent in one `ChargeEdge` command every
//! `edge_flush` (then recomputes the allowance). On one node the allowance is the
//! whole balance, so the quota holds exactly: an agent cannot publish past it. In a
//! cluster the allowance is instead the node's lease from the kernel (`lease.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use colony_kernel::streams::EdgeUsage;
use colony_kernel::{Gate, LimitName, PrincipalId, Reason, Resource, State};

#[derive(Debug, Default)]
pub(crate) struct Allowance {
    /// What may still be spent before the next refresh (`u64::MAX`: unlimited).
    pub(crate) left: u64,
    /// Spent since the last flush.
    pub(crate) unflushed: u64,
    /// Held by sessions' credits, neither spent nor left (`credit.rs`).
    pub(crate) reserved: u64,
    /// When the kernel's window refills (for the error's `retry_after`).
    pub(crate) refill_at_ms: Option<u64>,
    /// Why nothing may be spent whatever the balance (a quarantine).
    pub(crate) refused: Option<Reason>,
}

/// What the meter locks alone could not let through.
enum Short {
    /// A quarantine.
    Refused(Reason),
    /// No io_ops left (or the lease lapsed).
    IoOps { refill_at_ms: Option<u64> },
    /// More bytes than the data allowance holds; what was spent and not charged yet,
    /// or held by credits, as it stood.
    Data { pending: u64 },
}

/// Why a publish may not spend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spent {
    /// The principal's quota, a system-wide limit or a quarantine says no.
    Denied(Reason),
    /// In a cluster: this node's lease of `what` (`io_ops` or `data_creation_bytes`)
    /// is spent (or lapsed) while the cluster has room; the node's next lease round,
    /// within `retry_after_ms`, brings more.
    Lease {
        what: &'static str,
        retry_after_ms: u64,
    },
}

/// One principal's io_ops allowance.
#[derive(Debug)]
pub struct Meter {
    pub(crate) principal: PrincipalId,
    pub(crate) io_ops: Mutex<Allowance>,
    pub(crate) data_unflushed: Mutex<u64>,
}

/// Allowances of every principal that published, and the system's data window.
pub struct Meters {
    pub(crate) state: Arc<RwLock<State>>,
    pub(crate) by_principal: Mutex<HashMap<PrincipalId, Arc<Meter>>>,
    /// The system's `data_creation_bytes`: bytes left below hard, and spent since the
    /// last flush.
    pub(crate) data: Mutex<Allowance>,
    /// In a cluster, the node's leases (`lease.rs`); `None` alone.
    pub(crate) leasing: Option<crate::lease::Leasing>,
}

impl Meters {
    /// Allowances of one node alone: each is the kernel's whole balance.
    pub fn new(state: Arc<RwLock<State>>) -> Meters {
        let meters = Meters {
            state,
            by_principal: Mutex::new(HashMap::new()),
            data: Mutex::new(Allowance::default()),
            leasing: None,
        };
        meters.refresh(colony_pipeline::sequencer::now_ms());
        meters
    }

    /// Allowances of a node of a cluster: each is what the node's lease holds, and
    /// nothing until the first lease (see [`Meters::lease_request`]).
    pub fn leased(state: Arc<RwLock<State>>) -> Meters {
        Meters {
            state,
            by_principal: Mutex::new(HashMap::new()),
            data: Mutex::new(Allowance::default()),
            leasing: Some(crate::lease::Leasing::default()),
        }
    }

    /// The meter of a principal (made at its first publish). In a cluster a new
    /// meter has no allowance until the node's next lease, which it asks for at once.
    ///
    /// Locks are taken in one order everywhere: the kernel's state, then
    /// `by_principal`, then a meter's `io_ops`, then `data`. (A reader that waits
    /// behind the sequencer's write while holding a meter lock another reader needs
    /// would otherwise stop the node: std's `RwLock` lets no reader in while a
    /// writer waits.)
    pub fn meter(&self, principal: PrincipalId) -> Arc<Meter> {
        if let Some(meter) = self
            .by_principal
            .lock()
            .expect("meters lock")
            .get(&principal)
        {
            return Arc::clone(meter);
        }
        let meter = Arc::new(Meter {
            principal,
            io_ops: Mutex::default(),
            data_unflushed: Mutex::default(),
        });
        let state = self.state.read().expect("state lock");
        let now_ms = colony_pipeline::sequencer::now_ms();
        refresh_one(&state, principal, &meter, now_ms, self.leasing.is_none());
        let mut by_principal = self.by_principal.lock().expect("meters lock");
        // Another caller may have made it meanwhile: there is one meter a principal.
        let meter = Arc::clone(by_principal.entry(principal).or_insert(meter));
        drop(by_principal);
        drop(state);
        if let Some(leasing) = &self.leasing {
            if meter.io_ops.lock().expect("meter lock").left == 0 {
                leasing.wanted.notify_one();
            }
        }
        meter
    }

    /// Spends one io_op of `principal` and `bytes` of the data window, or says why not.
    /// Only the meter locks on the way of a publish let through; the kernel's state
    /// is read, after they are let go, only to explain a refusal (or to see that the
    /// data window has turned since the last refresh).
    pub fn take(&self, meter: &Meter, address: &str, bytes: u64) -> Result<(), Spent> {
        let short = match self.take_locked(meter, bytes, false) {
            Ok(()) => return Ok(()),
            Err(short) => short,
        };
        let now_ms = colony_pipeline::sequencer::now_ms();
        let state = self.state.read().expect("state lock");
        match short {
            Short::Refused(reason) => Err(Spent::Denied(reason)),
            Short::IoOps { refill_at_ms } => {
                if let Some(leasing) = &self.leasing {
                    // io_ops of the principal that no node holds, or that other
                    // nodes' leases hold: a later round of this node may lease them.
                    if leasing.io_ops_elsewhere(&state, meter.principal, now_ms) {
                        return Err(leasing.spent(Resource::IoOps.as_str()));
                    }
                }
                Err(Spent::Denied(Reason::InsufficientResource {
                    resource: Resource::IoOps,
                    requested: 1,
                    available: 0,
                    principal: address.to_string(),
                    refill_at_ms,
                }))
            }
            Short::Data { pending: unflushed } => {
                let mut limit = state
                    .limit_named_at(LimitName::DataCreationBytes, now_ms)
                    .expect("data_creation_bytes is a built-in limit");
                drop(state);
                if let Some(leasing) = &self.leasing {
                    // The limit's figures count every node's lease and charge: when
                    // they leave room, only this node's lease is spent.
                    match limit.gate(bytes) {
                        Gate::Deny(reason) => return Err(Spent::Denied(reason)),
                        _ if limit.spec.hard.is_some() => {
                            return Err(leasing.spent(LimitName::DataCreationBytes.as_str()))
                        }
                        _ => {} // unlimited: no lease
                    }
                } else {
                    limit.usage = limit.usage.saturating_add(unflushed);
                    if let Gate::Deny(reason) = limit.gate(bytes) {
                        return Err(Spent::Denied(reason));
                    }
                }
                // The window turned since the last refresh: let it through.
                self.take_locked(meter, bytes, true)
                    .map_err(|short| match short {
                        Short::Refused(reason) => Spent::Denied(reason),
                        _ => Spent::Denied(Reason::InsufficientResource {
                            resource: Resource::IoOps,
                            requested: 1,
                            available: 0,
                            principal: address.to_string(),
                            refill_at_ms: None,
                        }),
                    })
            }
        }
    }

    /// [`Meters::take`] under the meter locks alone; `data_checked` when the kernel's
    /// limit was seen to have room for `bytes`.
    fn take_locked(&self, meter: &Meter, bytes: u64, data_checked: bool) -> Result<(), Short> {
        let mut io_ops = meter.io_ops.lock().expect("meter lock");
        if let Some(reason) = &io_ops.refused {
            return Err(Short::Refused(reason.clone()));
        }
        let lapsed = self
            .leasing
            .as_ref()
            .is_some_and(|leasing| leasing.lapsed());
        // A lapsed lease spends nothing; an unlimited allowance is no lease.
        if io_ops.left == 0 || (lapsed && io_ops.left != u64::MAX) {
            return Err(Short::IoOps {
                refill_at_ms: io_ops.refill_at_ms,
            });
        }
        {
            let mut data = self.data.lock().expect("data meter lock");
            if lapsed && data.left != u64::MAX {
                data.left = 0;
            }
            if bytes > data.left && !data_checked {
                return Err(Short::Data {
                    pending: data.unflushed + data.reserved,
                });
            }
            data.left = data.left.saturating_sub(bytes);
            data.unflushed += bytes;
        }
        if io_ops.left != u64::MAX {
            io_ops.left -= 1;
        }
        io_ops.unflushed += 1;
        *meter.data_unflushed.lock().expect("meter lock") += bytes;
        Ok(())
    }

    /// Puts back what a flush took when the command charging it was certainly not
    /// decided: the next flush charges it with what is spent meanwhile.
    pub fn restore(&self, usage: &[EdgeUsage]) {
        let mut bytes = 0u64;
        for spent in usage {
            let meter = self.meter(spent.principal);
            let mut io_ops = meter.io_ops.lock().expect("meter lock");
            io_ops.unflushed = io_ops.unflushed.saturating_add(spent.io_ops);
            let mut data = meter.data_unflushed.lock().expect("meter lock");
            *data = data.saturating_add(spent.data_bytes);
            bytes = bytes.saturating_add(spent.data_bytes);
        }
        let mut data = self.data.lock().expect("data meter lock");
        data.unflushed = data.unflushed.saturating_add(bytes);
    }

    /// Takes what was spent since the last flush, to be charged to the kernel.
    pub fn flush(&self) -> Vec<EdgeUsage> {
        let by_principal = self.by_principal.lock().expect("meters lock");
        let mut usage = Vec::new();
        for (principal, meter) in by_principal.iter() {
            let io_ops = std::mem::take(&mut meter.io_ops.lock().expect("meter lock").unflushed);
            let data_bytes = std::mem::take(&mut *meter.data_unflushed.lock().expect("meter lock"));
            if io_ops > 0 || data_bytes > 0 {
                usage.push(EdgeUsage {
                    principal: *principal,
                    io_ops,
                    data_bytes,
                });
            }
        }
        self.data.lock().expect("data meter lock").unflushed = 0;
        usage.sort_by_key(|u| u.principal);
        usage
    }

    /// Recomputes every allowance from the kernel's balances (after a charge, and
    /// when windows turn). In a cluster only the quarantines: the allowances are the
    /// lease's.
    ///
    /// The meters are refreshed `ENTRIES_PER_STATE_READ` at a time, each chunk under
    /// one read of the kernel's state.
    pub fn refresh(&self, now_ms: u64) {
        let alone = self.leasing.is_none();
        let meters: Vec<(PrincipalId, Arc<Meter>)> = self
            .by_principal
            .lock()
            .expect("meters lock")
            .iter()
            .map(|(principal, meter)| (*principal, Arc::clone(meter)))
            .collect();
        for chunk in meters.chunks(colony_pipeline::sequencer::ENTRIES_PER_STATE_READ) {
            let state = self.state.read().expect("state lock");
            for (principal, meter) in chunk {
                refresh_one(&state, *principal, meter, now_ms, alone);
            }
        }
        if !alone {
            return;
        }
        let state = self.state.read().expect("state lock");
        let mut data = self.data.lock().expect("data meter lock");
        data.left = match state.limit_named_at(LimitName::DataCreationBytes, now_ms) {
            Some(limit) => match limit.spec.hard {
                Some(hard) => hard
                    .saturating_sub(limit.committed_and_reserved())
                    .saturating_sub(data.unflushed)
                    .saturating_sub(data.reserved),
                None => u64::MAX,
            },
            None => u64::MAX,
        };
    }
}

/// A principal's quarantine and refill time from the kernel; and, when `allowance`,
/// its allowance as the kernel's whole balance (one node alone). In a cluster a
/// principal unlimited along its chain needs no lease: its allowance is unlimited.
pub(crate) fn refresh_one(
    state: &State,
    principal: PrincipalId,
    meter: &Meter,
    now_ms: u64,
    allowance: bool,
) {
    let mut io_ops = meter.io_ops.lock().expect("meter lock");
    // A quarantined principal may only read: it publishes nothing from the next
    // refresh on (within `edge_flush_ms` of the quarantine).
    io_ops.refused = state
        .quarantine_of(principal)
        .map(|quarantine| Reason::Quarantined {
            since_ms: quarantine.since_ms,
            evidence: Box::new(quarantine.evidence.clone()),
        });
    match state.available_at(principal, Resource::IoOps, now_ms) {
        None => io_ops.left = u64::MAX,
        Some(available) if allowance => {
            io_ops.left = available
                .saturating_sub(io_ops.unflushed)
                .saturating_sub(io_ops.reserved)
        }
        Some(_) if io_ops.left == u64::MAX => io_ops.left = 0,
        Some(_) => {}
    }
    io_ops.refill_at_ms = state
        .balance_at(principal, Resource::IoOps, now_ms)
        .map(|balance| {
            let window = state.quota_window_ms(Resource::IoOps);
            balance.window_start_ms + window
        });
}
