//! Claims that wait for work (`POST /v1/tasks/claim` with `wait_ms`): a long poll.
//!
//! A claim that finds nothing claimable registers here with the capabilities it
//! offers, then waits. When a decision makes tasks claimable (once it is durable:
//! the bus hands the node its offers, [`colony_bus::OfferListener`]), each such task
//! wakes the longest-waiting claim whose capabilities cover it, one claim per task,
//! so a thousand idle workers are not all woken for one task. A woken claim looks
//! again and claims through the kernel as any claim does; one that finds the task
//! taken waits again until its deadline.
//!
//! A waiting claim is cheap (an entry here and an idle HTTP connection), so it is not
//! counted among the requests being served; its principal may hold as many as it
//! may have requests in flight, and a node at most [`WAITING_CLAIMS_MAX`]: past
//! either, a claim answers at once, as without `wait_ms`. When the node stops, every
//! waiting claim answers at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use colony_kernel::{PrincipalId, State};
use tokio::sync::Notify;

/// Claims waiting on one node at most.
pub const WAITING_CLAIMS_MAX: usize = 65_536;

/// The node's waiting claims.
pub(crate) struct ClaimWaiters {
    state: Arc<RwLock<State>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first.
    waiting: VecDeque<Waiter>,
    per_principal: HashMap<PrincipalId, usize>,
    next_id: u64,
    closed: bool,
}

struct Waiter {
    id: u64,
    principal: PrincipalId,
    /// What the claim offers (its own, or its worker session's).
    capabilities: BTreeSet<String>,
    wake: Arc<Notify>,
}

/// One registered claim; it leaves the registry when dropped.
pub(crate) struct Waiting {
    waiters: Arc<ClaimWaiters>,
    id: u64,
    principal: PrincipalId,
    wake: Arc<Notify>,
}

impl Waiting {
    /// Until a task this claim could take became claimable, or the node stops.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut inner = self.waiters.inner.lock().expect("claim waiters lock");
        let before = inner.waiting.len();
        inner.waiting.retain(|waiter| waiter.id != self.id);
        if inner.waiting.len() < before {
            uncount(&mut inner.per_principal, self.principal);
        }
    }
}

fn uncount(counts: &mut HashMap<PrincipalId, usize>, principal: PrincipalId) {
    if let Some(count) = counts.get_mut(&principal) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&principal);
        }
    }
}

impl ClaimWaiters {
    pub(crate) fn new(state: Arc<RwLock<State>>) -> ClaimWaiters {
        ClaimWaiters {
            state,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Registers a claim that will wait, or `None` when it may not (its principal
    /// holds `per_principal_max` waiting claims, the node [`WAITING_CLAIMS_MAX`], or
    /// the node is stopping).
    pub(crate) fn register(
        self: &Arc<Self>,
        principal: PrincipalId,
        capabilities: BTreeSet<String>,
        per_principal_max: usize,
    ) -> Option<Waiting> {
        let mut inner = self.inner.lock().expect("claim waiters lock");
        let held = inner.per_principal.get(&principal).copied().unwrap_or(0);
        if inner.closed || held >= per_principal_max || inner.waiting.len() >= WAITING_CLAIMS_MAX {
            return None;
        }
        *inner.per_principal.entry(principal).or_insert(0) += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        let wake = Arc::new(Notify::new());
        inner.waiting.push_back(Waiter {
            id,
            principal,
            capabilities,
            wake: Arc::clone(&wake),
        });
        Some(Waiting {
            waiters: Arc::clone(self),
            id,
            principal,
            wake,
        })
    }

    /// Claims waiting now.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().expect("claim waiters lock").waiting.len()
    }

    /// The node is stopping: every waiting claim answers now, and none waits again.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock().expect("claim waiters lock");
        inner.closed = true;
        for waiter in inner.waiting.drain(..) {
            waiter.wake.notify_one();
        }
        inner.per_principal.clear();
    }

    /// Wakes, for each task that is claimable, the longest-waiting claim whose
    /// capabilities cover the task's. A woken claim leaves the queue (it registers
    /// again if it finds nothing).
    fn wake_for(&self, tasks: &[colony_kernel::TaskAddress]) {
        let needs: Vec<Vec<String>> = {
            let state = self.state.read().expect("state lock");
            tasks
                .iter()
                .filter_map(|address| state.task(address))
                .filter(|task| task.status == colony_kernel::tasks::TaskStatus::Pending)
                .map(|task| task.capabilities.clone())
                .collect()
        };
        let mut inner = self.inner.lock().expect("claim waiters lock");
        for needed in needs {
            let Some(at) = inner
                .waiting
                .iter()
                .position(|waiter| needed.iter().all(|c| waiter.capabilities.contains(c)))
            else {
                continue;
            };
            let waiter = inner.waiting.remove(at).expect("found");
            uncount(&mut inner.per_principal, waiter.principal);
            waiter.wake.notify_one();
        }
    }
}

impl colony_bus::OfferListener for ClaimWaiters {
    /// Always: a claim registers before it looks at the board, so the offers of a
    /// decision made in between must reach it.
    fn wants_offers(&self) -> bool {
        true
    }

    fn offered(&self, tasks: &[colony_kernel::TaskAddress]) {
        if self
            .inner
            .lock()
            .expect("claim waiters lock")
            .waiting
            .is_empty()
        {
            return;
        }
        self.wake_for(tasks);
    }
}
