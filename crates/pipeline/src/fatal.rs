//! A node that cannot go on stops loudly instead of lingering.
//!
//! A panic on the decide or flush thread means the kernel's state may be half
//! changed, or the log cannot be written: nothing more may be decided or answered.
//! [`Fatal::fail`] records why; from then on every request (`/healthz` included) is
//! answered `503` with the reason, and [`Fatal::failed`] resolves so that the
//! process (`colony up`) exits non-zero for its supervisor to restart it. The
//! command that caused it was never made durable, so the restarted node works.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Fatal {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
    signal: tokio::sync::watch::Sender<bool>,
}

impl Fatal {
    pub fn new() -> Arc<Fatal> {
        Arc::new(Fatal {
            failed: AtomicBool::new(false),
            reason: Mutex::new(None),
            signal: tokio::sync::watch::channel(false).0,
        })
    }

    /// Records the first reason the node cannot go on.
    pub fn fail(&self, reason: String) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!("the node cannot go on: {reason}");
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.signal.send_replace(true);
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves with the reason once the node has failed.
    pub async fn failed(&self) -> String {
        let mut receiver = self.signal.subscribe();
        let _ = receiver.wait_for(|failed| *failed).await;
        self.reason().unwrap_or_default()
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}
