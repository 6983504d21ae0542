//! Each node tells the others, every second on plain NATS, which command it has
//! applied and its newest checkpoint (the decision log's chain hash at a record
//! number every node hashes: a multiple of `audit.toml`'s `every`); `GET
//! /v1/cluster` shows them with their lag behind the stream. A checkpoint of another
//! node that disagrees with this node's own at the same record is a divergence,
//! which must never happen: it is logged as an error, counted, and shown.
//!
//! Reports are signed with the node's key (`[1][signature: 64][key: 32][report as
//! JSON]`, the signature over `colony-node-report/v1\n`, the key and the JSON) and
//! taken only from a key the cluster admitted under the name the report gives:
//! something else with access to NATS can neither invent nodes (which would split
//! the edge allowances among more nodes) nor raise a false divergence.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use colony_api::cluster::{ClusterView, NodeView, StreamPeer, StreamView};
use colony_kernel::State;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster::Inner;

/// At most this many nodes are remembered (the ones heard from last are kept).
pub(crate) const PEERS_MAX: usize = 256;
/// How often a node tells the others.
const TELL_EVERY: Duration = Duration::from_secs(1);
/// A node's report is at most this many bytes; larger ones are ignored.
const REPORT_BYTES_MAX: usize = 1024;

/// The report's encoding, its first byte.
const REPORT_VERSION: u8 = 1;
/// What a report's signature covers before the key and the JSON.
const REPORT_DOMAIN: &[u8] = b"colony-node-report/v1\n";

/// Checkpoints of its own a node remembers, to compare the others' with.
pub(crate) const CHECKPOINTS_KEPT: usize = 64;

/// What a node tells the others.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Report {
    name: String,
    applied_seq: u64,
    at_ms: u64,
    connected: bool,
    /// Its newest checkpoint: a record number and the chain hash there (hex).
    #[serde(default)]
    checkpoint: Option<(u64, String)>,
}

#[derive(Default)]
pub(crate) struct Peers {
    nodes: BTreeMap<String, Report>,
    /// This node's own checkpoints, newest last.
    own: BTreeMap<u64, String>,
    /// Divergences seen, and the newest one's evidence.
    divergences: u64,
    divergence: Option<String>,
    /// Reports not taken: unsigned, badly signed, or from a key not admitted under
    /// the name they give.
    refused: u64,
}

impl Peers {
    /// This node's checkpoint at `seq`.
    pub(crate) fn checkpoint(&mut self, seq: u64, head: String) {
        self.own.insert(seq, head);
        while self.own.len() > CHECKPOINTS_KEPT {
            self.own.pop_first();
        }
    }

    /// Compares another node's checkpoint with this node's at the same record.
    fn compare(&mut self, me: &str, report: &Report) {
        let Some((seq, theirs)) = &report.checkpoint else {
            return;
        };
        if report.name == me {
            return;
        }
        if let Some(mine) = self.own.get(seq).filter(|mine| *mine != theirs) {
            let evidence = format!(
                "node `{}` has chain hash {theirs} at decision record {seq}, this node `{me}` has {mine}: the nodes' logs diverge",
                report.name
            );
            if self.divergence.as_deref() != Some(evidence.as_str()) {
                tracing::error!("DIVERGENCE: {evidence}");
                self.divergences += 1;
                self.divergence = Some(evidence);
            }
        }
    }

    /// Divergences seen since the start, and the newest one's evidence.
    pub(crate) fn divergence(&self) -> (u64, Option<String>) {
        (self.divergences, self.divergence.clone())
    }

    /// Reports refused since the start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Counts a report not taken; says so in the log the first time and then at
    /// every power of two (a flood of forged reports cannot flood the log).
    fn refuse(&mut self, why: &str) {
        self.refused += 1;
        if self.refused.is_power_of_two() {
            tracing::warn!(
                refused = self.refused,
                "a node report on NATS was not taken: {why}"
            );
        }
    }

    fn heard(&mut self, report: Report) {
        if !self.nodes.contains_key(&report.name) && self.nodes.len() >= PEERS_MAX {
            // Forget the one heard from longest ago.
            if let Some(oldest) = self
                .nodes
                .values()
                .min_by_key(|node| node.at_ms)
                .map(|node| node.name.clone())
            {
                self.nodes.remove(&oldest);
            }
        }
        self.nodes.insert(report.name.clone(), report);
    }
}

/// A report as this node sends it: signed with its key.
fn encode(key: &SigningKey, report: &Report) -> Vec<u8> {
    let json = serde_json::to_vec(report).expect("a report encodes");
    let public = key.verifying_key().to_bytes();
    let signature = key.sign(&signed(&public, &json)).to_bytes();
    let mut bytes = vec![REPORT_VERSION];
    bytes.extend(signature);
    bytes.extend(public);
    bytes.extend(json);
    bytes
}

fn signed(key: &[u8; 32], json: &[u8]) -> Vec<u8> {
    let mut signed = REPORT_DOMAIN.to_vec();
    signed.extend(key);
    signed.extend(json);
    signed
}

/// A report whose signature verifies, with the key that signed it; or why not.
fn decode(bytes: &[u8]) -> Result<([u8; 32], Report), String> {
    if bytes.len() > REPORT_BYTES_MAX {
        return Err(format!("larger than {REPORT_BYTES_MAX} bytes"));
    }
    let Some((&REPORT_VERSION, rest)) = bytes.split_first() else {
        return Err("not a signed report".into());
    };
    if rest.len() < 64 + 32 {
        return Err("too short to be signed".into());
    }
    let (signature, rest) = rest.split_at(64);
    let (key, json) = rest.split_at(32);
    let key: [u8; 32] = key.try_into().expect("split at 32");
    let signature = Signature::from_bytes(signature.try_into().expect("split at 64"));
    VerifyingKey::from_bytes(&key)
        .map_err(|_| "its key is not an Ed25519 key".to_string())?
        .verify(&signed(&key, json), &signature)
        .map_err(|_| "its signature does not verify".to_string())?;
    let report = serde_json::from_slice(json).map_err(|error| format!("undecodable: {error}"))?;
    Ok((key, report))
}

/// Whether `key` is admitted as the node the report names.
fn admitted(state: &RwLock<State>, key: &[u8; 32], report: &Report) -> Result<(), String> {
    match state.read().expect("state lock").cluster_node(key) {
        Some(node) if node.name == report.name => Ok(()),
        Some(node) => Err(format!(
            "signed by node `{}`'s key but says it is `{}`",
            node.name, report.name
        )),
        None => Err(format!(
            "says it is `{}`, signed by a key the cluster has not admitted ({})",
            report.name,
            colony_kernel::cluster::key_hex(key)
        )),
    }
}

pub(crate) async fn run(inner: Arc<Inner>, state: Arc<RwLock<State>>) {
    let subject = inner.config.nodes_subject();
    let mut heard = match inner.client.subscribe(format!("{subject}.*")).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::warn!("cannot hear the other nodes of the cluster: {error}");
            return;
        }
    };
    let mut tell = tokio::time::interval(TELL_EVERY);
    while !inner.stopping.load(Ordering::Acquire) {
        tokio::select! {
            _ = tell.tick() => {
                let report = own(&inner);
                inner.peers.lock().expect("peers lock").heard(report.clone());
                let body = encode(&inner.key, &report);
                let _ = inner
                    .client
                    .publish(format!("{subject}.{}", inner.config.node_name), body.into())
                    .await;
                refresh_stream_last(&inner).await;
            }
            message = heard.next() => {
                let Some(message) = message else { return };
                let taken = decode(&message.payload);
                // Its own report coming back: the node holds it already (and, before
                // genesis or its admission, would refuse itself).
                if taken.as_ref().is_ok_and(|(key, _)| *key == inner.public_key) {
                    continue;
                }
                let taken = taken
                    .and_then(|(key, report)| admitted(&state, &key, &report).map(|()| report));
                let mut peers = inner.peers.lock().expect("peers lock");
                match taken {
                    Ok(report) => {
                        peers.compare(&inner.config.node_name, &report);
                        peers.heard(report);
                    }
                    Err(why) => peers.refuse(&why),
                }
            }
        }
    }
}

fn own(inner: &Inner) -> Report {
    let checkpoint = inner
        .peers
        .lock()
        .expect("peers lock")
        .own
        .last_key_value()
        .map(|(seq, head)| (*seq, head.clone()));
    Report {
        name: inner.config.node_name.clone(),
        applied_seq: *inner.applied.borrow(),
        at_ms: colony_pipeline::sequencer::now_ms(),
        connected: inner.connected(),
        checkpoint,
    }
}

async fn refresh_stream_last(inner: &Inner) -> Option<async_nats::jetstream::stream::Info> {
    if !inner.connected() {
        return None;
    }
    // Getting the stream asks the servers for its info (once: not again after).
    let info = inner
        .jetstream
        .get_stream(&inner.config.stream)
        .await
        .ok()?
        .cached_info()
        .clone();
    inner
        .stream_last
        .fetch_max(info.state.last_sequence, Ordering::Relaxed);
    inner
        .stream_first
        .fetch_max(info.state.first_sequence, Ordering::Relaxed);
    Some(info)
}

/// A node heard from within this long counts as live.
const LIVE_WITHIN_MS: u64 = 3_000;

/// The nodes heard from lately, this one included (at least 1).
pub(crate) fn live(inner: &Inner) -> u64 {
    let now = colony_pipeline::sequencer::now_ms();
    let peers = inner.peers.lock().expect("peers lock");
    let others = peers
        .nodes
        .values()
        .filter(|node| node.name != inner.config.node_name)
        .filter(|node| now.saturating_sub(node.at_ms) <= LIVE_WITHIN_MS)
        .count() as u64;
    others + 1
}

/// Whether this node's name sorts first among the live nodes: the one that does the
/// cluster's node-side watching (alerts, periodic reports); another takes over within
/// `LIVE_WITHIN_MS` of its going.
pub(crate) fn first_live(inner: &Inner) -> bool {
    let now = colony_pipeline::sequencer::now_ms();
    let me = &inner.config.node_name;
    !inner
        .peers
        .lock()
        .expect("peers lock")
        .nodes
        .values()
        .filter(|node| now.saturating_sub(node.at_ms) <= LIVE_WITHIN_MS)
        .any(|node| node.name < *me)
}

/// This node's view of the cluster.
pub(crate) async fn view(inner: &Inner) -> ClusterView {
    let info = tokio::time::timeout(inner.config.ack_timeout, refresh_stream_last(inner))
        .await
        .ok()
        .flatten();
    let stream_last = inner.stream_last.load(Ordering::Relaxed);
    let own = own(inner);
    let mut peers = inner.peers.lock().expect("peers lock");
    peers.heard(own.clone());
    let nodes = peers
        .nodes
        .values()
        .map(|node| NodeView {
            name: node.name.clone(),
            applied_seq: node.applied_seq,
            lag: stream_last.saturating_sub(node.applied_seq),
            seen_ms: node.at_ms,
            connected: node.connected,
            checkpoint_seq: node.checkpoint.as_ref().map(|(seq, _)| *seq),
            checkpoint_head: node.checkpoint.as_ref().map(|(_, head)| head.clone()),
        })
        .collect();
    let (divergences, divergence) = peers.divergence();
    ClusterView {
        // The node fills in its own key and the admitted ones.
        public_key: String::new(),
        admitted: Vec::new(),
        divergences,
        divergence,
        mode: "nats".into(),
        node: Some(inner.config.node_name.clone()),
        server: own
            .connected
            .then(|| inner.client.server_info().server_name),
        follows_from: inner
            .follows_from
            .lock()
            .expect("follows_from lock")
            .clone(),
        connected: own.connected,
        applied_seq: own.applied_seq,
        stream: info.map(|info| {
            let cluster = info.cluster.unwrap_or_default();
            StreamView {
                name: info.config.name,
                messages: info.state.messages,
                bytes: info.state.bytes,
                first_seq: info.state.first_sequence,
                last_seq: info.state.last_sequence,
                replicas: info.config.num_replicas,
                leader: cluster.leader,
                peers: cluster
                    .replicas
                    .into_iter()
                    .map(|peer| StreamPeer {
                        name: peer.name,
                        current: peer.current,
                        lag: peer.lag.unwrap_or(0),
                    })
                    .collect(),
            }
        }),
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, checkpoint: Option<(u64, &str)>) -> Report {
        Report {
            name: name.into(),
            applied_seq: 0,
            at_ms: 0,
            connected: true,
            checkpoint: checkpoint.map(|(seq, head)| (seq, head.to_string())),
        }
    }

    #[test]
    fn a_report_is_taken_only_as_its_key_signed_it() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let bytes = encode(&key, &report("node-2", Some((1_000, "aa"))));
        let (signer, decoded) = decode(&bytes).unwrap();
        assert_eq!(signer, key.verifying_key().to_bytes());
        assert_eq!(decoded.checkpoint, Some((1_000, "aa".to_string())));
        // The JSON changed after signing, the unsigned JSON of before, junk.
        let mut changed = bytes.clone();
        let at = changed.len() - 3;
        changed[at] ^= 1;
        assert!(decode(&changed).is_err());
        let json = serde_json::to_vec(&report("node-2", None)).unwrap();
        assert_eq!(decode(&json).unwrap_err(), "not a signed report");
        assert!(decode(&bytes[..90]).unwrap_err().contains("too short"));
        assert!(decode(&vec![1; REPORT_BYTES_MAX + 1])
            .unwrap_err()
            .contains("larger"));
        let mut peers = Peers::default();
        for _ in 0..5 {
            peers.refuse("a test");
        }
        assert_eq!(peers.refused(), 5);
    }

    #[test]
    fn a_checkpoint_that_disagrees_at_the_same_record_is_a_divergence() {
        let mut peers = Peers::default();
        peers.checkpoint(1_000, "aa".into());
        peers.checkpoint(2_000, "bb".into());
        // Agreeing, not yet comparable, or one's own: nothing.
        peers.compare("node-1", &report("node-2", Some((1_000, "aa"))));
        peers.compare("node-1", &report("node-2", Some((3_000, "cc"))));
        peers.compare("node-1", &report("node-1", Some((2_000, "zz"))));
        peers.compare("node-1", &report("node-2", None));
        assert_eq!(peers.divergence(), (0, None));
        peers.compare("node-1", &report("node-3", Some((2_000, "bx"))));
        let (count, evidence) = peers.divergence();
        assert_eq!(count, 1);
        assert!(evidence
            .unwrap()
            .contains("node `node-3` has chain hash bx at decision record 2000"));
        // The same evidence again is one divergence, not two.
        peers.compare("node-1", &report("node-3", Some((2_000, "bx"))));
        assert_eq!(peers.divergence().0, 1);
        for n in 0..100 {
            peers.checkpoint(10_000 + n, "x".into());
        }
        assert_eq!(peers.own.len(), CHECKPOINTS_KEPT);
    }
}
