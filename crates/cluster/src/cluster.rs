//! [`Cluster`]: the connection to NATS, the stream that holds the command log,
//! joining it, and installing genesis once for the whole cluster (proposing a
//! command: `propose.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_nats::jetstream;
use colony_kernel::State;
use colony_pipeline::{Metrics, Outcome, Proposal, SubmitError, Submitter};
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::propose::Pending;
use crate::wire::Envelope;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster configuration: {0}")]
    Config(String),
    #[error("cannot reach the NATS servers {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error("the cluster's command log (stream {stream}): {message}")]
    Stream { stream: String, message: String },
    #[error("this node's data has applied the cluster's log up to message {local} but the cluster's stream {stream} ends at {stream_last}: it belongs to another cluster or the stream was deleted; start it on an empty data directory")]
    DataAhead {
        local: u64,
        stream: String,
        stream_last: u64,
    },
    #[error("this node's data holds {commands} commands of a node of its own (an embedded node's, with no place in a cluster's log): following the cluster's log from them would diverge from the other nodes; start a cluster's node on an empty data directory, or on a copy of another node's (docs/cluster.md)")]
    NotClusterData { commands: u64 },
    #[error("this node cannot follow the cluster's log: {0}")]
    CannotFollow(String),
    #[error("this node's data has applied the cluster's log up to message {local} but the cluster's stream {stream} was compacted and starts at {stream_first}: the commands in between are gone (the node was away longer than keep_absent, or is new); stop another node and copy its data directory here, then start both (docs/cluster.md, \"Compaction\")")]
    Compacted {
        local: u64,
        stream: String,
        stream_first: u64,
    },
}

/// Whose genesis the cluster's log starts with.
#[derive(Debug)]
pub enum Genesis {
    /// This node's: decided with this outcome (`None` when its acknowledgement was
    /// lost and the node learned it from the stream, where it is first).
    ThisNode(Option<Box<Outcome>>),
    /// Another node's, applied here.
    AnotherNode,
}

/// A node's membership of a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClusterConfig,
    pub(crate) client: async_nats::Client,
    /// Where the client's next reconnection goes, when a move to the stream's
    /// leader asks for one (`leader.rs`).
    pub(crate) leader: Arc<crate::leader::Preferred>,
    /// Checks that the node's consumers are on its server (`placement.rs`).
    pub(crate) placement: crate::placement::Rounds,
    /// The server its consumer of the command log is on, when known.
    pub(crate) follows_from: Mutex<Option<String>>,
    pub(crate) jetstream: jetstream::Context,
    /// Which start of this node this is: a request number is matched to a waiting
    /// caller only when the command came from this very run.
    pub(crate) incarnation: u64,
    pub(crate) next_request: AtomicU64,
    /// Callers waiting for their command to come back from the stream, applied.
    pub(crate) pending: Arc<Mutex<HashMap<u64, Pending>>>,
    /// The last message of the stream this node applied whole (a message carries one
    /// or more commands).
    pub(crate) applied: watch::Sender<u64>,
    /// The stream's last sequence when last asked (by the applier's start, the
    /// peers' loop, or `GET /v1/cluster`).
    pub(crate) stream_last: Arc<AtomicU64>,
    /// The stream's first sequence when last asked: the commands before it were
    /// compacted away (`compact.rs`).
    pub(crate) stream_first: AtomicU64,
    /// Set when the node is stopping.
    pub(crate) stopping: AtomicBool,
    pub(crate) peers: Mutex<crate::peers::Peers>,
    /// The node's key: its reports to the others are signed with it, and every
    /// command it proposes by `signer`, which holds a copy.
    pub(crate) key: ed25519_dalek::SigningKey,
    pub(crate) public_key: [u8; 32],
    pub(crate) signer: crate::signer::Signer,
    pub(crate) signing: Arc<crate::signer::SigningCounters>,
    /// The next of this node's own command numbers (see `colony_kernel::cluster`).
    pub(crate) next_node_seq: AtomicU64,
}

impl Inner {
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl Cluster {
    /// Connects, finds or creates the stream, follows it from the node's own last
    /// command until caught up, and from then on proposes every command `submitter`
    /// gets to the stream. Fails (the node does not start) when NATS cannot be
    /// reached, or when the node's data is ahead of the stream.
    pub async fn join(
        config: ClusterConfig,
        key: ed25519_dalek::SigningKey,
        submitter: Submitter,
        state: Arc<RwLock<State>>,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, ClusterError> {
        let preferred = Arc::new(crate::leader::Preferred::default());
        let client = crate::connect::connect(&config, Arc::clone(&preferred)).await?;
        let jetstream = jetstream::context::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .build(client.clone());
        let stream_error = |message: String| ClusterError::Stream {
            stream: config.stream.clone(),
            message,
        };
        let mut stream = crate::connect::command_stream(&jetstream, &config).await?;
        let stream_state = stream
            .info()
            .await
            .map_err(|error| stream_error(error.to_string()))?
            .state
            .clone();
        let stream_last = stream_state.last_sequence;
        let (next_message, skip, local) =
            crate::connect::where_to_start(&state, &stream_state, &config)?;
        let (applied, _) = watch::channel(next_message - 1);
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 40;
        let signing = Arc::new(crate::signer::SigningCounters::default());
        let waiters = crate::signer::Waiters {
            pending: Arc::default(),
            stream_last: Arc::new(AtomicU64::new(stream_last)),
        };
        let target = crate::signer::Target {
            jetstream: jetstream.clone(),
            subject: config.commands_subject(),
            waiters: waiters.clone(),
        };
        let group_wait = config.group_wait;
        let inner = Arc::new(Inner {
            config,
            client,
            leader: preferred,
            placement: crate::placement::Rounds::default(),
            follows_from: Mutex::new(None),
            jetstream,
            incarnation,
            next_request: AtomicU64::new(1),
            pending: waiters.pending,
            applied,
            stream_last: waiters.stream_last,
            stream_first: AtomicU64::new(stream_state.first_sequence),
            stopping: AtomicBool::new(false),
            peers: Mutex::new(crate::peers::Peers::default()),
            public_key: key.verifying_key().to_bytes(),
            signer: crate::signer::Signer::start(
                key.clone(),
                Arc::clone(&signing),
                target,
                group_wait,
            ),
            key,
            signing,
            next_node_seq: AtomicU64::new(0),
        });
        // Before following: a move later costs the consumer a reconnection.
        let mut leader_watch = crate::leader::Watch::default();
        let moved = crate::leader::check(&inner, &mut leader_watch, true);
        let _ = tokio::time::timeout(inner.config.ack_timeout * 3, moved).await;
        tracing::info!(
            node = %inner.config.node_name,
            stream = %inner.config.stream,
            local,
            next_message,
            stream_last,
            "joined the cluster; catching up from the stream"
        );
        tokio::spawn(crate::applier::follow(
            Arc::clone(&inner),
            submitter.clone(),
            crate::applier::Cursor {
                message: next_message,
                skip,
                command: local + 1,
            },
        ));
        // From the start, so that the log keeps what this node is catching up on.
        tokio::spawn(crate::compact::run(Arc::clone(&inner)));
        let cluster = Cluster { inner };
        // A node that cannot follow the log while catching up (a gap: a message
        // deleted or lost while it was away) stops starting, saying why.
        tokio::select! {
            () = cluster.caught_up_to(stream_last) => {}
            reason = submitter.failed() => {
                cluster.stop();
                return Err(ClusterError::CannotFollow(reason));
            }
        }
        if let Err(error) = cluster.take_own_numbers(&state, stream_last) {
            cluster.stop();
            return Err(error);
        }
        submitter.replicate_through(Arc::new(cluster.clone()));
        tokio::spawn(crate::ticker::run(
            Arc::clone(&cluster.inner),
            Arc::clone(&state),
            metrics,
        ));
        tokio::spawn(crate::peers::run(Arc::clone(&cluster.inner), state));
        tokio::spawn(crate::leader::run(Arc::clone(&cluster.inner), leader_watch));
        Ok(cluster)
    }

    /// Once caught up: checks that this node's key is admitted under this node's
    /// name (or not yet at all), and numbers its commands past every number it used
    /// before, and past those of its earlier runs that may still be on their way:
    /// never one the kernel took.
    fn take_own_numbers(
        &self,
        state: &RwLock<State>,
        stream_last: u64,
    ) -> Result<(), ClusterError> {
        let own = self.inner.public_key;
        let admitted = state
            .read()
            .expect("state lock")
            .cluster_node(&own)
            .map(|node| (node.name.clone(), node.highest_seq));
        if let Some((name, _)) = admitted
            .as_ref()
            .filter(|(name, _)| *name != self.inner.config.node_name)
        {
            return Err(ClusterError::Config(format!(
                "this node's key (node.key in its data directory) is admitted as node `{name}`, but this node is `{}`: two nodes must never share a key (was the data directory copied from another node? delete node.key and node.pub in the copy, start it, and admit its new key)",
                self.inner.config.node_name
            )));
        }
        let highest = admitted.map_or(0, |(_, highest)| highest);
        self.inner.next_node_seq.store(
            highest + colony_kernel::cluster::REPLAY_WINDOW + 1,
            Ordering::Relaxed,
        );
        if highest == 0 && stream_last > 0 {
            tracing::warn!(
                node = %self.inner.config.node_name,
                "this node's key is not admitted to the cluster yet: its commands are refused until an admin admits it (colony cluster admit {} --key {})",
                self.inner.config.node_name,
                base64_key(&own)
            );
        }
        Ok(())
    }

    /// Waits until this node has applied the stream up to `seq`.
    async fn caught_up_to(&self, seq: u64) {
        let mut applied = self.inner.applied.subscribe();
        let _ = applied.wait_for(|applied| *applied >= seq).await;
    }

    /// Proposes genesis as the stream's very first command: [`Genesis::ThisNode`]
    /// when it is this node's, [`Genesis::AnotherNode`] when another node was first
    /// (its genesis is then applied here). A stream that has just been created may not
    /// take messages yet, and an acknowledgement may be lost: genesis is proposed
    /// again until the stream's first command is known (at most six `ack_timeout`s),
    /// and a first command that is this node's counts as this node's even when its
    /// acknowledgement never came.
    pub async fn propose_genesis(&self, proposal: Proposal) -> Result<Genesis, SubmitError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.ack_timeout * 6;
        loop {
            match self.inner.propose(proposal.clone(), Some(0)).await {
                Ok(outcome) => return Ok(Genesis::ThisNode(Some(Box::new(outcome)))),
                Err(error) if error.code == "wrong_last_sequence" => {
                    self.caught_up_to(1).await;
                    return Ok(if self.first_command_is_mine().await? {
                        Genesis::ThisNode(None)
                    } else {
                        Genesis::AnotherNode
                    });
                }
                Err(error)
                    if error.code == "cluster_unavailable"
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!(
                        "genesis not taken yet ({}); proposing it again",
                        error.message
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether the stream's first command was proposed by this very run of this node.
    async fn first_command_is_mine(&self) -> Result<bool, SubmitError> {
        let unavailable = |error: String| {
            SubmitError::cluster_unavailable(format!(
                "cannot read the cluster's first command: {error}"
            ))
        };
        let first = self
            .inner
            .jetstream
            .get_stream(&self.inner.config.stream)
            .await
            .map_err(|error| unavailable(error.to_string()))?
            .get_raw_message(1)
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        Ok(
            Envelope::decode(&first.payload).is_ok_and(|(envelopes, verified)| {
                verified.is_ok()
                    && envelopes.first().is_some_and(|envelope| {
                        envelope.origin == self.inner.config.node_name
                            && envelope.incarnation == self.inner.incarnation
                    })
            }),
        )
    }

    /// Stops following the stream and proposing (the node is stopping).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    /// This node's view of the cluster, for `GET /v1/cluster`.
    pub async fn view(&self) -> colony_api::cluster::ClusterView {
        crate::peers::view(&self.inner).await
    }

    /// How many nodes were heard from in the last 3 s, this one included: the edge
    /// allowances (bus publishes, concurrent requests) are split among them.
    pub fn live_nodes(&self) -> u64 {
        crate::peers::live(&self.inner)
    }

    /// The last message of the stream this node applied whole (a message carries
    /// the commands a node proposed together).
    pub fn applied_seq(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// The stream's last sequence as last seen (a second old at most while connected).
    pub fn stream_last_seq(&self) -> u64 {
        self.inner.stream_last.load(Ordering::Relaxed)
    }

    /// The stream's first command, as this node last saw it (the ones before it were
    /// compacted away).
    pub fn stream_first_seq(&self) -> u64 {
        self.inner.stream_first.load(Ordering::Relaxed)
    }

    /// Whether this node does the cluster's node-side watching (alerts, periodic
    /// reports): the live node whose name sorts first.
    pub fn watches(&self) -> bool {
        crate::peers::first_live(&self.inner)
    }

    /// This node's checkpoint: the decision log's chain hash (hex) at record `seq`,
    /// a number every node hashes; told to the others and compared with theirs.
    pub fn checkpoint(&self, seq: u64, head: String) {
        self.inner
            .peers
            .lock()
            .expect("peers lock")
            .checkpoint(seq, head);
    }

    /// Divergences seen since the start (checkpoints of other nodes that disagreed
    /// with this node's): must stay 0.
    pub fn divergences(&self) -> u64 {
        self.divergence().0
    }

    /// Divergences seen since the start, and the newest one's evidence.
    pub fn divergence(&self) -> (u64, Option<String>) {
        self.inner.peers.lock().expect("peers lock").divergence()
    }

    /// Reports of other nodes not taken since the start (unsigned, badly signed, or
    /// from a key not admitted under the name they give).
    pub fn reports_refused(&self) -> u64 {
        self.inner.peers.lock().expect("peers lock").refused()
    }

    /// What this node signed and checked since it started.
    pub fn signing(&self) -> crate::SigningFigures {
        self.inner.signing.figures()
    }

    /// This node's name in the cluster.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// The stream that holds the command log.
    pub fn stream_name(&self) -> &str {
        &self.inner.config.stream
    }

    /// False while this node has no connection to NATS: reads are then stale.
    pub fn connected(&self) -> bool {
        self.inner.connected()
    }
}

/// A key as people pass it: standard base64 of its 32 bytes.
fn base64_key(key: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}
