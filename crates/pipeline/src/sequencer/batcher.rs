//! The sequencer thread: takes queued requests in batches once the flusher is not
//! syncing, so that a sync's worth of requests is decided as one batch.

use super::*;

/// The thread that takes queued requests in batches.
pub(crate) struct Sequencer {
    pub(crate) config: SequencerConfig,
    pub(crate) core: Arc<Core>,
    pub(crate) state: Arc<RwLock<State>>,
    pub(crate) flusher: Option<std::thread::JoinHandle<()>>,
}

/// How long the sequencer sleeps at most when idle, to notice due ticks.
pub(crate) const IDLE_WAKE_MS: u64 = 1_000;

impl Sequencer {
    pub(crate) fn run(mut self, receiver: Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.config.batch_commands_max);
        let mut shutdown = None;
        loop {
            let wait_ms = if self.core.replicator.get().is_some() {
                // A cluster's log carries the ticks: nothing due is decided here, so
                // waiting for it would only spin.
                IDLE_WAKE_MS
            } else {
                let state = self.state.read().expect("state lock");
                state.next_due_ms().map_or(IDLE_WAKE_MS, |due| {
                    due.saturating_sub(self.config.clock.now_ms())
                        .min(IDLE_WAKE_MS)
                })
            };
            let disconnected = match receiver.recv_timeout(Duration::from_millis(wait_ms)) {
                Ok(request) => {
                    batch.push(request);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            self.core.handoff.wait_until_synced();
            while batch.len() < self.config.batch_commands_max {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let mut decider = self.core.decider.lock().expect("decider lock");
            let mut group = decider.decide(batch.drain(..), &mut shutdown);
            let failed = decider.fatal.is_failed();
            let stopping = shutdown.is_some() || disconnected || failed;
            if !failed {
                // Never a snapshot of a state the kernel may have left half changed.
                decider.maybe_snapshot(&mut group, stopping, &self.config);
            }
            group.last = stopping;
            decider.stopped = stopping;
            self.core.handoff.hand_over(group, &self.config);
            drop(decider);
            if stopping {
                break;
            }
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }
}
