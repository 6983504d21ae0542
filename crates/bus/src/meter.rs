//! Edge gating of bus publishes (DESIGN.md, "Two speeds of gating").
//!
//! Each publish costs its publisher one `io_ops` and counts its data bytes toward
//! the system's `data_creation_bytes` window. Checking the kernel for every message
//! would put the log on the hot path, so the node keeps, per principal, an
//! allowance computed from the kernel's exact balance, spends it in memory, and
//! charges the kernel what was spent in one `ChargeEdge` command every
//! `edge_flush` (then recomputes the allowance). On one node the allowance is the
//! whole balance, so the quota holds exactly: an agent cannot publish past it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use colony_kernel::streams::EdgeUsage;
use colony_kernel::{Gate, LimitName, PrincipalId, Reason, Resource, State};

#[derive(Debug, Default)]
struct Allowance {
    /// What may still be spent before the next refresh (`u64::MAX`: unlimited).
    left: u64,
    /// Spent since the last flush.
    unflushed: u64,
    /// When the kernel's window refills (for the error's `retry_after`).
    refill_at_ms: Option<u64>,
    /// Why nothing may be spent whatever the balance (a quarantine).
    refused: Option<Reason>,
}

/// One principal's io_ops allowance.
#[derive(Debug, Default)]
pub struct Meter {
    io_ops: Mutex<Allowance>,
    data_unflushed: Mutex<u64>,
}

/// Allowances of every principal that published, and the system's data window.
pub struct Meters {
    state: Arc<RwLock<State>>,
    by_principal: Mutex<HashMap<PrincipalId, Arc<Meter>>>,
    /// The system's `data_creation_bytes`: bytes left below hard, and spent since the
    /// last flush.
    data: Mutex<Allowance>,
    /// Among how many nodes the allowances are shared (a cluster's live nodes; 1
    /// alone): each node may spend its share of what the kernel says is left.
    share: std::sync::atomic::AtomicU64,
}

impl Meters {
    pub fn new(state: Arc<RwLock<State>>) -> Meters {
        let meters = Meters {
            state,
            by_principal: Mutex::new(HashMap::new()),
            data: Mutex::new(Allowance::default()),
            share: std::sync::atomic::AtomicU64::new(1),
        };
        meters.refresh(colony_pipeline::sequencer::now_ms());
        meters
    }

    /// The meter of a principal (made at its first publish).
    pub fn meter(&self, principal: PrincipalId) -> Arc<Meter> {
        let mut by_principal = self.by_principal.lock().expect("meters lock");
        Arc::clone(by_principal.entry(principal).or_insert_with(|| {
            let meter = Arc::new(Meter::default());
            let state = self.state.read().expect("state lock");
            refresh_one(
                &state,
                principal,
                &meter,
                colony_pipeline::sequencer::now_ms(),
                self.share.load(std::sync::atomic::Ordering::Relaxed),
            );
            meter
        }))
    }

    /// Spends one io_op of `principal` and `bytes` of the data window, or says why not.
    pub fn take(&self, meter: &Meter, address: &str, bytes: u64) -> Result<(), Reason> {
        let mut io_ops = meter.io_ops.lock().expect("meter lock");
        if let Some(reason) = &io_ops.refused {
            return Err(reason.clone());
        }
        if io_ops.left == 0 {
            return Err(Reason::InsufficientResource {
                resource: Resource::IoOps,
                requested: 1,
                available: 0,
                principal: address.to_string(),
                refill_at_ms: io_ops.refill_at_ms,
            });
        }
        {
            let mut data = self.data.lock().expect("data meter lock");
            if bytes > data.left {
                let state = self.state.read().expect("state lock");
                let limit = state
                    .limit_named_at(
                        LimitName::DataCreationBytes,
                        colony_pipeline::sequencer::now_ms(),
                    )
                    .expect("data_creation_bytes is a built-in limit");
                let mut limit = limit;
                limit.usage = limit.usage.saturating_add(data.unflushed);
                if let Gate::Deny(reason) = limit.gate(bytes) {
                    return Err(reason);
                }
                // The window turned since the last refresh: let it through.
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

    /// In a cluster of `nodes` live nodes, each node's allowance is this share of
    /// what is left (from the next refresh): together they never spend more than
    /// one node alone would have.
    pub fn set_share(&self, nodes: u64) {
        self.share
            .store(nodes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Recomputes every allowance from the kernel's balances (after a charge, and
    /// when windows turn).
    pub fn refresh(&self, now_ms: u64) {
        let state = self.state.read().expect("state lock");
        let share = self.share.load(std::sync::atomic::Ordering::Relaxed);
        for (principal, meter) in self.by_principal.lock().expect("meters lock").iter() {
            refresh_one(&state, *principal, meter, now_ms, share);
        }
        let mut data = self.data.lock().expect("data meter lock");
        data.left = match state.limit_named_at(LimitName::DataCreationBytes, now_ms) {
            Some(limit) => match limit.spec.hard {
                Some(hard) => (hard.saturating_sub(limit.committed_and_reserved()) / share)
                    .saturating_sub(data.unflushed),
                None => u64::MAX,
            },
            None => u64::MAX,
        };
    }
}

fn refresh_one(state: &State, principal: PrincipalId, meter: &Meter, now_ms: u64, share: u64) {
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
        Some(available) => io_ops.left = (available / share).saturating_sub(io_ops.unflushed),
    }
    io_ops.refill_at_ms = state
        .balances_at(principal, now_ms)
        .iter()
        .find(|(resource, _)| *resource == Resource::IoOps)
        .map(|(_, balance)| {
            let window = state.quota_window_ms(Resource::IoOps);
            balance.window_start_ms + window
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_kernel::{Command, CommandBody, Genesis};

    /// In a cluster of four live nodes each node may publish a quarter of what the
    /// kernel says is left.
    #[test]
    fn a_share_divides_what_is_left() {
        let now = colony_pipeline::sequencer::now_ms();
        let mut state = State::new();
        state.apply(&Command::new(
            1,
            now,
            PrincipalId::SYSTEM,
            "genesis",
            CommandBody::Genesis(Box::new(Genesis::for_tests([1; 32]))),
        ));
        let meters = Meters::new(Arc::new(RwLock::new(state)));
        let meter = meters.meter(PrincipalId::ADMIN);
        let alone = meter.io_ops.lock().unwrap().left;
        assert_eq!(alone, 10_000);
        meters.set_share(4);
        meters.refresh(now);
        assert_eq!(meter.io_ops.lock().unwrap().left, 2_500);
        for _ in 0..2_500 {
            meters.take(&meter, "1.1", 1).unwrap();
        }
        assert!(meters.take(&meter, "1.1", 1).is_err(), "a quarter, no more");
        meters.set_share(0);
        meters.refresh(now);
        assert_eq!(
            meter.io_ops.lock().unwrap().left,
            7_500,
            "at least one node"
        );
    }
}
