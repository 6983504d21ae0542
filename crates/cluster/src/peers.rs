//! Each node tells the others, every second on plain NATS, which command it has
//! applied and its newest checkpoint (the decision log's chain hash at a record
//! number every node hashes: a multiple of `audit.toml`'s `every`); `GET
//! /v1/cluster` shows them with their lag behind the stream. A checkpoint of another
//! node that disagrees with this node's own at the same record is a divergence,
//! which must never happen: it is logged as an error, counted, and shown.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use colony_api::cluster::{ClusterView, NodeView, StreamPeer, StreamView};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster::Inner;

/// At most this many nodes are remembered (the ones heard from last are kept).
pub(crate) const PEERS_MAX: usize = 256;
/// How often a node tells the others.
const TELL_EVERY: Duration = Duration::from_secs(1);
/// A node's report is at most this many bytes; larger ones are ignored.
const REPORT_BYTES_MAX: usize = 1024;

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

pub(crate) async fn run(inner: Arc<Inner>) {
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
                let body = serde_json::to_vec(&report).expect("a report encodes");
                let _ = inner
                    .client
                    .publish(format!("{subject}.{}", inner.config.node_name), body.into())
                    .await;
                refresh_stream_last(&inner).await;
            }
            message = heard.next() => {
                let Some(message) = message else { return };
                if message.payload.len() > REPORT_BYTES_MAX {
                    continue;
                }
                if let Ok(report) = serde_json::from_slice::<Report>(&message.payload) {
                    let mut peers = inner.peers.lock().expect("peers lock");
                    peers.compare(&inner.config.node_name, &report);
                    peers.heard(report);
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
    let stream = inner
        .jetstream
        .get_stream(&inner.config.stream)
        .await
        .ok()?;
    let info = stream.get_info().await.ok()?;
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
