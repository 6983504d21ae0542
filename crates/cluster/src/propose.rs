//! Proposing a command to the cluster's log: enveloped (refused when too large),
//! handed to the signer to go out with the others proposed at the same moment (or
//! published alone when the stream must take it apart), then waited for until this
//! node has applied it, or until the stream says it did not take it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream;
use colony_pipeline::{Outcome, Proposal, Replicator, SubmitError};
use tokio::sync::oneshot;

use crate::cluster::{Cluster, Inner};
use crate::config::ENVELOPE_BYTES_MAX;
use crate::wire::Envelope;

/// A command this run of the node proposed, waiting to come back from the stream:
/// its outcome once applied here, or why the stream did not take its message.
pub(crate) struct Pending {
    pub(crate) reply: oneshot::Sender<Result<Outcome, String>>,
    /// The message that carries it, as this node signed and published it: the same
    /// bytes coming back need no second check of the signature.
    pub(crate) payload: crate::signer::Payload,
}

impl Inner {
    /// A command as this node proposes it, enveloped; refused when it is larger than
    /// the cluster's log takes.
    pub(crate) fn envelope(
        &self,
        request: u64,
        actor: colony_kernel::PrincipalId,
        justification: String,
        body: colony_kernel::CommandBody,
    ) -> Result<Vec<u8>, SubmitError> {
        let envelope = Envelope {
            origin: self.config.node_name.clone(),
            incarnation: self.incarnation,
            request,
            proposed_ms: colony_pipeline::sequencer::now_ms(),
            actor,
            justification,
            body,
            key: self.public_key,
            node_seq: self.next_node_seq.fetch_add(1, Ordering::Relaxed),
        }
        .to_bytes();
        let size = envelope.len() + crate::wire::HEAD_BYTES + crate::wire::PER_ENVELOPE;
        if size > ENVELOPE_BYTES_MAX {
            return Err(SubmitError::refused(
                "command_too_large",
                format!(
                    "the command is {size} bytes signed; a cluster's log takes at most {ENVELOPE_BYTES_MAX}"
                ),
            ));
        }
        Ok(envelope)
    }

    /// A message of one command, signed alone (for what the stream must take apart
    /// from any group: genesis, a tick with its own message id).
    pub(crate) fn sign_alone(&self, envelope: Vec<u8>) -> bytes::Bytes {
        self.signing.signatures.fetch_add(1, Ordering::Relaxed);
        self.signing.signed.fetch_add(1, Ordering::Relaxed);
        crate::wire::sign_group(&self.key, &[envelope]).into()
    }
}

impl Replicator for Cluster {
    fn propose(
        &self,
        proposal: Proposal,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, SubmitError>> + Send + '_>> {
        Box::pin(self.inner.propose(proposal, None))
    }
}

/// Removes a caller's entry when it stops waiting, answered or not.
struct Waiting<'a> {
    inner: &'a Inner,
    request: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.request);
    }
}

impl Inner {
    /// Publishes one command (with the others proposed at the same moment, or alone
    /// when `expected_last` is given) and waits until this node has applied it.
    /// `expected_last` makes the stream take it only after exactly that sequence.
    pub(crate) async fn propose(
        &self,
        proposal: Proposal,
        expected_last: Option<u64>,
    ) -> Result<Outcome, SubmitError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::shutting_down());
        }
        if !self.connected() {
            return Err(SubmitError::cluster_unavailable(
                "this node has lost its connection to the cluster's NATS servers; nothing was decided (reads are served, marked stale; retry once it is back)",
            ));
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let envelope = self.envelope(
            request,
            proposal.actor,
            proposal.justification,
            proposal.body,
        )?;
        let payload = crate::signer::Payload::default();
        let (reply, answer) = oneshot::channel();
        // Waiting before the message is published: it may come back before its
        // acknowledgement does.
        self.pending.lock().expect("pending lock").insert(
            request,
            Pending {
                reply,
                payload: Arc::clone(&payload),
            },
        );
        let _waiting = Waiting {
            inner: self,
            request,
        };
        match expected_last {
            // Alone, taken by the stream only after exactly that sequence.
            Some(last) => {
                let message = self.sign_alone(envelope);
                let _ = payload.set(message.clone());
                let message = jetstream::message::PublishMessage::build()
                    .payload(message)
                    .expected_last_sequence(last);
                let acked = async {
                    self.jetstream
                        .send_publish(self.config.commands_subject(), message)
                        .await?
                        .await
                }
                .await;
                match acked {
                    Ok(ack) => {
                        self.stream_last.fetch_max(ack.sequence, Ordering::Relaxed);
                    }
                    Err(error)
                        if error.kind()
                            == jetstream::context::PublishErrorKind::WrongLastSequence =>
                    {
                        return Err(SubmitError::refused(
                            "wrong_last_sequence",
                            error.to_string(),
                        ));
                    }
                    Err(error) => return Err(not_taken(&error.to_string())),
                }
            }
            // With the others proposed at the same moment: the signer says only when
            // the stream did not take them.
            None => self
                .signer
                .publish(envelope, payload, request)
                .await
                .ok_or_else(SubmitError::shutting_down)?,
        }
        match tokio::time::timeout(self.config.ack_timeout * 6, answer).await {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(error))) => Err(not_taken(&error)),
            Ok(Err(_)) => Err(SubmitError::shutting_down()),
            Err(_) => Err(SubmitError::cluster_uncertain(
                "the cluster's log has the command but this node has not applied it yet (it is behind or has lost NATS); it will be applied",
            )),
        }
    }
}

/// The stream did not acknowledge a command's message.
fn not_taken(error: &str) -> SubmitError {
    SubmitError::cluster_uncertain(format!(
        "the cluster's log did not take the command ({error}); if it timed out, the command may still be applied"
    ))
}
