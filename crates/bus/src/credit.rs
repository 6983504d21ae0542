//! Metering in batches: what a WebSocket session spends and routes while it handles
//! one read of its socket (up to a few hundred publishes), settled with the shared
//! meters and counters once, at the batch's end.
//!
//! A publish costs one io_op of its principal and its bytes of the system's data
//! window (`meter.rs`). Taking them from the meters for every message made every
//! publish lock its principal's meter and the node's one data window, which every
//! connection shares, and bump five node-wide counters. A session instead reserves
//! a share of each allowance (a *credit*) and spends it without a lock; the batch's
//! end gives back what it did not spend and adds what it did to what the next
//! edge flush charges the kernel.
//!
//! The quota still holds exactly: a credit is taken out of the allowance, so all
//! the credits and spending together never pass it. Near a limit the share shrinks
//! to one io_op at a time (a credit is at most an eighth of what is left), so that
//! one connection's unspent credit does not refuse another connection of the same
//! principal. In a cluster every publish takes from the node's lease as before
//! (`Meters::take`): a lapsed lease must stop publishing at once.

use crate::meter::{Meter, Meters, Spent};
use crate::{BusMetrics, Routed};

/// The io_ops a credit reserves at most.
const CREDIT_OPS_MAX: u64 = 64;

/// The data bytes a credit reserves at most (more when one message needs more).
const CREDIT_BYTES_MAX: u64 = 64 << 10;

/// A credit is at most this fraction (one in N) of what the allowance has left.
const CREDIT_SHARE: u64 = 8;

/// One session's credit and tallies for the batch under way.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    /// Reserved from the meters and not spent yet.
    ops: u64,
    bytes: u64,
    /// Spent in this batch.
    spent_ops: u64,
    spent_bytes: u64,
    /// For `/metrics`: published in this batch (every path), and what routing did.
    published: u64,
    published_bytes: u64,
    routed: Routed,
}

impl Credit {
    /// Counts one publish routed, for `/metrics` at the batch's end.
    pub(crate) fn count(&mut self, bytes: u64, routed: &Routed) {
        self.published += 1;
        self.published_bytes += bytes;
        self.routed.delivered += routed.delivered;
        self.routed.dropped += routed.dropped;
        self.routed.rejected += routed.rejected;
    }
}

impl Meters {
    /// Spends one io_op and `bytes` for a publish of `meter`'s principal from the
    /// session's credit, reserving more when it runs out; or says why not.
    pub(crate) fn spend(
        &self,
        meter: &Meter,
        credit: &mut Credit,
        address: &str,
        bytes: u64,
    ) -> Result<(), Spent> {
        if self.leasing.is_some() {
            return self.take(meter, address, bytes);
        }
        if (credit.ops == 0 || credit.bytes < bytes) && !self.reserve(meter, credit, bytes) {
            // Near or at a limit: what the credit holds goes back, and the publish
            // is gated alone, which also says why it may not pass.
            self.settle_spending(meter, credit);
            return self.take(meter, address, bytes);
        }
        credit.ops -= 1;
        credit.bytes -= bytes;
        credit.spent_ops += 1;
        credit.spent_bytes += bytes;
        Ok(())
    }

    /// Reserves io_ops and data bytes enough for a publish of `bytes` (a share of
    /// what is left); false when an allowance cannot give that much, or the
    /// principal is quarantined.
    fn reserve(&self, meter: &Meter, credit: &mut Credit, bytes: u64) -> bool {
        let mut io_ops = meter.io_ops.lock().expect("meter lock");
        if io_ops.refused.is_some() || io_ops.left == 0 {
            return false;
        }
        let mut data = self.data.lock().expect("data meter lock");
        if bytes > data.left {
            return false;
        }
        let ops = share(io_ops.left, CREDIT_OPS_MAX, 1);
        let more_bytes = share(data.left, CREDIT_BYTES_MAX, bytes);
        if data.left != u64::MAX {
            data.left -= more_bytes;
        }
        data.reserved += more_bytes;
        drop(data);
        if io_ops.left != u64::MAX {
            io_ops.left -= ops;
        }
        io_ops.reserved += ops;
        credit.ops += ops;
        credit.bytes += more_bytes;
        true
    }

    /// The batch's end: what the credit did not spend goes back to the allowances,
    /// what it spent is added to what the next flush charges, and the tallies go to
    /// `metrics`.
    pub(crate) fn settle(&self, meter: &Meter, credit: &mut Credit, metrics: &BusMetrics) {
        self.settle_spending(meter, credit);
        let tallied = std::mem::take(credit);
        if tallied.published == 0 {
            return;
        }
        metrics.count_published(tallied.published, tallied.published_bytes);
        metrics.count_routed(&tallied.routed);
    }

    /// Gives back the unspent credit and records the spending (the tallies stay).
    fn settle_spending(&self, meter: &Meter, credit: &mut Credit) {
        let taken_ops = credit.ops + credit.spent_ops;
        let taken_bytes = credit.bytes + credit.spent_bytes;
        if taken_ops == 0 && taken_bytes == 0 {
            return;
        }
        let mut io_ops = meter.io_ops.lock().expect("meter lock");
        io_ops.reserved -= taken_ops;
        if io_ops.left != u64::MAX {
            io_ops.left = io_ops.left.saturating_add(credit.ops);
        }
        io_ops.unflushed += credit.spent_ops;
        {
            let mut data = self.data.lock().expect("data meter lock");
            data.reserved -= taken_bytes;
            if data.left != u64::MAX {
                data.left = data.left.saturating_add(credit.bytes);
            }
            data.unflushed += credit.spent_bytes;
        }
        *meter.data_unflushed.lock().expect("meter lock") += credit.spent_bytes;
        drop(io_ops);
        credit.ops = 0;
        credit.bytes = 0;
        credit.spent_ops = 0;
        credit.spent_bytes = 0;
    }
}

/// What a credit takes of an allowance with `left`: up to `most`, at most one
/// `CREDIT_SHARE`th of it, at least `need` (which `left` holds).
fn share(left: u64, most: u64, need: u64) -> u64 {
    let share = if left == u64::MAX {
        most
    } else {
        (left / CREDIT_SHARE).min(most)
    };
    share.max(need)
}

#[cfg(test)]
#[path = "credit_tests.rs"]
mod tests;
