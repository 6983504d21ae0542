//! [`Directory`]: principals' addresses, a part of the state with its fields its
//! own: each address to its principal, the next instance number under each
//! prefix, and the live principals under each top-level category (what
//! `max_category_size` counts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::principal::PrincipalId;

/// Its fields are in the order the state held them before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Directory {
    by_address: BTreeMap<String, PrincipalId>,
    /// The next instance number under each address prefix.
    next_number: BTreeMap<String, u64>,
    /// Live principals under each top-level category.
    category_counts: BTreeMap<String, u64>,
}

impl Directory {
    #[inline]
    pub(super) fn id_of(&self, address: &str) -> Option<PrincipalId> {
        self.by_address.get(address).copied()
    }

    pub(super) fn is_taken(&self, address: &str) -> bool {
        self.by_address.contains_key(address)
    }

    /// `address` is `id`'s.
    pub(super) fn enter(&mut self, address: String, id: PrincipalId) {
        self.by_address.insert(address, id);
    }

    /// The next free address under `prefix` (`{prefix}.{n}`), its number taken.
    pub(super) fn next_free(&mut self, prefix: &str) -> String {
        loop {
            let number = self.next_number.entry(prefix.to_string()).or_insert(1);
            let candidate = format!("{prefix}.{number}");
            *number += 1;
            if !self.by_address.contains_key(&candidate) {
                return candidate;
            }
        }
    }

    /// Live principals under `category`.
    pub(super) fn in_category(&self, category: &str) -> u64 {
        self.category_counts.get(category).copied().unwrap_or(0)
    }

    /// `category` gains (or loses) `delta` live principals: the fullest category's
    /// count afterwards.
    pub(super) fn count(&mut self, category: String, delta: i64) -> u64 {
        let count = self.category_counts.entry(category).or_insert(0);
        *count = count.saturating_add_signed(delta);
        self.category_counts.values().copied().max().unwrap_or(0)
    }
}
