//! Signing and publishing a node's commands in groups: the commands proposed while
//! the signer was busy, or while [`IN_FLIGHT_MAX`] of its messages waited for the
//! stream's acknowledgement, are signed together (one Ed25519 signature over the
//! Merkle root of their envelopes, `wire::sign_group`) and published as one message
//! of the stream. A lone command costs what it cost before; under load one
//! signature, one replicated message and one delivery to each node carry many.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};

use crate::merkle::GROUP_MAX;
use crate::wire::{HEAD_BYTES, PER_ENVELOPE};

/// Commands waiting for the signer, at most; a proposer waits for room beyond.
const SIGN_QUEUE_MAX: usize = 4_096;
/// A node's messages published and not acknowledged yet, at most. A group is formed
/// when one of them is acknowledged (or at once while fewer are out), so under load
/// a group holds what arrived during a round trip to the stream (group commit); a
/// lone command waits for nothing.
pub(crate) const IN_FLIGHT_MAX: usize = 2;
/// A group's message stays under this many bytes (a command larger than that goes
/// alone): far below the 1 MiB a NATS server takes by default, so that one large
/// command cannot make a whole group's message too large for the stream.
pub(crate) const GROUP_BYTES_MAX: usize = 256 * 1024;

/// What this node signed and checked since it started, for `/metrics`.
#[derive(Default)]
pub(crate) struct SigningCounters {
    /// Signatures this node made over its own commands (one per message).
    pub(crate) signatures: AtomicU64,
    /// The commands they covered.
    pub(crate) signed: AtomicU64,
    /// Signatures of other nodes' messages this node checked.
    pub(crate) checks: AtomicU64,
    /// The other nodes' commands those checks covered.
    pub(crate) checked: AtomicU64,
}

/// [`SigningCounters`] read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigningFigures {
    pub signatures: u64,
    pub signed_commands: u64,
    pub checks: u64,
    pub checked_commands: u64,
}

impl SigningCounters {
    pub(crate) fn figures(&self) -> SigningFigures {
        SigningFigures {
            signatures: self.signatures.load(Ordering::Relaxed),
            signed_commands: self.signed.load(Ordering::Relaxed),
            checks: self.checks.load(Ordering::Relaxed),
            checked_commands: self.checked.load(Ordering::Relaxed),
        }
    }
}

/// The signed message's bytes, set before it is published: the applier knows this
/// node's own messages by them (and does not check their signature again).
pub(crate) type Payload = Arc<OnceLock<Bytes>>;

/// How publishing a command's message ended: the message's sequence number in the
/// stream, or why the stream did not acknowledge it.
pub(crate) type Published = Result<u64, String>;

struct Job {
    envelope: Vec<u8>,
    payload: Payload,
    reply: oneshot::Sender<Published>,
}

/// The way to the node's signing and publishing task.
pub(crate) struct Signer {
    queue: mpsc::Sender<Job>,
}

/// Where the signer publishes.
pub(crate) struct Target {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) subject: String,
}

impl Signer {
    /// Starts the signing task (on the current runtime); it ends when the signer is
    /// dropped.
    pub(crate) fn start(key: SigningKey, counters: Arc<SigningCounters>, target: Target) -> Signer {
        let (queue, jobs) = mpsc::channel(SIGN_QUEUE_MAX);
        tokio::spawn(run(key, jobs, counters, target));
        Signer { queue }
    }

    /// Signs an envelope's bytes with the others proposed at the same moment and
    /// publishes their message; `None` when the signing task has ended (the runtime
    /// is stopping).
    pub(crate) async fn publish(&self, envelope: Vec<u8>, payload: Payload) -> Option<Published> {
        let (reply, published) = oneshot::channel();
        self.queue
            .send(Job {
                envelope,
                payload,
                reply,
            })
            .await
            .ok()?;
        published.await.ok()
    }
}

async fn run(
    key: SigningKey,
    mut jobs: mpsc::Receiver<Job>,
    counters: Arc<SigningCounters>,
    target: Target,
) {
    let mut carried: Option<Job> = None;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // Room for one more message out: meanwhile the proposers queue behind.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        // Proposers woken in the same turn join this group.
        tokio::task::yield_now().await;
        let (mut group, rest) = gather(first, &mut jobs);
        carried = rest;
        let envelopes: Vec<Vec<u8>> = group
            .iter_mut()
            .map(|job| std::mem::take(&mut job.envelope))
            .collect();
        let message = Bytes::from(crate::wire::sign_group(&key, &envelopes));
        counters.signatures.fetch_add(1, Ordering::Relaxed);
        counters
            .signed
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        for job in &group {
            let _ = job.payload.set(message.clone());
        }
        let sent = target
            .jetstream
            .send_publish(
                target.subject.clone(),
                PublishMessage::build().payload(message),
            )
            .await;
        match sent {
            // The acknowledgement is awaited beside the next groups.
            Ok(ack) => {
                tokio::spawn(async move {
                    let published = ack
                        .await
                        .map(|ack| ack.sequence)
                        .map_err(|error| error.to_string());
                    drop(permit);
                    answer(group, &published);
                });
            }
            Err(error) => answer(group, &Err(error.to_string())),
        }
    }
}

/// The group `first` leads: the jobs queued behind it, up to [`GROUP_MAX`] and
/// [`GROUP_BYTES_MAX`]; and the job taken that did not fit, which leads the next.
fn gather(first: Job, jobs: &mut mpsc::Receiver<Job>) -> (Vec<Job>, Option<Job>) {
    let mut bytes = HEAD_BYTES + PER_ENVELOPE + first.envelope.len();
    let mut group = vec![first];
    while group.len() < GROUP_MAX {
        let Ok(job) = jobs.try_recv() else { break };
        let size = PER_ENVELOPE + job.envelope.len();
        if bytes + size > GROUP_BYTES_MAX {
            return (group, Some(job));
        }
        bytes += size;
        group.push(job);
    }
    (group, None)
}

/// Tells every proposer of a group how its message fared (a proposer that stopped
/// waiting is not told).
fn answer(group: Vec<Job>, published: &Published) {
    for job in group {
        let _ = job.reply.send(published.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: usize) -> (Job, oneshot::Receiver<Published>) {
        let (reply, published) = oneshot::channel();
        let job = Job {
            envelope: vec![7; size],
            payload: Payload::default(),
            reply,
        };
        (job, published)
    }

    #[test]
    fn a_group_holds_what_is_queued_up_to_its_count_and_its_bytes() {
        let (queue, mut jobs) = mpsc::channel(SIGN_QUEUE_MAX);
        let mut waiting = Vec::new();
        for _ in 0..GROUP_MAX + 6 {
            let (job, published) = job(100);
            queue.try_send(job).unwrap();
            waiting.push(published);
        }
        let first = jobs.try_recv().unwrap();
        let (group, carried) = gather(first, &mut jobs);
        assert_eq!((group.len(), carried.is_none()), (GROUP_MAX, true));
        let first = jobs.try_recv().unwrap();
        let (group, carried) = gather(first, &mut jobs);
        assert_eq!((group.len(), carried.is_none()), (6, true));
        // Large commands: as many as fit under the bound; the next leads a group.
        let big = GROUP_BYTES_MAX / 3;
        for _ in 0..4 {
            queue.try_send(job(big).0).unwrap();
        }
        let first = jobs.try_recv().unwrap();
        let (group, carried) = gather(first, &mut jobs);
        assert_eq!(group.len(), 2);
        let (group, carried) = gather(carried.unwrap(), &mut jobs);
        assert_eq!((group.len(), carried.is_none()), (2, true));
        // One larger than the bound goes alone.
        queue.try_send(job(GROUP_BYTES_MAX).0).unwrap();
        queue.try_send(job(10).0).unwrap();
        let first = jobs.try_recv().unwrap();
        let (group, carried) = gather(first, &mut jobs);
        assert_eq!(
            (group.len(), carried.map(|job| job.envelope.len())),
            (1, Some(10))
        );
        // Everyone of a group hears how its message fared.
        let (lone, mut heard) = job(1);
        let (group, _) = gather(lone, &mut jobs);
        answer(group, &Ok(3));
        assert_eq!(heard.try_recv().unwrap(), Ok(3));
        drop(waiting);
    }
}
