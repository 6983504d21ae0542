//! The node's open bus connections: a handle on each (to close them) and how many
//! connections and subscriptions each principal holds, so that one principal cannot
//! take every connection the node may hold (`connections_per_principal_max`) nor
//! fill its routing trie (`subscriptions_per_principal_max`). The node-wide count
//! (`connections_max`) is the bus's atomic gauge, raised before it is checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use colony_kernel::PrincipalId;

use crate::Conn;

/// Why a connection was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The node holds `connections_max` connections.
    Node { max: usize },
    /// The principal holds `connections_per_principal_max` connections.
    Principal { max: usize },
}

#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<u64, Weak<Conn>>,
    per_principal: HashMap<PrincipalId, usize>,
    /// Subscriptions (core and stream) of each principal's connections.
    subscriptions: HashMap<PrincipalId, usize>,
}

impl Registry {
    /// Lists `conn` unless its principal holds `per_principal_max` already.
    pub(crate) fn add(&self, conn: &Arc<Conn>, per_principal_max: usize) -> Result<(), Full> {
        let mut inner = self.inner.lock().expect("connections lock");
        if !count_one(&mut inner.per_principal, conn.principal, per_principal_max) {
            return Err(Full::Principal {
                max: per_principal_max,
            });
        }
        inner.by_id.insert(conn.id, Arc::downgrade(conn));
        Ok(())
    }

    /// Forgets `conn`; false when it was not listed (forgotten already).
    pub(crate) fn remove(&self, conn: &Conn) -> bool {
        let mut inner = self.inner.lock().expect("connections lock");
        if inner.by_id.remove(&conn.id).is_none() {
            return false;
        }
        uncount_one(&mut inner.per_principal, conn.principal);
        true
    }

    /// Counts a subscription of `principal`, unless it holds `max` already.
    pub(crate) fn subscribed(&self, principal: PrincipalId, max: usize) -> Result<(), ()> {
        let mut inner = self.inner.lock().expect("connections lock");
        count_one(&mut inner.subscriptions, principal, max)
            .then_some(())
            .ok_or(())
    }

    /// A subscription of `principal` ended.
    pub(crate) fn unsubscribed(&self, principal: PrincipalId) {
        let mut inner = self.inner.lock().expect("connections lock");
        uncount_one(&mut inner.subscriptions, principal);
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<Conn>> {
        let inner = self.inner.lock().expect("connections lock");
        inner.by_id.get(&id).and_then(Weak::upgrade)
    }

    /// The open connections `which` selects.
    pub(crate) fn select(&self, which: impl Fn(&Conn) -> bool) -> Vec<Arc<Conn>> {
        let inner = self.inner.lock().expect("connections lock");
        inner
            .by_id
            .values()
            .filter_map(Weak::upgrade)
            .filter(|conn| which(conn))
            .collect()
    }
}

/// Counts one more for `principal` unless it has `max`; whether it was counted.
fn count_one(counts: &mut HashMap<PrincipalId, usize>, principal: PrincipalId, max: usize) -> bool {
    let held = counts.get(&principal).copied().unwrap_or(0);
    if held >= max {
        return false;
    }
    counts.insert(principal, held + 1);
    true
}

/// Counts one less for `principal`, forgetting it at zero.
fn uncount_one(counts: &mut HashMap<PrincipalId, usize>, principal: PrincipalId) {
    if let Some(held) = counts.get_mut(&principal) {
        *held -= 1;
        if *held == 0 {
            counts.remove(&principal);
        }
    }
}
