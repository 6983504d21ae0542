//! Following the stream: every command, in the stream's order, decided by this
//! node's pipeline, from the node's own last command on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use colony_kernel::{CommandBody, PrincipalId};
use colony_pipeline::{Stamp, Submitter};
use futures_util::StreamExt;

use crate::cluster::Inner;
use crate::follow::STALLED_AFTER;
use crate::wire::Envelope;

/// Applies the stream from `next` on, for as long as the node runs; after a lost
/// connection it starts again after the last command applied.
pub(crate) async fn follow(inner: Arc<Inner>, submitter: Submitter, next: u64) {
    crate::follow::keep_following(&inner, "following the cluster's log", next, |mut next| {
        let (inner, submitter) = (Arc::clone(&inner), submitter.clone());
        async move {
            let ended = follow_once(&inner, &submitter, &mut next).await;
            (next, ended)
        }
    })
    .await;
}

/// One ordered consumer from `next`: `Ok` when the node stops, `Err` when the
/// consumer is lost.
async fn follow_once(inner: &Inner, submitter: &Submitter, next: &mut u64) -> Result<(), String> {
    let stream = inner
        .jetstream
        .get_stream(&inner.config.stream)
        .await
        .map_err(|error| error.to_string())?;
    let mut messages =
        crate::follow::ordered_messages(&stream, Some(inner.config.commands_subject()), *next)
            .await?;
    loop {
        let message = match tokio::time::timeout(STALLED_AFTER, messages.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(_) => {
                if inner.stopping.load(Ordering::Acquire) {
                    return Ok(());
                }
                if inner.stream_last.load(Ordering::Relaxed) >= *next {
                    return Err(format!(
                        "no command for {STALLED_AFTER:?} while the stream holds more"
                    ));
                }
                continue;
            }
        };
        if inner.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let (message, seq) = crate::follow::numbered(message)?;
        if seq < *next {
            continue; // delivered again after a reconnect: applied already
        }
        tracing::debug!(node = %inner.config.node_name, seq, "applying");
        let stamp_and_envelope = match Envelope::decode(&message.payload) {
            Ok(envelope) => (
                Stamp {
                    seq,
                    proposed_ms: envelope.proposed_ms,
                },
                Some(envelope),
            ),
            Err(_) => (
                Stamp {
                    seq,
                    proposed_ms: 0,
                },
                None,
            ),
        };
        apply(inner, submitter, stamp_and_envelope).await?;
        *next = seq + 1;
        inner.applied.send_replace(seq);
        inner.stream_last.fetch_max(seq, Ordering::Relaxed);
    }
    Err("the stream's consumer ended".into())
}

/// Decides one command of the stream and answers its caller when it was proposed
/// here. A message that is not a command (published by something else with access
/// to the subject) is decided as a tick by the system, the same on every node, so
/// that the sequence numbers stay aligned with the stream's.
async fn apply(
    inner: &Inner,
    submitter: &Submitter,
    (stamp, envelope): (Stamp, Option<Envelope>),
) -> Result<(), String> {
    let Some(envelope) = envelope else {
        tracing::warn!(
            seq = stamp.seq,
            "the cluster's log holds a message that is not a command; it is decided as a tick"
        );
        submitter
            .apply_stamped(
                stamp,
                PrincipalId::SYSTEM,
                "a message in the cluster's log that is not a command: skipped".into(),
                CommandBody::Tick,
            )
            .await
            .map_err(|error| error.message)?;
        return Ok(());
    };
    let mine =
        envelope.origin == inner.config.node_name && envelope.incarnation == inner.incarnation;
    let outcome = submitter
        .apply_stamped(stamp, envelope.actor, envelope.justification, envelope.body)
        .await
        .map_err(|error| {
            inner.stopping.store(true, Ordering::Release);
            format!("this node cannot apply the log: {}", error.message)
        })?;
    if mine {
        let waiting = inner
            .pending
            .lock()
            .expect("pending lock")
            .remove(&envelope.request);
        if let Some(reply) = waiting {
            let _ = reply.send(outcome);
        }
    }
    Ok(())
}
