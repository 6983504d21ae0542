//! Commands ordered by a cluster's log instead of by this node.
//!
//! In a cluster every node applies every command in the order of one replicated log
//! (NATS JetStream, in `colony-cluster`). A [`Replicator`] attached to the
//! [`Submitter`] takes the commands callers submit and proposes them to that log;
//! whatever the log ordered comes back through [`Submitter::apply_stamped`], carrying
//! its place in the log as its sequence number and the time its proposer read, and is
//! decided here exactly as on every other node: the sequence number must follow the
//! last one (a gap or a repeat stops the node loudly), and the time is the proposed
//! time, never behind the previous command's. The decider then logs no ticks of its
//! own: the log carries them like any other command.

use std::future::Future;
use std::pin::Pin;

use super::*;

/// A command a caller submitted, before any log has ordered it.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub actor: PrincipalId,
    pub justification: String,
    pub body: CommandBody,
}

/// Where a replicated log put a command: its sequence number (the kernel's: the
/// commands of the log's messages counted in the log's order), the time its proposer
/// stamped, and the message of the log that carried it (kept in the kernel's state,
/// so that a node that restarts knows where to follow the log on from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub proposed_ms: u64,
    pub place: Option<colony_kernel::cluster::LogPlace>,
}

/// A command as the log ordered it.
#[derive(Clone, Debug)]
pub struct Stamped {
    pub stamp: Stamp,
    pub actor: PrincipalId,
    pub justification: String,
    pub body: CommandBody,
    /// The node that proposed it, its signature verified.
    pub origin: Option<colony_kernel::cluster::Origin>,
}

/// What orders commands in a cluster. `propose` answers once the log has the
/// command (a quorum of its servers) and this node has decided it, with the same
/// [`Outcome`] an embedded node gives; or `cluster_unavailable` when the log cannot
/// be reached (nothing was decided).
pub trait Replicator: Send + Sync + 'static {
    fn propose(
        &self,
        proposal: Proposal,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, SubmitError>> + Send + '_>>;
}

impl Submitter {
    /// From now on callers' commands go to `replicator`, and the decider logs no
    /// ticks of its own. False when one was attached already.
    pub fn replicate_through(&self, replicator: Arc<dyn Replicator>) -> bool {
        if self.core.replicator.set(replicator).is_err() {
            return false;
        }
        self.core.decider.lock().expect("decider lock").own_ticks = false;
        true
    }

    /// The cluster's log cannot be followed (a gap in it: this node's state could
    /// not stay the others'): the node fails loudly, saying why, and decides
    /// nothing more.
    pub fn cannot_follow(&self, reason: String) {
        self.fatal.fail(reason);
    }

    /// Resolves with the reason once the node cannot go on (a gap in the cluster's
    /// log, a panic while deciding): what a node still starting waits for beside
    /// its catch-up, so that it stops instead of waiting forever.
    pub async fn failed(&self) -> String {
        self.fatal.failed().await
    }

    /// Decides a command the cluster's log ordered (see
    /// [`Submitter::apply_stamped_batch`]).
    pub async fn apply_stamped(
        &self,
        stamp: Stamp,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, SubmitError> {
        let mut outcomes = self
            .apply_stamped_batch(vec![Stamped {
                stamp,
                actor,
                justification,
                body,
                origin: None,
            }])
            .await?;
        Ok(outcomes.pop().expect("one outcome for one command"))
    }

    /// Decides commands the cluster's log ordered, in that order, answered once
    /// decided (the log holds them durably already; this node's own log follows
    /// within `decided_sync_within_ms`): one outcome each, in order. Several at once
    /// are decided as one group when the decider is free. Call in the log's order,
    /// one batch at a time.
    pub async fn apply_stamped_batch(
        &self,
        commands: Vec<Stamped>,
    ) -> Result<Vec<Outcome>, SubmitError> {
        self.not_failed()?;
        let mut answers = Vec::with_capacity(commands.len());
        let mut requests = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            requests.push(Request::Command(Box::new(CommandRequest {
                actor: command.actor,
                justification: command.justification,
                body: command.body,
                reply,
                early: true,
                stamp: Some(command.stamp),
                origin: command.origin,
            })));
        }
        if !self.core.decide_all_now(&mut requests) {
            // The decider is busy: queue them, waiting for room rather than refusing,
            // since commands the log ordered cannot be skipped.
            let sender = self.sender.clone();
            let queued = tokio::task::spawn_blocking(move || {
                requests
                    .into_iter()
                    .all(|request| sender.send(request).is_ok())
            })
            .await
            .unwrap_or(false);
            if !queued {
                return Err(SubmitError::shutting_down());
            }
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answer.await.map_err(|_| SubmitError::shutting_down())?);
        }
        Ok(outcomes)
    }
}
