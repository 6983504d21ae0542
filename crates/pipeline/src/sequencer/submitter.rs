//! What callers hold: [`Submitter`] queues a command (answered once durable) or
//! decides it in place (answered once decided), and waits for syncs.

use super::*;

/// The sending side, shared by every request handler.
#[derive(Clone)]
pub struct Submitter {
    pub(crate) sender: SyncSender<Request>,
    pub(crate) core: Arc<Core>,
    pub(crate) fatal: Arc<crate::fatal::Fatal>,
}

/// Nothing is decided while this is held (see [`Submitter::hold_decisions_for_tests`]).
/// Test support: compiled for this crate's tests and with the `test-support` feature.
#[cfg(any(test, feature = "test-support"))]
pub struct DecisionsHeld<'a> {
    _decider: std::sync::MutexGuard<'a, super::decider::Decider>,
}

impl Submitter {
    /// For tests: holds the decider, so that nothing is decided until the guard is
    /// dropped; requests queue meanwhile (up to `submit_queue_max`), and callers
    /// wait for their answers. Holding it does not block the async runtime: only the
    /// sequencer thread waits for the decider, everyone else tries it.
    #[cfg(any(test, feature = "test-support"))]
    pub fn hold_decisions_for_tests(&self) -> DecisionsHeld<'_> {
        DecisionsHeld {
            _decider: self.core.decider.lock().expect("decider lock"),
        }
    }

    /// Queues a command and waits until it is durable. A full queue is answered at
    /// once with `overloaded` (503) rather than by waiting.
    pub async fn submit(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, SubmitError> {
        self.send(actor, justification, body, false).await
    }

    /// Like [`Submitter::submit`], but answered as soon as the kernel has decided,
    /// before the group holding the command is synced (it is synced within
    /// `decided_sync_within_ms`). Decided on the calling thread when the decider is
    /// free. For callers that need the decision on a hot path and whose own effects
    /// follow it (the LLM gateway's reservations and settlements): if the node stops
    /// in between, the command is lost with the call it guarded.
    pub async fn submit_decided(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, SubmitError> {
        self.send(actor, justification, body, true).await
    }

    pub(crate) async fn send(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
        early: bool,
    ) -> Result<Outcome, SubmitError> {
        self.not_failed()?;
        if let Some(replicator) = self.core.replicator.get() {
            return replicator
                .propose(Proposal {
                    actor,
                    justification,
                    body,
                })
                .await;
        }
        if self.core.config.replicated {
            return Err(SubmitError::cluster_unavailable(
                "this node has not caught up with the cluster's log yet; nothing was decided",
            ));
        }
        let (reply, answer) = oneshot::channel();
        let mut request = Some(Request::Command(Box::new(CommandRequest {
            actor,
            justification,
            body,
            reply,
            early,
            stamp: None,
            origin: None,
        })));
        if early {
            self.core.decide_now(&mut request);
        }
        match request {
            None => answer.await.map_err(|_| SubmitError::shutting_down()),
            Some(request) => self.queue(request, answer).await,
        }
    }

    /// `node_failed` once the pipeline cannot go on.
    pub(crate) fn not_failed(&self) -> Result<(), SubmitError> {
        match self
            .fatal
            .is_failed()
            .then(|| self.fatal.reason())
            .flatten()
        {
            Some(reason) => Err(SubmitError::node_failed(&reason)),
            None => Ok(()),
        }
    }

    pub(crate) async fn queue(
        &self,
        request: Request,
        answer: oneshot::Receiver<Outcome>,
    ) -> Result<Outcome, SubmitError> {
        match self.sender.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::overloaded()),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::shutting_down()),
        }
        answer.await.map_err(|_| SubmitError::shutting_down())
    }

    /// Waits until every command up to `seq` is durable (and readable in the decision
    /// log), asking the flusher to sync at once rather than at the end of its window.
    /// False when the node stops first.
    pub async fn synced_through(&self, seq: u64) -> bool {
        let mut durable = self.core.durable.clone();
        if *durable.borrow() >= seq {
            return true;
        }
        self.core.handoff.hurry(seq);
        let synced = durable.wait_for(|synced| *synced >= seq).await.is_ok();
        synced
    }

    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        // A blocking send: shutdown waits for room in the queue like anyone else.
        let sender = self.sender.clone();
        let sent =
            tokio::task::spawn_blocking(move || sender.send(Request::Shutdown { reply }).is_ok())
                .await;
        if matches!(sent, Ok(true)) {
            let _ = done.await;
        }
    }
}
