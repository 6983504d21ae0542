//! What the edge's gates count, held in `Shared` (`app.rs`): each principal's
//! requests being served ([`PrincipalSlots`], the fairness gate's) and the bytes of
//! the large request bodies held ([`BodyBytes`], the body gate's). The gates
//! themselves (`fairness.rs`, `body.rs`) take and give back through these.

use std::collections::HashMap;
use std::sync::Mutex;

use colony_kernel::PrincipalId;

/// Requests of each principal being served now.
#[derive(Default)]
pub(crate) struct PrincipalSlots {
    held: Mutex<HashMap<PrincipalId, usize>>,
}

impl PrincipalSlots {
    /// Takes one of `principal`'s places if it holds fewer than `max`.
    pub(crate) fn try_take(&self, principal: PrincipalId, max: usize) -> bool {
        let mut held = self.held.lock().expect("slots lock");
        let count = held.entry(principal).or_insert(0);
        if *count >= max {
            if *count == 0 {
                held.remove(&principal);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back one of `principal`'s places.
    pub(crate) fn give_back(&self, principal: PrincipalId) {
        let mut held = self.held.lock().expect("slots lock");
        if let Some(count) = held.get_mut(&principal) {
            *count -= 1;
            if *count == 0 {
                held.remove(&principal);
            }
        }
    }

    /// Takes one place back for `principal`, whatever the bound (a request that was
    /// admitted and stepped aside).
    pub(crate) fn take_back(&self, principal: PrincipalId) {
        *self
            .held
            .lock()
            .expect("slots lock")
            .entry(principal)
            .or_insert(0) += 1;
    }
}

/// The bytes of request bodies held now, in all and by principal.
#[derive(Default)]
pub(crate) struct BodyBytes {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: u64,
    by_principal: HashMap<PrincipalId, u64>,
}

/// Which budget more bytes would pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Over {
    /// The node's (`body_bytes_in_flight_max`).
    Node,
    /// The principal's (`body_bytes_in_flight_per_principal_max`).
    Principal,
}

impl BodyBytes {
    /// Bytes of request bodies held now.
    pub(crate) fn total(&self) -> u64 {
        self.held.lock().expect("body bytes lock").total
    }

    /// Counts `more` bytes of `principal`'s, unless the node would then hold more
    /// than `node_max` or the principal more than `principal_max`.
    pub(crate) fn add(
        &self,
        principal: PrincipalId,
        more: u64,
        node_max: u64,
        principal_max: u64,
    ) -> Result<(), Over> {
        let mut held = self.held.lock().expect("body bytes lock");
        let mine = held.by_principal.get(&principal).copied().unwrap_or(0);
        if held.total.saturating_add(more) > node_max {
            return Err(Over::Node);
        }
        if mine.saturating_add(more) > principal_max {
            return Err(Over::Principal);
        }
        held.total += more;
        *held.by_principal.entry(principal).or_insert(0) += more;
        Ok(())
    }

    /// Gives back `bytes` that `add` counted for `principal`.
    pub(crate) fn release(&self, principal: PrincipalId, bytes: u64) {
        let mut held = self.held.lock().expect("body bytes lock");
        held.total -= bytes;
        if let Some(mine) = held.by_principal.get_mut(&principal) {
            *mine -= bytes;
            if *mine == 0 {
                held.by_principal.remove(&principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_bound_and_come_back() {
        let slots = PrincipalSlots::default();
        let p = PrincipalId(7);
        assert!(slots.try_take(p, 2));
        assert!(slots.try_take(p, 2));
        assert!(!slots.try_take(p, 2));
        slots.give_back(p);
        assert!(slots.try_take(p, 2));
        slots.give_back(p);
        slots.give_back(p);
        assert!(slots.held.lock().unwrap().is_empty());
        assert!(!slots.try_take(p, 0));
        assert!(slots.held.lock().unwrap().is_empty());
    }

    #[test]
    fn body_bytes_count_against_both_budgets() {
        let bytes = BodyBytes::default();
        let (a, b) = (PrincipalId(1), PrincipalId(2));
        assert_eq!(bytes.add(a, 60, 100, 70), Ok(()));
        assert_eq!(bytes.add(a, 20, 100, 70), Err(Over::Principal));
        assert_eq!(bytes.add(b, 50, 100, 70), Err(Over::Node));
        assert_eq!(bytes.add(b, 40, 100, 70), Ok(()));
        assert_eq!(bytes.total(), 100);
        bytes.release(a, 60);
        bytes.release(b, 40);
        assert_eq!(bytes.total(), 0);
        assert!(bytes.held.lock().unwrap().by_principal.is_empty());
    }
}
