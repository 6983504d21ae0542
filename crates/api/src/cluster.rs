//! `GET /v1/cluster`: a node's view of the cluster it runs in.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What `GET /v1/cluster` answers. An embedded node answers `mode: "embedded"` and
/// nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// `embedded` (one node, its own log) or `nats` (the log is a JetStream stream).
    pub mode: String,
    /// This node's name (`--node-name`), in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether this node holds a connection to the NATS servers. Without one it
    /// refuses writes (`503 cluster_unavailable`) and marks reads stale.
    pub connected: bool,
    /// The NATS server this node is connected to, by its name: the stream's leader
    /// unless `cluster.toml` says `prefer_leader = false` (or a move is under way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The NATS server this node's consumer of the command log lives on (the one it
    /// is connected to, unless `prefer_leader = false`): it delivers the log to
    /// this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows_from: Option<String>,
    /// The last command this node has applied; in a cluster, the last message of the
    /// cluster's log it has applied whole (a message carries the commands a node
    /// proposed together), to compare with the stream's `last_seq`.
    pub applied_seq: u64,
    /// The cluster's command log, as its stream reports it (absent when it cannot be
    /// asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamView>,
    /// Every Colony node heard from on the cluster, this one included.
    #[serde(default)]
    pub nodes: Vec<NodeView>,
    /// This node's Ed25519 public key (standard base64 of its 32 bytes): what its
    /// signed heads of the decision log and, in a cluster, its commands are checked
    /// with.
    #[serde(default)]
    pub public_key: String,
    /// The nodes whose commands the cluster's log applies (none on an embedded node).
    #[serde(default)]
    pub admitted: Vec<AdmittedNode>,
    /// Checkpoints of other nodes that disagreed with this node's at the same record
    /// since it started (must stay 0), and the newest one's evidence.
    #[serde(default)]
    pub divergences: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
}

/// A node admitted to write the cluster's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdmittedNode {
    pub name: String,
    /// Standard base64 of its 32-byte Ed25519 public key.
    pub public_key: String,
    pub admitted_at: String,
    /// Who admitted it (`genesis` for the first node).
    pub admitted_by: String,
    pub justification: String,
    /// The highest of its own command numbers applied.
    pub highest_seq: u64,
}

/// `POST /v1/cluster/nodes`: admit a node's key; `POST /v1/cluster/nodes/remove`:
/// remove one (`name` is then not needed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Standard base64 of the node's 32-byte Ed25519 public key (its `node.pub`).
    pub public_key: String,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// The JetStream stream that holds the command log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamView {
    pub name: String,
    /// Commands in the stream.
    pub messages: u64,
    pub bytes: u64,
    /// The first command the stream still holds (after compaction, the ones before
    /// it are gone).
    pub first_seq: u64,
    /// The stream's last sequence number: the last command ordered.
    pub last_seq: u64,
    /// How many servers keep a copy.
    pub replicas: usize,
    /// The NATS server leading the stream's replication group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The other servers with a copy, and whether each is current.
    #[serde(default)]
    pub peers: Vec<StreamPeer>,
}

/// A NATS server that keeps a copy of the stream besides its leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamPeer {
    pub name: String,
    pub current: bool,
    /// Operations it is behind the leader.
    pub lag: u64,
}

/// One Colony node of the cluster, as it last told the others (every second).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub name: String,
    /// The last message of the cluster's log it had applied whole.
    pub applied_seq: u64,
    /// Commands it was behind the stream's last sequence when this node last looked.
    pub lag: u64,
    /// When it last told the others, in Unix milliseconds.
    pub seen_ms: u64,
    /// Whether it held a connection to NATS then.
    pub connected: bool,
    /// Its newest checkpoint: a decision record number every node hashes (a
    /// multiple of `audit.toml`'s `every`) and the chain hash it has there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_head: Option<String>,
}
