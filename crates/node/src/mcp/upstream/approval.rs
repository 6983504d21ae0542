//! Calls waiting for a human: each waits on its grant's decision, which every node
//! hears of as the kernel decides it (the node's decision fan-out calls
//! [`Approvals::decided`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use colony_kernel::{Effect, Event};
use tokio::sync::oneshot;

/// Calls one node holds open waiting for a decision, at most (a call past it is
/// refused: each holds a request open).
pub const WAITING_CALLS_MAX: usize = 4_096;

/// Who waits for which grant's decision.
#[derive(Default)]
pub struct Approvals {
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    count: AtomicUsize,
}

impl Approvals {
    /// How many calls wait.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether any call waits (the fan-out then passes decisions on).
    pub fn any_waiting(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Waits for `grant`'s decision: resolves when it is approved, denied or ends.
    pub(crate) fn wait(&self, grant: u64) -> Result<Waiter<'_>, String> {
        let (tell, told) = oneshot::channel();
        let mut waiting = self.waiting.lock().expect("approvals lock");
        if waiting.len() >= WAITING_CALLS_MAX {
            return Err(format!(
                "{WAITING_CALLS_MAX} calls already wait for a person's approval on this node"
            ));
        }
        waiting.insert(grant, tell);
        self.count.store(waiting.len(), Ordering::Relaxed);
        Ok(Waiter {
            approvals: self,
            grant,
            told,
        })
    }

    /// The kernel decided: wakes the calls whose grants it decided.
    pub fn decided(&self, events: &[Event]) {
        for event in events {
            let grant = match event.effect {
                Effect::GrantApproved {
                    grant,
                    active: true,
                    ..
                }
                | Effect::GrantDenied { grant }
                | Effect::GrantExpired { grant } => grant,
                _ => continue,
            };
            let mut waiting = self.waiting.lock().expect("approvals lock");
            if let Some(tell) = waiting.remove(&grant) {
                let _ = tell.send(());
            }
            self.count.store(waiting.len(), Ordering::Relaxed);
        }
    }
}

/// One call's wait; it stops waiting when dropped.
pub(crate) struct Waiter<'a> {
    approvals: &'a Approvals,
    grant: u64,
    pub(crate) told: oneshot::Receiver<()>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.approvals.waiting.lock().expect("approvals lock");
        waiting.remove(&self.grant);
        self.approvals.count.store(waiting.len(), Ordering::Relaxed);
    }
}
