//! The bus across nodes, over plain NATS: each node publishes what its clients
//! publish on `colony.bus.<stream>.m.<subject>` (the frame's JSON as the payload,
//! the priority and the origin node in headers); every node subscribes to
//! `colony.bus.<stream>.m.>` for its plain subscriptions (skipping its own), and
//! holds one NATS queue subscription per queue group and pattern present here, so
//! that NATS picks one node's members of a group for each message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use colony_bus::relay::{Relay, Remote};
use colony_bus::Bus;
use colony_kernel::Priority;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::cluster::Cluster;

/// Messages waiting to be relayed, at most; past it they are dropped and counted.
pub const RELAY_QUEUE_MAX: usize = 65_536;

const ORIGIN: &str = "Colony-Node";
const PRIORITY: &str = "Colony-Priority";

/// One node's relay (see the module's documentation).
pub struct BusRelay {
    prefix: String,
    node: String,
    client: async_nats::Client,
    outbound: mpsc::Sender<(String, Priority, Vec<u8>)>,
    /// Queue subscriptions by (group, pattern): the task reading each.
    queues: Mutex<HashMap<(String, String), tokio::task::JoinHandle<()>>>,
    bus: std::sync::Weak<Bus>,
    me: std::sync::Weak<BusRelay>,
    /// Messages dropped because the relay's queue was full.
    pub dropped: AtomicU64,
    /// Messages relayed out, and in.
    pub relayed_out: AtomicU64,
    pub relayed_in: AtomicU64,
}

impl BusRelay {
    /// Starts relaying `bus`'s publishes through the cluster's NATS connection, and
    /// attaches itself to the bus.
    pub async fn start(cluster: &Cluster, bus: &Arc<Bus>) -> Arc<BusRelay> {
        let inner = &cluster.inner;
        let (outbound, mut queued) = mpsc::channel(RELAY_QUEUE_MAX);
        let relay = Arc::new_cyclic(|me| BusRelay {
            me: me.clone(),
            prefix: format!("colony.bus.{}.m", inner.config.stream),
            node: inner.config.node_name.clone(),
            client: inner.client.clone(),
            outbound,
            queues: Mutex::new(HashMap::new()),
            bus: Arc::downgrade(bus),
            dropped: AtomicU64::new(0),
            relayed_out: AtomicU64::new(0),
            relayed_in: AtomicU64::new(0),
        });
        // Out: in the order published.
        {
            let relay = Arc::clone(&relay);
            tokio::spawn(async move {
                while let Some((subject, priority, tail)) = queued.recv().await {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(ORIGIN, relay.node.as_str());
                    headers.insert(PRIORITY, priority.as_str());
                    let sent = relay
                        .client
                        .publish_with_headers(
                            format!("{}.{subject}", relay.prefix),
                            headers,
                            tail.into(),
                        )
                        .await;
                    if sent.is_ok() {
                        relay.relayed_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // In, for the plain subscriptions.
        match relay.client.subscribe(format!("{}.>", relay.prefix)).await {
            Ok(mut subscriber) => {
                let relay = Arc::clone(&relay);
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        let mine = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(ORIGIN))
                            .is_some_and(|origin| origin.as_str() == relay.node);
                        if !mine {
                            relay.deliver(&message, Remote::Plain);
                        }
                    }
                });
            }
            Err(error) => tracing::warn!("the bus cannot hear the other nodes: {error}"),
        }
        bus.relay_through(Arc::clone(&relay) as Arc<dyn Relay>);
        relay
    }

    /// Routes a relayed message to this node's subscriptions.
    fn deliver(&self, message: &async_nats::Message, remote: Remote) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let Some(subject) = message
            .subject
            .as_str()
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            return;
        };
        let priority = message
            .headers
            .as_ref()
            .and_then(|h| h.get(PRIORITY))
            .and_then(|p| Priority::parse(p.as_str()))
            .unwrap_or(Priority::Normal);
        self.relayed_in.fetch_add(1, Ordering::Relaxed);
        bus.route_remote(subject, priority, message.payload.to_vec().into(), remote);
    }
}

impl Relay for BusRelay {
    fn publish(&self, subject: &str, priority: Priority, tail: &[u8]) {
        if self
            .outbound
            .try_send((subject.to_string(), priority, tail.to_vec()))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn queue_interest(&self, group: &str, pattern: &str, present: bool) {
        let key = (group.to_string(), pattern.to_string());
        let mut queues = self.queues.lock().expect("queues lock");
        if !present {
            if let Some(task) = queues.remove(&key) {
                task.abort(); // dropping the subscription unsubscribes
            }
            return;
        }
        if queues.contains_key(&key) {
            return;
        }
        let client = self.client.clone();
        let subject = format!("{}.{pattern}", self.prefix);
        let queue = group.to_string();
        let relay = self.me.clone();
        let group = group.to_string();
        let task = tokio::spawn(async move {
            let Ok(mut subscriber) = client.queue_subscribe(subject, queue).await else {
                return;
            };
            while let Some(message) = subscriber.next().await {
                if let Some(relay) = relay.upgrade() {
                    relay.deliver(&message, Remote::Queue(&group));
                }
            }
        });
        queues.insert(key, task);
    }
}
