//! The bus across nodes: in a cluster a [`Relay`] (colony-cluster's, over NATS)
//! carries each message published on this node to the others, and brings theirs
//! here ([`Bus::route_remote`]).
//!
//! Plain subscriptions get a message from the node it was published on directly,
//! and from the others through the relay. Queue groups are picked cluster-wide: once
//! a relay is attached, a node routes no message to its queue groups itself; the
//! relay holds one queue subscription per (group, pattern) present on this node,
//! and the message goes to one node's members of each group, whichever node it was
//! published on ([`Relay::queue_interest`] tells it when a group appears or goes).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use colony_kernel::Priority;

use crate::subject::Tokens;
use crate::{Bus, Msg, Routed};

/// Carries this node's publishes to the other nodes of a cluster. Never waits: a
/// relay that cannot keep up drops and counts.
pub trait Relay: Send + Sync + 'static {
    /// A message published here (already routed to this node's plain
    /// subscriptions): `tail` is the frame's JSON after its `sid`.
    fn publish(&self, subject: &str, priority: Priority, tail: &[u8]);
    /// Queue group `group` on `pattern` got its first member on this node
    /// (`present`), or lost its last.
    fn queue_interest(&self, group: &str, pattern: &str, present: bool);
}

/// Which subscriptions a remote message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote<'a> {
    /// Plain subscriptions (a message published on another node).
    Plain,
    /// The members of one queue group (picked for it cluster-wide).
    Queue(&'a str),
}

/// Which local subscriptions a routing offers a message to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach<'a> {
    All,
    Plain,
    Queue(&'a str),
}

impl Bus {
    /// From now on this node's publishes also go to `relay`, and its queue groups
    /// are served through it. False when one was attached already.
    pub fn relay_through(&self, relay: Arc<dyn Relay>) -> bool {
        let groups: Vec<(String, String)> = self
            .queue_groups
            .lock()
            .expect("queue groups lock")
            .keys()
            .cloned()
            .collect();
        if self.relay.set(Arc::clone(&relay)).is_err() {
            return false;
        }
        for (group, pattern) in groups {
            relay.queue_interest(&group, &pattern, true);
        }
        true
    }

    /// Routes a message another node relayed here.
    pub fn route_remote(
        &self,
        subject: &str,
        priority: Priority,
        tail: Box<[u8]>,
        remote: Remote,
    ) -> Routed {
        // Another node made the tail from the same subject; one that does not
        // begin with it, or a subject no publish could have, is not routed (and
        // counted as dropped: a node of another version, or a bug, says so here).
        let (Some(msg), Some(tokens)) =
            (Msg::relayed(subject, priority, tail), Tokens::of(subject))
        else {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                subject,
                "a relayed message does not match its subject: not routed"
            );
            return Routed {
                dropped: 1,
                ..Routed::default()
            };
        };
        let reach = match remote {
            Remote::Plain => Reach::Plain,
            Remote::Queue(group) => Reach::Queue(group),
        };
        let routed = self.route_reaching(&Arc::new(msg), &tokens, reach);
        self.count(&routed);
        routed
    }

    /// Routes a message published here, and relays it when in a cluster.
    pub(crate) fn route_published(&self, msg: Arc<Msg>, tokens: &Tokens) -> Routed {
        match self.relay.get() {
            None => self.route_reaching(&msg, tokens, Reach::All),
            Some(relay) => {
                let routed = self.route_reaching(&msg, tokens, Reach::Plain);
                relay.publish(msg.subject(), msg.priority, &msg.tail);
                routed
            }
        }
    }

    /// Counts a queue subscription made or dropped, telling the relay when a
    /// (group, pattern) appears or goes.
    pub(crate) fn count_queue_member(&self, group: &str, pattern: &str, joined: bool) {
        let key = (group.to_string(), pattern.to_string());
        let mut groups = self.queue_groups.lock().expect("queue groups lock");
        let changed = if joined {
            let count = groups.entry(key).or_insert(0);
            *count += 1;
            *count == 1
        } else {
            match groups.get_mut(&key) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    groups.remove(&key);
                    true
                }
                None => false,
            }
        };
        drop(groups);
        if changed {
            if let Some(relay) = self.relay.get() {
                relay.queue_interest(group, pattern, joined);
            }
        }
    }
}
