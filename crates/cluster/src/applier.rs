//! Following the stream: every command, in the stream's order, decided by this
//! node's pipeline, from the node's own last command on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use colony_kernel::cluster::Origin;
use colony_kernel::{CommandBody, PrincipalId};
use colony_pipeline::{Stamp, Stamped, Submitter};
use futures_util::{FutureExt, StreamExt};

use crate::cluster::Inner;
use crate::follow::STALLED_AFTER;

/// Most commands of the stream decided as one group.
const APPLY_BATCH_MAX: usize = 1_024;
use crate::wire::{Unverified, Verified};

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
    let mut verified = Verified::default();
    let stream = inner
        .jetstream
        .get_stream(&inner.config.stream)
        .await
        .map_err(|error| error.to_string())?;
    let mut messages =
        crate::follow::ordered_messages(&stream, Some(inner.config.commands_subject()), *next)
            .await?;
    loop {
        let first = match tokio::time::timeout(STALLED_AFTER, messages.next()).await {
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
        // What else has arrived already is decided with it, as one group.
        let mut batch = Vec::new();
        let mut ended = None;
        let mut expected = *next;
        let mut message = Some(first);
        while let Some(delivered) = message.take() {
            match crate::follow::numbered(delivered) {
                Ok((message, seq)) if seq >= expected => {
                    expected = seq + 1;
                    batch.push((seq, message.payload.to_vec()));
                }
                Ok(_) => {} // delivered again after a reconnect: applied already
                Err(error) => {
                    ended = Some(error);
                    break;
                }
            }
            if batch.len() >= APPLY_BATCH_MAX {
                break;
            }
            message = messages.next().now_or_never().flatten();
        }
        if !batch.is_empty() {
            let batch = stamp_all(inner, &mut verified, batch);
            let last = apply(inner, submitter, batch).await?;
            *next = last + 1;
            inner.applied.send_replace(last);
            inner.stream_last.fetch_max(last, Ordering::Relaxed);
        }
        if let Some(error) = ended {
            return Err(error);
        }
    }
    Err("the stream's consumer ended".into())
}

/// Messages of the stream as the pipeline takes them, with the request number of
/// their caller when this very run of this node proposed them. A message that is
/// not a signed command, or whose signature does not verify by the key it names, is
/// decided as a tick by the system, the same on every node, so that the sequence
/// numbers stay aligned with the stream's. The signatures of the others' commands
/// are checked as one batch, each group's once (`wire::Verified`); this node's own
/// come back byte for byte as it signed them.
fn stamp_all(
    inner: &Inner,
    verified: &mut Verified,
    messages: Vec<(u64, Vec<u8>)>,
) -> Vec<(Stamped, Option<u64>)> {
    let decoded: Vec<(u64, Result<Unverified, String>, bool)> = {
        let pending = inner.pending.lock().expect("pending lock");
        messages
            .into_iter()
            .map(|(seq, payload)| {
                let unverified = Unverified::decode(&payload);
                let own = unverified.as_ref().is_ok_and(|message| {
                    let envelope = &message.envelope;
                    envelope.origin == inner.config.node_name
                        && envelope.incarnation == inner.incarnation
                        && pending
                            .get(&envelope.request)
                            .is_some_and(|sent| sent.payload == payload)
                });
                (seq, unverified, own)
            })
            .collect()
    };
    let others: Vec<&Unverified> = decoded
        .iter()
        .filter(|(_, _, own)| !own)
        .filter_map(|(_, message, _)| message.as_ref().ok())
        .collect();
    let (verdicts, checks) = verified.check(&others);
    inner
        .signing
        .checks
        .fetch_add(checks as u64, Ordering::Relaxed);
    inner
        .signing
        .checked
        .fetch_add(others.len() as u64, Ordering::Relaxed);
    let mut verdicts = verdicts.into_iter();
    decoded
        .into_iter()
        .map(|(seq, message, own)| {
            let message = match message {
                Ok(message) => message,
                Err(why) => return skipped(seq, format!("a message that is not a signed command ({why})")),
            };
            let verified = if own {
                Ok(())
            } else {
                verdicts.next().expect("one verdict per message checked")
            };
            let envelope = message.envelope;
            if let Err(why) = verified {
                return skipped(
                    seq,
                    format!(
                        "a command said to be from node `{}` (key {}) whose signature does not verify ({why})",
                        envelope.origin,
                        colony_kernel::cluster::key_hex(&envelope.key)
                    ),
                );
            }
            let mine = envelope.origin == inner.config.node_name
                && envelope.incarnation == inner.incarnation;
            (
                Stamped {
                    stamp: Stamp {
                        seq,
                        proposed_ms: envelope.proposed_ms,
                    },
                    actor: envelope.actor,
                    justification: envelope.justification,
                    body: envelope.body,
                    // The kernel refuses it unless the key is admitted and the
                    // number new.
                    origin: Some(Origin {
                        node: envelope.origin,
                        key: envelope.key,
                        node_seq: envelope.node_seq,
                    }),
                },
                mine.then_some(envelope.request),
            )
        })
        .collect()
}

/// A message skipped: decided as a tick by the system, saying why.
fn skipped(seq: u64, why: String) -> (Stamped, Option<u64>) {
    tracing::warn!(
        seq,
        "the cluster's log holds {why}; it is decided as a tick"
    );
    (
        Stamped {
            stamp: Stamp {
                seq,
                proposed_ms: 0,
            },
            actor: PrincipalId::SYSTEM,
            justification: format!("skipped: the cluster's log holds {why}"),
            body: CommandBody::Tick,
            origin: None,
        },
        None,
    )
}

/// Decides commands of the stream, in order, and answers their callers where they
/// were proposed here. The last number decided.
async fn apply(
    inner: &Inner,
    submitter: &Submitter,
    batch: Vec<(Stamped, Option<u64>)>,
) -> Result<u64, String> {
    let last = batch.last().map_or(0, |(command, _)| command.stamp.seq);
    let (commands, requests): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let outcomes = submitter
        .apply_stamped_batch(commands)
        .await
        .map_err(|error| {
            inner.stopping.store(true, Ordering::Release);
            format!("this node cannot apply the log: {}", error.message)
        })?;
    for (outcome, request) in outcomes.into_iter().zip(requests) {
        let Some(request) = request else { continue };
        let waiting = inner.pending.lock().expect("pending lock").remove(&request);
        if let Some(waiting) = waiting {
            let _ = waiting.reply.send(outcome);
        }
    }
    Ok(last)
}
