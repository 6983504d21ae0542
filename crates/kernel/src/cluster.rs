//! Who may write a cluster's log. In a cluster every command is proposed by a node
//! that signs it with its Ed25519 key; the node's applier checks the signature
//! before the command reaches the kernel (a command whose signature does not verify
//! is decided as a tick) and hands the kernel the command's [`Origin`]. The kernel
//! then refuses, as a logged decision with the evidence and without applying it, a
//! command from a key that is not one of the cluster's admitted nodes, and one whose
//! node sequence number was applied before (a captured command published again).
//! The admitted keys change only by logged decisions: the genesis command's key is
//! the first, an admin admits (`AdmitNode`) and removes (`RemoveNode`) the others.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A node's raw Ed25519 public key.
pub type NodeKey = [u8; 32];

/// Node sequence numbers below a node's highest by more than this are refused as
/// too old; within it, each is taken once (proposals of one node may reach the log
/// out of their order, never this far).
pub const REPLAY_WINDOW: u64 = 4_096;
/// Nodes a cluster admits at most.
pub const CLUSTER_NODES_MAX: usize = 64;
/// Longest node name.
pub const NODE_NAME_CHARS_MAX: usize = 64;

/// Which node proposed a command, as its applier verified the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The name the node gave itself (`--node-name`), signed with the command.
    pub node: String,
    pub key: NodeKey,
    /// The node's own number for the command: never taken twice.
    pub node_seq: u64,
}

/// Where a command stood in a cluster's log: the stream's message that carried it
/// (its sequence number in the stream) and its place among that message's commands.
/// A message carries the commands a node proposed together (one or more), so the
/// kernel's sequence numbers run ahead of the stream's; a node that restarts follows
/// the stream again from the place of the last command it applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogPlace {
    /// The message's sequence number in the stream.
    pub message: u64,
    /// The command's place among the message's commands, from 0.
    pub index: u16,
    /// How many commands the message carries.
    pub count: u16,
}

impl LogPlace {
    /// Where following the stream goes on after this command: the message to read
    /// and how many of its first commands are applied already.
    pub fn next(&self) -> (u64, u16) {
        if self.index.saturating_add(1) >= self.count {
            (self.message.saturating_add(1), 0)
        } else {
            (self.message, self.index + 1)
        }
    }
}

/// An admitted node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    pub key: NodeKey,
    pub admitted_at_ms: u64,
    /// Who admitted it (an address; `genesis` for the first).
    pub admitted_by: String,
    pub justification: String,
    /// The highest node sequence number applied from it.
    pub highest_seq: u64,
    /// The numbers applied within [`REPLAY_WINDOW`] of the highest.
    recent: BTreeSet<u64>,
}

impl ClusterNode {
    pub fn new(name: String, key: NodeKey, at_ms: u64, by: String, why: String) -> ClusterNode {
        ClusterNode {
            name,
            key,
            admitted_at_ms: at_ms,
            admitted_by: by,
            justification: why,
            highest_seq: 0,
            recent: BTreeSet::new(),
        }
    }

    /// Takes `node_seq` once, or says why not.
    pub(crate) fn take(&mut self, node_seq: u64) -> Result<(), String> {
        if node_seq == 0 || node_seq + REPLAY_WINDOW <= self.highest_seq {
            return Err(format!(
                "node sequence {node_seq} is older than the replay window ({} back from {})",
                REPLAY_WINDOW, self.highest_seq
            ));
        }
        if !self.recent.insert(node_seq) {
            return Err(format!(
                "node sequence {node_seq} was applied before: a command published again"
            ));
        }
        self.highest_seq = self.highest_seq.max(node_seq);
        let floor = self.highest_seq.saturating_sub(REPLAY_WINDOW);
        while self.recent.first().is_some_and(|first| *first <= floor) {
            self.recent.pop_first();
        }
        Ok(())
    }

    /// Node sequence numbers remembered (bounded by [`REPLAY_WINDOW`]).
    pub fn remembered(&self) -> usize {
        self.recent.len()
    }
}

/// A key in lowercase hex, as decisions name it.
pub fn key_hex(key: &NodeKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` can name a node: 1 to [`NODE_NAME_CHARS_MAX`] ASCII letters,
/// digits, `-`, `_` and `.`.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= NODE_NAME_CHARS_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "a node's name is 1 to {NODE_NAME_CHARS_MAX} letters, digits, `-`, `_` or `.`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_taken_once_within_the_window() {
        let mut node = ClusterNode::new("n".into(), [1; 32], 0, "genesis".into(), "".into());
        node.take(5).unwrap();
        node.take(3).unwrap(); // out of order, within the window
        assert!(node.take(5).unwrap_err().contains("applied before"));
        assert!(node.take(0).is_err());
        node.take(5 + REPLAY_WINDOW).unwrap();
        assert!(node.take(5).unwrap_err().contains("older"));
        assert!(node.take(3).unwrap_err().contains("older"));
        node.take(6).unwrap();
        for n in 0..3 * REPLAY_WINDOW {
            let _ = node.take(10 * REPLAY_WINDOW + n);
        }
        assert!(node.remembered() <= REPLAY_WINDOW as usize);
    }
}
