//! Commands that carry money or state, submitted in the background, are never
//! dropped: [`Submitter::submit_until_decided`] sends one again, with backoff, until
//! the kernel has decided it.
//!
//! - Refused before anything was decided (`overloaded`: the queue is full; or a
//!   cluster's log that could not be reached): sent again, always.
//! - Left uncertain (a cluster's log that may hold it): sent again only when
//!   deciding it twice changes nothing ([`CommandBody::is_idempotent`]: a
//!   reservation is settled once, the second settle is refused), so nothing is
//!   charged twice; otherwise said loudly and given up.
//! - The node stopping or failed: said loudly and given up (nothing more is decided
//!   here; a reservation left open expires and is released by the kernel).
//!
//! The gateway's settlements, the artifact runtime's charges, the bus's
//! disconnections, the edge's reports and the supervisor's records all go through
//! it. How many wait and how often they were sent again is on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use colony_kernel::{CommandBody, PrincipalId};

use crate::sequencer::{Outcome, SubmitError, Submitter};

/// The first pause before a command is sent again; it doubles each time.
pub const OUTBOX_RETRY_FIRST_MS: u64 = 2;
/// The longest pause between two sends of one command.
pub const OUTBOX_RETRY_MAX_MS: u64 = 500;

/// When a background command counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// Once durable ([`Submitter::submit`]).
    WhenDurable,
    /// Once decided ([`Submitter::submit_decided`]): the gateway's hot path.
    WhenDecided,
}

/// The outbox's figures, for `/metrics`.
#[derive(Debug, Default)]
pub struct OutboxFigures {
    /// Commands being sent until decided right now.
    pub pending: AtomicU64,
    /// Sends that were refused or uncertain and sent again.
    pub retries: AtomicU64,
    /// Commands given up on (the node stopping or failed, or uncertain and not
    /// idempotent): each said loudly in the log.
    pub abandoned: AtomicU64,
}

impl Submitter {
    /// Submits `body` and sends it again, with backoff, until it is decided (see the
    /// module's rules). `Err` only when the node stops or fails first, or when a
    /// command that is not idempotent was left uncertain.
    pub async fn submit_until_decided(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
        answered: Answered,
    ) -> Result<Outcome, SubmitError> {
        let figures = &self.core.outbox;
        figures.pending.fetch_add(1, Ordering::Relaxed);
        let _pending = Pending(figures);
        let mut pause_ms = OUTBOX_RETRY_FIRST_MS;
        loop {
            let sent = match answered {
                Answered::WhenDurable => {
                    self.submit(actor, justification.clone(), body.clone())
                        .await
                }
                Answered::WhenDecided => {
                    self.submit_decided(actor, justification.clone(), body.clone())
                        .await
                }
            };
            let error = match sent {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            let again = match error.code {
                "node_failed" | "shutting_down" => false,
                _ if error.nothing_decided => true,
                _ => body.is_idempotent(),
            };
            if !again {
                figures.abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    actor = %actor,
                    code = error.code,
                    "a background command was not decided and cannot be sent again: {} ({justification}; {})",
                    body.name(),
                    error.message
                );
                return Err(error);
            }
            figures.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(code = error.code, pause_ms, "{} sent again", body.name());
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(OUTBOX_RETRY_MAX_MS);
        }
    }

    /// [`Submitter::submit_until_decided`] on a task of its own: the caller goes on,
    /// and may wait for the handle (a call made for a task waits for its charge).
    pub fn submit_in_background(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
        answered: Answered,
    ) -> tokio::task::JoinHandle<Result<Outcome, SubmitError>> {
        let submitter = self.clone();
        tokio::spawn(async move {
            submitter
                .submit_until_decided(actor, justification, body, answered)
                .await
        })
    }

    /// The outbox's figures.
    pub fn outbox(&self) -> &OutboxFigures {
        &self.core.outbox
    }
}

/// Counts a command out of `pending` however its send ends (a dropped future too).
struct Pending<'a>(&'a OutboxFigures);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}
