//! Signing and publishing a node's commands in groups: the commands proposed while
//! the signer was busy, or while [`IN_FLIGHT_MAX`] of its messages waited for the
//! stream's acknowledgement, are signed together (one Ed25519 signature over the
//! Merkle root of their envelopes, `wire::sign_group`) and published as one message
//! of the stream. A lone command costs what it cost before; under load one
//! signature, one replicated message and one delivery to each node carry many.
//!
//! Under load a group also waits, at most `ClusterConfig::group_wait`, until it
//! holds as many commands as the recent groups did ([`Recent`]): every message costs
//! the stream's servers a replication, a store and a delivery to each node, and each
//! node a signature check and a decode, whatever it carries, so that fewer, fuller
//! messages leave more of the machine to the commands themselves. A node that
//! proposes now and then never waits: its groups are of one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;

use crate::merkle::GROUP_MAX;
use crate::propose::Pending;
use crate::wire::{HEAD_BYTES, PER_ENVELOPE};

/// Commands waiting for the signer, at most; a proposer waits for room beyond.
const SIGN_QUEUE_MAX: usize = 4_096;
/// A node's messages published and not acknowledged yet, at most. A group is formed
/// when the last one is acknowledged (or at once when none is out), so under load a
/// group holds what arrived during a round trip to the stream (group commit); a
/// lone command waits for nothing. (Two out at a time made groups of about 9 where
/// one makes about 11 on the cluster benchmark, for no more commands a second.)
pub(crate) const IN_FLIGHT_MAX: usize = 1;
/// A group waits to fill only when the recent groups held at least this many
/// commands (the node is under load).
const LOADED_GROUP: usize = 4;
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
    /// The proposer's request number: where it waits among [`Waiters::pending`].
    request: u64,
}

/// Those a message's acknowledgement concerns. A proposer waits once, for its
/// command applied: a message acknowledged moves the stream's last number on, and
/// only a message the stream did not take answers its proposers (with why) and ends
/// their wait; so under load a caller's task is woken once per command, not twice.
#[derive(Clone)]
pub(crate) struct Waiters {
    pub(crate) pending: Arc<Mutex<HashMap<u64, Pending>>>,
    /// The stream's last sequence as last heard (`Inner::stream_last`).
    pub(crate) stream_last: Arc<AtomicU64>,
}

/// The way to the node's signing and publishing task.
pub(crate) struct Signer {
    queue: mpsc::Sender<Job>,
}

/// Where the signer publishes, and whom it tells.
pub(crate) struct Target {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) subject: String,
    pub(crate) waiters: Waiters,
}

impl Signer {
    /// Starts the signing task (on the current runtime); it ends when the signer is
    /// dropped.
    pub(crate) fn start(
        key: SigningKey,
        counters: Arc<SigningCounters>,
        target: Target,
        group_wait: Duration,
    ) -> Signer {
        let (queue, jobs) = mpsc::channel(SIGN_QUEUE_MAX);
        tokio::spawn(run(key, jobs, counters, target, group_wait));
        Signer { queue }
    }

    /// Hands an envelope's bytes over, to be signed with the others proposed at the
    /// same moment and published in their message; the proposer (waiting as
    /// `request` among the [`Waiters`]) hears only if the stream does not take it.
    /// `None` when the signing task has ended (the runtime is stopping).
    pub(crate) async fn publish(
        &self,
        envelope: Vec<u8>,
        payload: Payload,
        request: u64,
    ) -> Option<()> {
        self.queue
            .send(Job {
                envelope,
                payload,
                request,
            })
            .await
            .ok()
    }
}

async fn run(
    key: SigningKey,
    mut jobs: mpsc::Receiver<Job>,
    counters: Arc<SigningCounters>,
    target: Target,
    group_wait: Duration,
) {
    let mut carried: Option<Job> = None;
    let mut recent = Recent::default();
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
        let mut group = Group::new(first);
        carried = group.gather(&mut jobs);
        if carried.is_none() && !group_wait.is_zero() {
            if let Some(target) = recent.wait_for(group.jobs.len()) {
                let until = tokio::time::Instant::now() + group_wait;
                carried = group.fill(&mut jobs, target, until).await;
            }
        }
        recent.saw(group.jobs.len());
        let mut group = group.jobs;
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
                let waiters = target.waiters.clone();
                tokio::spawn(async move {
                    let published = ack
                        .await
                        .map(|ack| ack.sequence)
                        .map_err(|error| error.to_string());
                    drop(permit);
                    answer(&waiters, group, published);
                });
            }
            Err(error) => answer(&target.waiters, group, Err(error.to_string())),
        }
    }
}

/// The commands of one message being formed, and their bytes in it.
struct Group {
    jobs: Vec<Job>,
    bytes: usize,
}

impl Group {
    fn new(first: Job) -> Group {
        Group {
            bytes: HEAD_BYTES + PER_ENVELOPE + first.envelope.len(),
            jobs: vec![first],
        }
    }

    /// Adds `job` when the group has room for it, up to [`GROUP_MAX`] commands and
    /// [`GROUP_BYTES_MAX`] bytes; gives it back when not (it leads the next group).
    fn add(&mut self, job: Job) -> Result<(), Job> {
        let size = PER_ENVELOPE + job.envelope.len();
        if self.jobs.len() >= GROUP_MAX || self.bytes + size > GROUP_BYTES_MAX {
            return Err(job);
        }
        self.bytes += size;
        self.jobs.push(job);
        Ok(())
    }

    /// Takes the jobs queued already, while they fit; the job taken that did not fit
    /// leads the next group.
    fn gather(&mut self, jobs: &mut mpsc::Receiver<Job>) -> Option<Job> {
        while self.jobs.len() < GROUP_MAX {
            let Ok(job) = jobs.try_recv() else { break };
            if let Err(job) = self.add(job) {
                return Some(job);
            }
        }
        None
    }

    /// Waits for more jobs until the group holds `target` commands (or is full), or
    /// `until`; the job that did not fit leads the next group.
    async fn fill(
        &mut self,
        jobs: &mut mpsc::Receiver<Job>,
        target: usize,
        until: tokio::time::Instant,
    ) -> Option<Job> {
        while self.jobs.len() < target.min(GROUP_MAX) {
            match tokio::time::timeout_at(until, jobs.recv()).await {
                Ok(Some(job)) => {
                    if let Err(job) = self.add(job) {
                        return Some(job);
                    }
                    // Whatever else is queued by now comes along.
                    if let Some(job) = self.gather(jobs) {
                        return Some(job);
                    }
                }
                // The node is stopping (the next receive ends the task), or time is up.
                Ok(None) | Err(_) => break,
            }
        }
        None
    }
}

/// How many commands the recent groups held: the largest, falling by an eighth at
/// every group smaller than it, so that a node whose load has passed stops waiting
/// after a few groups.
#[derive(Default)]
struct Recent {
    size: usize,
}

impl Recent {
    /// The size a group of `now` commands should wait for, when the node is under
    /// load and the group is smaller than that.
    fn wait_for(&self, now: usize) -> Option<usize> {
        (self.size >= LOADED_GROUP && now < self.size).then_some(self.size)
    }

    fn saw(&mut self, size: usize) {
        self.size = size.max(self.size * 7 / 8);
    }
}

/// How a group's message fared: acknowledged, the stream's last number moves on
/// (what the applier waits for: if its consumer stalls, it knows there is more);
/// not, every proposer of the group still waiting is told why, and waits no more.
fn answer(waiters: &Waiters, group: Vec<Job>, published: Published) {
    match published {
        Ok(sequence) => {
            waiters.stream_last.fetch_max(sequence, Ordering::Relaxed);
        }
        Err(error) => {
            let mut pending = waiters.pending.lock().expect("pending lock");
            for job in group {
                if let Some(waiting) = pending.remove(&job.request) {
                    let _ = waiting.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group `first` leads with what is queued behind it, and the job that did
    /// not fit.
    fn gather(first: Job, jobs: &mut mpsc::Receiver<Job>) -> (Vec<Job>, Option<Job>) {
        let mut group = Group::new(first);
        let carried = group.gather(jobs);
        (group.jobs, carried)
    }

    fn job(size: usize) -> Job {
        Job {
            envelope: vec![7; size],
            payload: Payload::default(),
            request: size as u64,
        }
    }

    #[test]
    fn a_group_holds_what_is_queued_up_to_its_count_and_its_bytes() {
        let (queue, mut jobs) = mpsc::channel(SIGN_QUEUE_MAX);
        for _ in 0..GROUP_MAX + 6 {
            queue.try_send(job(100)).unwrap();
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
            queue.try_send(job(big)).unwrap();
        }
        let first = jobs.try_recv().unwrap();
        let (group, carried) = gather(first, &mut jobs);
        assert_eq!(group.len(), 2);
        let (group, carried) = gather(carried.unwrap(), &mut jobs);
        assert_eq!((group.len(), carried.is_none()), (2, true));
        // One larger than the bound goes alone.
        queue.try_send(job(GROUP_BYTES_MAX)).unwrap();
        queue.try_send(job(10)).unwrap();
        let first = jobs.try_recv().unwrap();
        let (group, carried) = gather(first, &mut jobs);
        assert_eq!(
            (group.len(), carried.map(|job| job.envelope.len())),
            (1, Some(10))
        );
    }

    #[test]
    fn a_message_not_taken_answers_its_proposers_and_one_taken_moves_the_last_number() {
        let waiters = Waiters {
            pending: Arc::default(),
            stream_last: Arc::new(AtomicU64::new(5)),
        };
        let mut heard = Vec::new();
        for request in [1, 2] {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let pending = Pending {
                reply,
                payload: Payload::default(),
            };
            waiters.pending.lock().unwrap().insert(request, pending);
            heard.push(answer);
        }
        let group = |requests: &[u64]| -> Vec<Job> {
            requests
                .iter()
                .map(|request| Job {
                    envelope: Vec::new(),
                    payload: Payload::default(),
                    request: *request,
                })
                .collect()
        };
        // Taken: nobody is woken; the stream's last number moves on, never back.
        answer(&waiters, group(&[1, 2]), Ok(9));
        answer(&waiters, group(&[1, 2]), Ok(7));
        assert_eq!(waiters.stream_last.load(Ordering::Relaxed), 9);
        assert!(heard[0].try_recv().is_err() && heard[1].try_recv().is_err());
        assert_eq!(waiters.pending.lock().unwrap().len(), 2);
        // Not taken: each proposer still waiting hears why, once (3 stopped waiting).
        answer(&waiters, group(&[1, 2, 3]), Err("timed out".into()));
        for answer in &mut heard {
            assert_eq!(answer.try_recv().unwrap().unwrap_err(), "timed out");
        }
        assert!(waiters.pending.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn under_load_a_group_waits_to_fill_up_to_its_bounds() {
        let far = || tokio::time::Instant::now() + Duration::from_secs(60);
        let (queue, mut jobs) = mpsc::channel(SIGN_QUEUE_MAX);
        // What is queued already comes along; no wait once the target is reached.
        for _ in 0..3 {
            queue.try_send(job(10)).unwrap();
        }
        let mut group = Group::new(job(10));
        assert!(group.fill(&mut jobs, 4, far()).await.is_none());
        assert_eq!(group.jobs.len(), 4);
        // Commands proposed meanwhile fill it.
        let sender = queue.clone();
        let proposers = tokio::spawn(async move {
            for _ in 0..5 {
                sender.send(job(10)).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut group = Group::new(job(10));
        let filled = tokio::time::timeout(Duration::from_secs(30), group.fill(&mut jobs, 6, far()));
        assert!(filled.await.expect("the group fills").is_none());
        assert_eq!(group.jobs.len(), 6);
        proposers.await.unwrap();
        // Nothing more comes: it goes when the wait is over.
        let mut group = Group::new(job(10));
        let until = tokio::time::Instant::now() + Duration::from_millis(5);
        assert!(group.fill(&mut jobs, 6, until).await.is_none());
        assert_eq!(group.jobs.len(), 1);
        // A command that does not fit leads the next group.
        queue.try_send(job(GROUP_BYTES_MAX)).unwrap();
        let mut group = Group::new(job(10));
        let carried = group.fill(&mut jobs, 6, far()).await;
        assert_eq!(carried.map(|job| job.envelope.len()), Some(GROUP_BYTES_MAX));
        // Never past GROUP_MAX, whatever the target.
        for _ in 0..GROUP_MAX + 3 {
            queue.try_send(job(1)).unwrap();
        }
        let mut group = Group::new(job(1));
        assert!(group.fill(&mut jobs, GROUP_MAX * 2, far()).await.is_none());
        assert_eq!(group.jobs.len(), GROUP_MAX);
        // A stopping node (the queue closed) does not wait.
        drop(queue);
        while jobs.try_recv().is_ok() {}
        let mut group = Group::new(job(1));
        assert!(group.fill(&mut jobs, 6, far()).await.is_none());
        assert_eq!(group.jobs.len(), 1);
    }

    #[test]
    fn only_a_loaded_node_waits_and_it_stops_when_the_load_passes() {
        let mut recent = Recent::default();
        // A node proposing now and then: groups of one never wait.
        for _ in 0..10 {
            assert_eq!(recent.wait_for(1), None);
            recent.saw(1);
        }
        recent.saw(3);
        assert_eq!(recent.wait_for(1), None, "three is not load");
        recent.saw(16);
        assert_eq!(recent.wait_for(5), Some(16));
        assert_eq!(recent.wait_for(16), None, "full already");
        // The load passes: after a few lone commands it waits no more.
        let mut waits = 0;
        while recent.wait_for(1).is_some() {
            recent.saw(1);
            waits += 1;
            assert!(waits < 20, "the wait falls away");
        }
        assert!(
            waits >= 5,
            "a burst's gap does not end it at once ({waits})"
        );
    }
}
