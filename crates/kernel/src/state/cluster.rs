//! A cluster's admitted node keys, and the check of every command's origin against
//! them (see `cluster.rs`).

use super::*;
use crate::cluster::{check_node_name, key_hex, ClusterNode, NodeKey, Origin, CLUSTER_NODES_MAX};

/// The part of the state that holds a cluster's admitted nodes, by key (none on an
/// embedded node). It encodes as the map the state held before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Admitted {
    by_key: BTreeMap<NodeKey, ClusterNode>,
}

impl Admitted {
    fn get(&self, key: &NodeKey) -> Option<&ClusterNode> {
        self.by_key.get(key)
    }

    /// Node `key` to change (its highest node sequence): never its key.
    fn edit(&mut self, key: &NodeKey) -> Option<&mut ClusterNode> {
        self.by_key.get_mut(key)
    }

    fn all(&self) -> impl Iterator<Item = &ClusterNode> {
        self.by_key.values()
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn admit(&mut self, key: NodeKey, node: ClusterNode) {
        self.by_key.insert(key, node);
    }

    fn remove(&mut self, key: &NodeKey) -> Option<ClusterNode> {
        self.by_key.remove(key)
    }
}

impl State {
    /// Every admitted node, by key.
    pub fn cluster_nodes(&self) -> impl Iterator<Item = &ClusterNode> {
        self.cluster_nodes.all()
    }

    /// In a cluster, where the last command applied stood in the cluster's log (the
    /// node follows the stream on from there when it restarts).
    pub fn log_place(&self) -> Option<crate::cluster::LogPlace> {
        self.log_place
    }

    /// The admitted node with `key`.
    pub fn cluster_node(&self, key: &NodeKey) -> Option<&ClusterNode> {
        self.cluster_nodes.get(key)
    }

    /// Takes a command's origin, or refuses the command: a key that is not
    /// admitted (none is before genesis, whose own key becomes the first), or a node
    /// sequence number taken before.
    pub(super) fn check_origin(
        &mut self,
        command: &Command,
        origin: &Origin,
    ) -> Result<(), Box<Event>> {
        const ACTION: &str = "cluster.refused";
        let subject = format!("node:{}", origin.node);
        let evidence = |why: String| {
            Box::new(Event::denied(
                ACTION,
                subject.clone(),
                forbidden(format!(
                    "{} (a {} signed by key {} of node `{}`, node sequence {}): {why}; nothing of it was applied",
                    command.body.name(),
                    "command",
                    key_hex(&origin.key),
                    origin.node,
                    origin.node_seq
                )),
            ))
        };
        if self.cluster_nodes.is_empty() {
            return match command.body {
                CommandBody::Genesis(_) => Ok(()),
                _ => Err(evidence(
                    "no node of this cluster is admitted: its log starts with a genesis".into(),
                )),
            };
        }
        let Some(node) = self.cluster_nodes.edit(&origin.key) else {
            return Err(evidence(
                "the key is not one of the cluster's admitted nodes (an admin admits a node's key: colony cluster admit)".into(),
            ));
        };
        node.take(origin.node_seq).map_err(evidence)
    }

    /// The genesis command's key: the cluster's first node.
    pub(super) fn admit_genesis_node(&mut self, command: &Command, origin: &Origin) {
        let mut node = ClusterNode::new(
            origin.node.clone(),
            origin.key,
            command.at_ms,
            "genesis".into(),
            command.justification.clone(),
        );
        let _ = node.take(origin.node_seq);
        self.cluster_nodes.admit(origin.key, node);
    }

    pub(super) fn admit_node(
        &mut self,
        command: &Command,
        actor_address: &str,
        name: &str,
        key: &NodeKey,
    ) -> Event {
        const ACTION: &str = "cluster.admit";
        let subject = format!("node:{name}");
        if let Err(message) = check_node_name(name) {
            return Event::denied(ACTION, subject, invalid(message));
        }
        if let Some(known) = self.cluster_nodes.get(key) {
            let message = format!("the key is admitted already, as node `{}`", known.name);
            return Event::denied(ACTION, subject, invalid(message));
        }
        if self.cluster_nodes.len() >= CLUSTER_NODES_MAX {
            let message = format!("a cluster admits at most {CLUSTER_NODES_MAX} nodes");
            return Event::denied(ACTION, subject, invalid(message));
        }
        self.cluster_nodes.admit(
            *key,
            ClusterNode::new(
                name.to_string(),
                *key,
                command.at_ms,
                actor_address.to_string(),
                command.justification.clone(),
            ),
        );
        Event::allowed(
            ACTION,
            subject,
            Effect::NodeAdmitted {
                name: name.to_string(),
                key: key_hex(key),
            },
        )
    }

    pub(super) fn remove_node(&mut self, key: &NodeKey) -> Event {
        const ACTION: &str = "cluster.remove";
        let Some(node) = self.cluster_nodes.get(key) else {
            return Event::denied(ACTION, key_hex(key), not_found("node key", key_hex(key)));
        };
        let subject = format!("node:{}", node.name);
        if self.cluster_nodes.len() == 1 {
            return Event::denied(
                ACTION,
                subject,
                invalid("the last admitted node is never removed: nothing could write the log"),
            );
        }
        let node = self.cluster_nodes.remove(key).expect("found above");
        Event::allowed(
            ACTION,
            subject,
            Effect::NodeRemoved {
                name: node.name,
                key: key_hex(key),
            },
        )
    }
}
