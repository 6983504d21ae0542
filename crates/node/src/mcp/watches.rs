//! Who watches which task (`subscriptions/listen`, `listen.rs`): the watches live
//! here, filled from the node's decision fan-out. Changes coalesce (a task decided
//! ten times before the listener wakes is announced once), so a slow client costs at
//! most one pending URI per watched task. Bounded: streams per principal and per
//! node, URIs per stream.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use colony_kernel::{Event, PrincipalId};
use tokio::sync::Notify;

/// Open `subscriptions/listen` streams one principal may hold on a node.
pub const LISTENS_PER_PRINCIPAL_MAX: usize = 16;
/// Open `subscriptions/listen` streams on a node.
pub const LISTENS_MAX: usize = 4_096;
/// Task URIs one stream may watch (the rest of a longer list is not accepted).
pub const URIS_PER_LISTEN_MAX: usize = 256;

/// Who watches which task.
#[derive(Default)]
pub struct TaskWatches {
    inner: Mutex<Watching>,
    /// How many streams are open: the fan-out skips all of this when none is.
    open: AtomicUsize,
    closed: AtomicBool,
}

#[derive(Default)]
struct Watching {
    by_address: HashMap<String, Vec<Arc<Watch>>>,
    per_principal: HashMap<PrincipalId, usize>,
    next_id: u64,
}

/// One open stream's pending announcements.
pub(crate) struct Watch {
    id: u64,
    changed: Mutex<BTreeSet<String>>,
    pub(crate) wake: Notify,
}

impl Watch {
    /// The tasks that changed since the last call, oldest address first.
    pub(crate) fn take_changed(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.changed.lock().expect("watch lock"))
    }
}

impl TaskWatches {
    /// Whether any stream is open.
    pub fn any(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    /// How many streams are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Open streams by principal.
    pub(crate) fn by_principal(&self) -> Vec<(PrincipalId, usize)> {
        let inner = self.inner.lock().expect("watches lock");
        inner
            .per_principal
            .iter()
            .map(|(principal, count)| (*principal, *count))
            .collect()
    }

    /// Whether the node is stopping (every stream ends).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Opens a stream for `principal` watching `addresses`; `Err` says which bound
    /// it would pass.
    pub(crate) fn watch(
        self: &Arc<Self>,
        principal: PrincipalId,
        addresses: &[String],
    ) -> Result<WatchGuard, String> {
        let mut inner = self.inner.lock().expect("watches lock");
        let open = self.open.load(Ordering::Relaxed);
        if open >= LISTENS_MAX {
            return Err(format!(
                "this node holds {LISTENS_MAX} subscriptions already; retry later"
            ));
        }
        let mine = inner.per_principal.get(&principal).copied().unwrap_or(0);
        if mine >= LISTENS_PER_PRINCIPAL_MAX {
            return Err(format!(
                "you hold {LISTENS_PER_PRINCIPAL_MAX} open subscriptions on this node, the most one principal may; close one first"
            ));
        }
        inner.next_id += 1;
        let watch = Arc::new(Watch {
            id: inner.next_id,
            changed: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
        });
        for address in addresses {
            inner
                .by_address
                .entry(address.clone())
                .or_default()
                .push(Arc::clone(&watch));
        }
        *inner.per_principal.entry(principal).or_default() += 1;
        self.open.store(open + 1, Ordering::Relaxed);
        Ok(WatchGuard {
            watches: Arc::clone(self),
            watch,
            principal,
            addresses: addresses.to_vec(),
        })
    }

    /// The kernel decided: every stream watching a task these decisions touched,
    /// or a task above it, is woken.
    pub fn decided(&self, events: &[Event]) {
        let inner = self.inner.lock().expect("watches lock");
        for event in events {
            if !event.action.starts_with("task.") || !event.decision.is_allowed() {
                continue;
            }
            // The task and each task above it (`q.12.3` is under `q.12`).
            let mut address = event.subject.as_str();
            loop {
                if let Some(watchers) = inner.by_address.get(address) {
                    for watch in watchers {
                        let fresh = watch
                            .changed
                            .lock()
                            .expect("watch lock")
                            .insert(address.to_string());
                        if fresh {
                            watch.wake.notify_one();
                        }
                    }
                }
                match address.rsplit_once('.') {
                    Some((parent, _)) if parent.contains('.') => address = parent,
                    _ => break,
                }
            }
        }
    }

    /// The node stops: every stream ends, gracefully.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let inner = self.inner.lock().expect("watches lock");
        for watchers in inner.by_address.values() {
            for watch in watchers {
                watch.wake.notify_one();
            }
        }
    }
}

/// An open stream's place in [`TaskWatches`]; it leaves when dropped.
pub(crate) struct WatchGuard {
    watches: Arc<TaskWatches>,
    pub(crate) watch: Arc<Watch>,
    principal: PrincipalId,
    addresses: Vec<String>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut inner = self.watches.inner.lock().expect("watches lock");
        for address in &self.addresses {
            if let Some(watchers) = inner.by_address.get_mut(address) {
                watchers.retain(|watch| watch.id != self.watch.id);
                if watchers.is_empty() {
                    inner.by_address.remove(address);
                }
            }
        }
        if let Some(count) = inner.per_principal.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                inner.per_principal.remove(&self.principal);
            }
        }
        self.watches.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_kernel::{Effect, Event};

    fn touched(subject: &str) -> Event {
        Event::allowed("task.checkpoint", subject, Effect::None)
    }

    #[test]
    fn a_change_wakes_the_task_and_those_above_it_once() {
        let watches = Arc::new(TaskWatches::default());
        let guard = watches
            .watch(
                PrincipalId(9),
                &["main.1".into(), "main.1.2".into(), "main.3".into()],
            )
            .unwrap();
        assert!(watches.any());
        watches.decided(&[
            touched("main.1.2.1"),
            touched("main.1.2.1"),
            touched("main.4"),
        ]);
        let changed: Vec<String> = guard.watch.take_changed().into_iter().collect();
        assert_eq!(changed, ["main.1", "main.1.2"]);
        assert!(guard.watch.take_changed().is_empty());
        // A refusal changes nothing.
        let refused = Event::denied("task.claim", "main.3", colony_kernel::Reason::Ok);
        watches.decided(&[refused]);
        assert!(guard.watch.take_changed().is_empty());
        drop(guard);
        assert!(!watches.any());
        assert!(watches.inner.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn streams_are_bounded_per_principal() {
        let watches = Arc::new(TaskWatches::default());
        let held: Vec<_> = (0..LISTENS_PER_PRINCIPAL_MAX)
            .map(|_| watches.watch(PrincipalId(9), &["main.1".into()]).unwrap())
            .collect();
        let refused = watches
            .watch(PrincipalId(9), &["main.1".into()])
            .err()
            .unwrap();
        assert!(refused.contains("close one first"), "{refused}");
        assert!(watches.watch(PrincipalId(10), &["main.1".into()]).is_ok());
        drop(held);
        assert!(watches.watch(PrincipalId(9), &["main.1".into()]).is_ok());
    }
}
