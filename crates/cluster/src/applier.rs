//! Following the stream: every command, in the stream's order, decided by this
//! node's pipeline, from the node's own last command on. A message of the stream
//! carries one or more commands (those a node proposed together); the kernel numbers
//! the commands one after the other, and each command keeps its message's number and
//! its place in it ([`LogPlace`]), so that a node that stops in the middle of a
//! message goes on from the next of its commands.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use colony_kernel::cluster::{LogPlace, Origin};
use colony_kernel::{CommandBody, PrincipalId};
use colony_pipeline::{Stamp, Stamped, Submitter};
use futures_util::{FutureExt, StreamExt};

use crate::cluster::Inner;
use crate::follow::{Ended, STALLED_AFTER};
use crate::verify::Verified;
use crate::wire::Unverified;

/// Most messages of the stream decided as one group, and their bytes at most (past
/// the first message).
const APPLY_BATCH_MAX: usize = 1_024;
const APPLY_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Where following the stream stands: the next message to read, how many of its
/// first commands are applied already, and the kernel's number for the next command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cursor {
    pub(crate) message: u64,
    pub(crate) skip: u16,
    pub(crate) command: u64,
}

/// Applies the stream from `next` on, for as long as the node runs; after a lost
/// connection it starts again after the last command applied.
pub(crate) async fn follow(inner: Arc<Inner>, submitter: Submitter, next: Cursor) {
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
async fn follow_once(inner: &Inner, submitter: &Submitter, next: &mut Cursor) -> Result<(), Ended> {
    let mut verified = Verified::default();
    let stream = inner
        .jetstream
        .get_stream(&inner.config.stream)
        .await
        .map_err(|error| error.to_string())?;
    let mut following = crate::follow::ordered_messages(
        inner,
        &stream,
        Some(inner.config.commands_subject()),
        next.message,
    )
    .await?;
    following
        .server
        .clone_into(&mut inner.follows_from.lock().expect("follows_from lock"));
    loop {
        let first = match following.next(inner).await? {
            Some(Some(message)) => message,
            Some(None) => break,
            None => {
                if inner.stopping.load(Ordering::Acquire) {
                    return Ok(());
                }
                if inner.stream_last.load(Ordering::Relaxed) >= next.message {
                    return Err(format!(
                        "no command for {STALLED_AFTER:?} while the stream holds more"
                    )
                    .into());
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
        let mut expected = next.message;
        let mut message = Some(first);
        let mut bytes = 0;
        while let Some(delivered) = message.take() {
            match crate::follow::numbered(delivered) {
                Ok((message, seq)) if seq == expected => {
                    expected = seq + 1;
                    bytes += message.payload.len();
                    batch.push((seq, message.payload.clone()));
                }
                Ok((_, seq)) if seq < expected => {} // delivered again: applied already
                Ok((_, seq)) => {
                    // A message missing (compacted, or deleted, while this node was
                    // away): its commands cannot be skipped, so the node stops loudly.
                    let reason = format!(
                        "the cluster's log gave message {seq} after message {}: a gap, so this node's state cannot follow it",
                        expected - 1
                    );
                    inner.stopping.store(true, Ordering::Release);
                    submitter.cannot_follow(reason.clone());
                    return Err(reason.into());
                }
                Err(error) => {
                    ended = Some(error);
                    break;
                }
            }
            if batch.len() >= APPLY_BATCH_MAX || bytes >= APPLY_BATCH_BYTES_MAX {
                break;
            }
            message = following.messages.next().now_or_never().flatten();
        }
        if !batch.is_empty() {
            let last_message = batch.last().map_or(0, |(seq, _)| *seq);
            let batch = stamp_all(inner, &mut verified, next, batch);
            if !batch.is_empty() {
                apply(inner, submitter, batch).await?;
            }
            inner.applied.send_replace(next.message - 1);
            inner.stream_last.fetch_max(last_message, Ordering::Relaxed);
        }
        if let Some(error) = ended {
            return Err(error.into());
        }
    }
    Err(Ended::Lost("the stream's consumer ended".into()))
}

/// Messages of the stream as the pipeline takes them, each command with the request
/// number of its caller when this very run of this node proposed it, numbered from
/// `next` on (which moves past them). A message that is not a signed group of
/// commands, or whose signature does not verify by the key its commands name, is
/// decided as one tick by the system, the same on every node. The signatures of the
/// others' messages are checked each once (`verify::Verified`); this node's own come
/// back byte for byte as it signed them. The commands of `next.message` that were applied before
/// (the node stopped in the middle of it) are left out.
fn stamp_all(
    inner: &Inner,
    verified: &mut Verified,
    next: &mut Cursor,
    messages: Vec<(u64, Bytes)>,
) -> Vec<(Stamped, Option<u64>)> {
    let decoded: Vec<(u64, Result<Unverified, String>, bool)> = {
        let pending = inner.pending.lock().expect("pending lock");
        messages
            .into_iter()
            .map(|(seq, payload)| {
                let unverified = Unverified::decode(&payload);
                let own = unverified.as_ref().is_ok_and(|message| {
                    message.envelopes.iter().any(|envelope| {
                        envelope.origin == inner.config.node_name
                            && envelope.incarnation == inner.incarnation
                            && pending.get(&envelope.request).is_some_and(|sent| {
                                sent.payload.get().is_some_and(|sent| *sent == payload)
                            })
                    })
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
    inner.signing.checked.fetch_add(
        others.iter().map(|m| m.envelopes.len() as u64).sum(),
        Ordering::Relaxed,
    );
    let mut verdicts = verdicts.into_iter();
    let mut stamped = Vec::new();
    for (seq, message, own) in decoded {
        let verdict = match &message {
            Ok(_) if own => Ok(()),
            Ok(_) => verdicts.next().expect("one verdict per message checked"),
            Err(why) => Err(format!("a message that is not a signed command ({why})")),
        };
        let envelopes = match (message, verdict) {
            (Ok(message), Ok(())) => Ok(message.envelopes),
            (Ok(message), Err(why)) => {
                let envelope = &message.envelopes[0];
                Err(format!(
                    "a message said to be from node `{}` (key {}) whose signature does not verify ({why})",
                    envelope.origin,
                    colony_kernel::cluster::key_hex(&envelope.key)
                ))
            }
            (Err(_), Err(why)) => Err(why),
            (Err(_), Ok(())) => unreachable!("an undecoded message has no verdict of its own"),
        };
        let me = (inner.config.node_name.as_str(), inner.incarnation);
        stamp_message(next, seq, envelopes, me, &mut stamped);
    }
    stamped
}

/// The commands of the stream's message `seq` (its envelopes, or why it is decided
/// as one tick), numbered from `next` on, which moves past the message; the commands
/// of it applied before (`next.skip`, when `next` is in the middle of it) are left
/// out. A command proposed by this very run of this node (`me`: its name and
/// incarnation) carries its caller's request number.
fn stamp_message(
    next: &mut Cursor,
    seq: u64,
    envelopes: Result<Vec<crate::wire::Envelope>, String>,
    me: (&str, u64),
    stamped: &mut Vec<(Stamped, Option<u64>)>,
) {
    let envelopes = match envelopes {
        Ok(envelopes) => envelopes,
        Err(why) => return stamped.push(skipped(next, seq, why)),
    };
    let skip = if seq == next.message { next.skip } else { 0 };
    let count = u16::try_from(envelopes.len()).expect("a group of at most 64");
    for (index, envelope) in (0..count).zip(envelopes) {
        if index < skip {
            continue;
        }
        let mine = envelope.origin == me.0 && envelope.incarnation == me.1;
        let place = LogPlace {
            message: seq,
            index,
            count,
        };
        stamped.push((
            Stamped {
                stamp: Stamp {
                    seq: next.command,
                    proposed_ms: envelope.proposed_ms,
                    place: Some(place),
                },
                actor: envelope.actor,
                justification: envelope.justification,
                body: envelope.body,
                // The kernel refuses it unless the key is admitted and the number new.
                origin: Some(Origin {
                    node: envelope.origin,
                    key: envelope.key,
                    node_seq: envelope.node_seq,
                }),
            },
            mine.then_some(envelope.request),
        ));
        next.command += 1;
    }
    (next.message, next.skip) = (seq + 1, 0);
}

/// A message skipped: decided as one tick by the system, saying why.
fn skipped(next: &mut Cursor, seq: u64, why: String) -> (Stamped, Option<u64>) {
    tracing::warn!(
        seq,
        "the cluster's log holds {why}; it is decided as a tick"
    );
    let command = next.command;
    next.command += 1;
    (next.message, next.skip) = (seq + 1, 0);
    (
        Stamped {
            stamp: Stamp {
                seq: command,
                proposed_ms: 0,
                place: Some(LogPlace {
                    message: seq,
                    index: 0,
                    count: 1,
                }),
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
/// were proposed here.
async fn apply(
    inner: &Inner,
    submitter: &Submitter,
    batch: Vec<(Stamped, Option<u64>)>,
) -> Result<(), String> {
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
            let _ = waiting.reply.send(Ok(outcome));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Envelope;

    fn envelope(node: &str, incarnation: u64, request: u64) -> Envelope {
        Envelope {
            origin: node.into(),
            incarnation,
            request,
            proposed_ms: 1_000 + request,
            actor: PrincipalId(1),
            justification: format!("command {request}"),
            body: CommandBody::Tick,
            key: [3; 32],
            node_seq: request,
        }
    }

    /// What a command was stamped with: its number, its place, its request.
    fn stamps(stamped: &[(Stamped, Option<u64>)]) -> Vec<(u64, LogPlace, Option<u64>)> {
        stamped
            .iter()
            .map(|(command, request)| (command.stamp.seq, command.stamp.place.unwrap(), *request))
            .collect()
    }

    fn place(message: u64, index: u16, count: u16) -> LogPlace {
        LogPlace {
            message,
            index,
            count,
        }
    }

    #[test]
    fn commands_are_numbered_across_messages_and_a_restart_goes_on_mid_message() {
        // The node stopped after the first two commands of message 5's three.
        let resumed = place(5, 1, 3).next();
        assert_eq!(resumed, (5, 2));
        let mut next = Cursor {
            message: resumed.0,
            skip: resumed.1,
            command: 10,
        };
        let me = ("node-1", 7);
        let mut stamped = Vec::new();
        let five = (1..=3).map(|n| envelope("node-2", 1, n)).collect();
        stamp_message(&mut next, 5, Ok(five), me, &mut stamped);
        // Message 6 is not a command: one tick. Message 7 is this run's, message 8
        // an earlier run's of this node.
        stamp_message(&mut next, 6, Err("junk".into()), me, &mut stamped);
        let seven = vec![envelope("node-1", 7, 40), envelope("node-1", 7, 41)];
        stamp_message(&mut next, 7, Ok(seven), me, &mut stamped);
        stamp_message(
            &mut next,
            8,
            Ok(vec![envelope("node-1", 6, 9)]),
            me,
            &mut stamped,
        );
        assert_eq!(
            stamps(&stamped),
            [
                (10, place(5, 2, 3), None),
                (11, place(6, 0, 1), None),
                (12, place(7, 0, 2), Some(40)),
                (13, place(7, 1, 2), Some(41)),
                (14, place(8, 0, 1), None),
            ]
        );
        assert!(stamped[1]
            .0
            .justification
            .starts_with("skipped: the cluster's log holds junk"));
        assert_eq!(stamped[1].0.actor, PrincipalId::SYSTEM);
        assert_eq!(
            next,
            Cursor {
                message: 9,
                skip: 0,
                command: 15
            }
        );
        // A later message than the one the cursor names is taken whole.
        let mut next = Cursor {
            message: 5,
            skip: 2,
            command: 10,
        };
        let mut stamped = Vec::new();
        let nine = (1..=3).map(|n| envelope("node-2", 1, n)).collect();
        stamp_message(&mut next, 9, Ok(nine), me, &mut stamped);
        assert_eq!(stamped.len(), 3);
        assert_eq!(next.command, 13);
    }
}
