//! Signing a node's commands in groups: the commands proposed while the signer was
//! busy (or in the same turn of the runtime) are signed together, one Ed25519
//! signature over their Merkle root (`wire::sign_group`). A lone command costs what
//! it cost before; under load a signature covers many.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};

use crate::merkle::GROUP_MAX;

/// Commands waiting for the signer, at most; a proposer waits for room beyond.
const SIGN_QUEUE_MAX: usize = 4_096;

/// What this node signed and checked since it started, for `/metrics`.
#[derive(Default)]
pub(crate) struct SigningCounters {
    /// Signatures this node made over its own commands.
    pub(crate) signatures: AtomicU64,
    /// The commands they covered.
    pub(crate) signed: AtomicU64,
    /// Signatures of other nodes' commands this node checked.
    pub(crate) checks: AtomicU64,
    /// The other nodes' commands those checks covered (a command whose group's
    /// signature was checked before counts here, not there).
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

struct Job {
    envelope: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

/// The way to the node's signing task.
pub(crate) struct Signer {
    queue: mpsc::Sender<Job>,
}

impl Signer {
    /// Starts the signing task (on the current runtime); it ends when the signer is
    /// dropped.
    pub(crate) fn start(key: SigningKey, counters: Arc<SigningCounters>) -> Signer {
        let (queue, jobs) = mpsc::channel(SIGN_QUEUE_MAX);
        tokio::spawn(run(key, jobs, counters));
        Signer { queue }
    }

    /// The message for an envelope's bytes, signed; `None` when the signing task has
    /// ended (the runtime is stopping).
    pub(crate) async fn sign(&self, envelope: Vec<u8>) -> Option<Vec<u8>> {
        let (reply, signed) = oneshot::channel();
        self.queue.send(Job { envelope, reply }).await.ok()?;
        signed.await.ok()
    }
}

async fn run(key: SigningKey, mut jobs: mpsc::Receiver<Job>, counters: Arc<SigningCounters>) {
    while let Some(first) = jobs.recv().await {
        // Proposers woken in the same turn join this group.
        tokio::task::yield_now().await;
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let envelopes: Vec<Vec<u8>> = group
            .iter_mut()
            .map(|job| std::mem::take(&mut job.envelope))
            .collect();
        let messages = crate::wire::sign_group(&key, &envelopes);
        counters.signatures.fetch_add(1, Ordering::Relaxed);
        counters
            .signed
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        for (job, message) in group.into_iter().zip(messages) {
            // A proposer that stopped waiting has nothing to publish.
            let _ = job.reply.send(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Envelope;

    #[tokio::test(flavor = "current_thread")]
    async fn commands_proposed_together_share_one_signature() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let counters = Arc::new(SigningCounters::default());
        let signer = Signer::start(key.clone(), Arc::clone(&counters));
        let envelope = |n: u64| Envelope {
            origin: "node-1".into(),
            incarnation: 1,
            request: n,
            proposed_ms: n,
            actor: colony_kernel::PrincipalId(1),
            justification: format!("command {n}"),
            body: colony_kernel::CommandBody::Tick,
            key: key.verifying_key().to_bytes(),
            node_seq: n,
        };
        // Ten proposers queue before the signing task runs: one group.
        let signed =
            futures_util::future::join_all((0..10).map(|n| signer.sign(envelope(n).to_bytes())))
                .await;
        for (n, message) in (0..10).zip(signed) {
            let (decoded, verified) = Envelope::decode(&message.unwrap()).unwrap();
            assert_eq!(decoded, envelope(n));
            verified.unwrap();
        }
        // One alone is signed alone.
        let alone = signer.sign(envelope(10).to_bytes()).await.unwrap();
        Envelope::decode(&alone).unwrap().1.unwrap();
        let figures = counters.figures();
        assert_eq!((figures.signatures, figures.signed_commands), (2, 11));
    }
}
