//! [`LimitTable`]: the system-wide limits in force, a part of the state with its
//! map its own: each limit by name, with its usage, window and admission queue.
//! What a command may take of a limit (`Limit::gate`) is decided where the
//! command is; proposals and brakes set its values (`governance.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{Limit, LimitName};

/// It encodes as the map the state held before it had parts: a snapshot's
/// encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct LimitTable {
    by_name: BTreeMap<LimitName, Limit>,
}

impl LimitTable {
    #[inline]
    pub(super) fn get(&self, name: &LimitName) -> Option<&Limit> {
        self.by_name.get(name)
    }

    /// Limit `name` to change (its usage, window, queue or values).
    #[inline]
    pub(super) fn edit(&mut self, name: &LimitName) -> Option<&mut Limit> {
        self.by_name.get_mut(name)
    }

    /// Every limit, by name.
    pub(super) fn all(&self) -> impl Iterator<Item = &Limit> {
        self.by_name.values()
    }

    /// Every limit, to change.
    pub(super) fn all_mut(&mut self) -> impl Iterator<Item = &mut Limit> {
        self.by_name.values_mut()
    }

    /// The limits whose admission queue holds something.
    #[inline]
    pub(super) fn with_queue(&self) -> Vec<LimitName> {
        self.by_name
            .iter()
            .filter(|(_, limit)| !limit.queue.is_empty())
            .map(|(name, _)| *name)
            .collect()
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &LimitName> {
        self.by_name.keys()
    }

    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Limit `name` in force (genesis).
    pub(super) fn add(&mut self, name: LimitName, limit: Limit) {
        self.by_name.insert(name, limit);
    }

    /// Its invariants: every admission queue within its bound, soft never above
    /// hard.
    pub(super) fn check(&self) -> Result<(), String> {
        for limit in self.by_name.values() {
            if limit.queue.len() > limit.spec.queue_max as usize {
                return Err(format!(
                    "{}: {} waiting, queue_max {}",
                    limit.spec.name,
                    limit.queue.len(),
                    limit.spec.queue_max
                ));
            }
            if let (Some(soft), Some(hard)) = (limit.spec.soft, limit.spec.hard) {
                if soft > hard {
                    return Err(format!(
                        "{}: soft {soft} above hard {hard}",
                        limit.spec.name
                    ));
                }
            }
        }
        Ok(())
    }
}
