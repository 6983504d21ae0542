//! The agent bus: authenticated pub/sub over WebSocket (`GET /v1/bus`).
//!
//! - [`ws`]: the WebSocket codec (handshake key, incremental frame decoder).
//! - [`subject`]: the routing trie over dot-separated subjects with `*` and `>`.
//! - [`session`]: one task per busy connection: reads frames, routes publishes, and
//!   writes the connection's outbound queue; an idle one parks without a task.
//! - [`streams`]: durable streams: append-only logs, replay, acks, redelivery, dead
//!   letters.
//! - [`meter`]: edge gating of publishes (io_ops per message, `data_creation_bytes`).
//! - [`policy`]: who may publish and subscribe where.
//!
//! Every connection has one outbound queue with four priority lanes and a control
//! lane. Publishers never wait on subscribers: a message that does not fit a
//! subscriber's queue is handled by the subscription's backpressure policy.
//!
//! It owns routing, sessions, outbound queues and stream storage. It changes the
//! kernel's state only through the pipeline's `Submitter` (worker sessions, edge
//! charges), hears of decisions as the pipeline's `DecisionSink`, and never serves
//! HTTP: the node upgrades the connection and hands it to [`session::run`].
//!
//! The crate's files: [`msg`] (a message and one delivery of it), [`conn`] (a
//! connection's outbound lanes and backpressure), [`events`] (what the bus publishes
//! itself: decisions, alerts, task offers, admissions), and this file: `Bus`,
//! its connections, routing and queue groups.

pub mod config;
mod conn;
mod credit;
mod events;
pub mod inside;
pub mod lease;
pub mod liveness;
pub mod meter;
mod msg;
pub mod policy;
mod registry;
pub mod relay;
pub mod session;
pub mod stream_replica;
pub mod streams;
pub mod subject;
#[cfg(test)]
mod test_kernel;
pub mod ws;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use colony_kernel::{PrincipalId, State};
use serde_json::value::RawValue;

pub use config::BusConfig;
pub use conn::{frame_id, Backpressure, Conn, Pushed, Sub};
use events::may_match_events;
pub use events::{OfferListener, GRANTS_SUBJECT, TASK_OFFERS_SUBJECT};
pub use msg::{Delivery, Msg, MsgParts, Sid};
pub use registry::Full;
use subject::{Tokens, Trie};

/// What routing one message did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    pub delivered: usize,
    pub dropped: usize,
    pub rejected: usize,
    pub disconnected: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct BusMetrics {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    /// Connections refused because their principal held its maximum.
    pub refused_per_principal: AtomicU64,
    /// Worker commands refused because the connection had its maximum in flight.
    pub worker_ops_refused: AtomicU64,
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub denied: AtomicU64,
    pub bad_frames: AtomicU64,
    /// Idle connections parked without a task (see `session::park`).
    pub parked: AtomicU64,
}

impl BusMetrics {
    /// Adds what routing did (for one message or a batch) to the counters.
    pub(crate) fn count_routed(&self, routed: &Routed) {
        self.delivered
            .fetch_add(routed.delivered as u64, Ordering::Relaxed);
        if routed.dropped > 0 {
            self.dropped
                .fetch_add(routed.dropped as u64, Ordering::Relaxed);
        }
        if routed.rejected > 0 {
            self.rejected
                .fetch_add(routed.rejected as u64, Ordering::Relaxed);
        }
    }

    /// Adds `messages` published, of `bytes` of data in all.
    pub(crate) fn count_published(&self, messages: u64, bytes: u64) {
        self.published.fetch_add(messages, Ordering::Relaxed);
        self.published_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The bus of one node.
pub struct Bus {
    pub config: BusConfig,
    router: RwLock<Trie<Arc<Sub>>>,
    pub streams: streams::Streams,
    pub meters: meter::Meters,
    pub state: Arc<RwLock<State>>,
    pub metrics: BusMetrics,
    next_conn: AtomicU64,
    round_robin: AtomicUsize,
    /// Subscriptions that may match `colony.events.>`: the sequencer publishes
    /// kernel events only while there is one.
    events_interest: AtomicUsize,
    /// For worker sessions (`hello`) and dropped-connection reports.
    pub submitter: colony_pipeline::sequencer::Submitter,
    /// Which connection speaks for each worker session (the latest `hello`).
    pub(crate) worker_conns: Mutex<std::collections::HashMap<u64, u64>>,
    /// Open connections (to close them) and how many each principal holds.
    pub(crate) conns: registry::Registry,
    shutting_down: std::sync::atomic::AtomicBool,
    /// In a cluster: where this node's publishes go (see [`relay`]).
    relay: std::sync::OnceLock<Arc<dyn relay::Relay>>,
    /// Queue subscriptions on this node by (group, pattern), for the relay.
    queue_groups: Mutex<std::collections::HashMap<(String, String), usize>>,
    /// Worker heartbeats heard in memory (see [`liveness`]); `None` in a cluster,
    /// where they are logged commands.
    pub liveness: Option<Arc<liveness::Liveness>>,
    /// The runtime parked sessions are resumed on (set at the first park).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// What else hears of claimable tasks (see [`events::OfferListener`]).
    offer_listener: std::sync::OnceLock<Arc<dyn events::OfferListener>>,
}

impl Bus {
    /// The node's bus; `leased` in a cluster, where publishes spend the node's
    /// leases (see [`lease`]).
    pub fn new(
        config: BusConfig,
        state: Arc<RwLock<State>>,
        streams: streams::Streams,
        submitter: colony_pipeline::sequencer::Submitter,
        leased: bool,
    ) -> Arc<Bus> {
        Arc::new(Bus {
            liveness: (!leased).then(|| Arc::new(liveness::Liveness::new(Arc::clone(&state)))),
            submitter,
            conns: registry::Registry::default(),
            worker_conns: Mutex::new(std::collections::HashMap::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            relay: std::sync::OnceLock::new(),
            runtime: std::sync::OnceLock::new(),
            offer_listener: std::sync::OnceLock::new(),
            queue_groups: Mutex::new(std::collections::HashMap::new()),
            meters: if leased {
                meter::Meters::leased(Arc::clone(&state))
            } else {
                meter::Meters::new(Arc::clone(&state))
            },
            config,
            router: RwLock::new(Trie::new()),
            streams,
            state,
            metrics: BusMetrics::default(),
            next_conn: AtomicU64::new(1),
            round_robin: AtomicUsize::new(0),
            events_interest: AtomicUsize::new(0),
        })
    }

    /// A new connection for an authenticated principal, or why not: the node holds
    /// `connections_max` already, or the principal `connections_per_principal_max`.
    /// The node's count is raised before it is checked, so that concurrent upgrades
    /// cannot pass the bound together.
    pub fn connect(
        &self,
        principal: PrincipalId,
        address: &str,
        token: u64,
        token_expires_at_ms: Option<u64>,
    ) -> Result<Arc<Conn>, Full> {
        let before = self.metrics.connections.fetch_add(1, Ordering::AcqRel);
        if before as usize >= self.config.connections_max {
            self.metrics.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Node {
                max: self.config.connections_max,
            });
        }
        let conn = Arc::new(Conn::new(
            self.next_conn.fetch_add(1, Ordering::Relaxed),
            principal,
            address.into(),
            (token, token_expires_at_ms),
            &self.config,
        ));
        if let Err(full) = self
            .conns
            .add(&conn, self.config.connections_per_principal_max)
        {
            self.metrics.connections.fetch_sub(1, Ordering::AcqRel);
            self.metrics
                .refused_per_principal
                .fetch_add(1, Ordering::Relaxed);
            return Err(full);
        }
        self.metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Forgets a connection that ended, or whose upgrade never completed; once.
    pub fn disconnected(&self, conn: &Conn) {
        if self.conns.remove(conn) {
            self.metrics.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Closes the connections made with `token` (1008, policy): it was revoked.
    pub fn close_token(&self, token: u64) -> usize {
        self.close_where(
            |conn| conn.token == token,
            ws::CLOSE_POLICY,
            "the connection's token was revoked",
        )
    }

    /// Closes every connection of `principal` (1008, policy): it was removed.
    pub fn close_principal(&self, principal: PrincipalId) -> usize {
        self.close_where(
            |conn| conn.principal == principal,
            ws::CLOSE_POLICY,
            "the connection's principal was removed",
        )
    }

    /// Closes the connections `which` selects with `code` and `reason`; how many.
    fn close_where(&self, which: impl Fn(&Conn) -> bool, code: u16, reason: &str) -> usize {
        let conns = self.conns.select(which);
        for conn in &conns {
            conn.close(code, reason);
        }
        conns.len()
    }

    /// Closes every connection (1001, going away): the node is stopping.
    pub fn close_all(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.close_where(
            |_| true,
            1001,
            "the node is stopping; reconnect and resume (hello with your worker id)",
        );
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self, pattern: &str, sub: Arc<Sub>) {
        if may_match_events(pattern) {
            self.events_interest.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(group) = sub.queue.as_deref() {
            self.count_queue_member(group, pattern, true);
        }
        self.router
            .write()
            .expect("router lock")
            .insert(pattern, sub);
    }

    pub fn unsubscribe(&self, pattern: &str, sub: &Arc<Sub>) {
        let removed = self
            .router
            .write()
            .expect("router lock")
            .remove(pattern, |other| Arc::ptr_eq(other, sub));
        if removed.is_some() && may_match_events(pattern) {
            self.events_interest.fetch_sub(1, Ordering::Relaxed);
        }
        if let (Some(_), Some(group)) = (removed, sub.queue.as_deref()) {
            self.count_queue_member(group, pattern, false);
        }
    }

    /// Whether anyone may be listening to kernel events.
    pub fn wants_events(&self) -> bool {
        self.events_interest.load(Ordering::Relaxed) > 0
    }

    /// Whether any core subscription matches `subject`.
    pub fn has_subscribers(&self, subject: &str) -> bool {
        self.router.read().expect("router lock").has_match(subject)
    }

    /// Delivers a message to every matching core subscription (one member per queue
    /// group) of this node only. Never waits.
    pub fn route(&self, msg: &Arc<Msg>) -> Routed {
        match Tokens::of(msg.subject()) {
            Some(tokens) => {
                let routed = self.route_reaching(msg, &tokens, relay::Reach::All);
                self.count(&routed);
                routed
            }
            // No subscription is for more tokens than a subject may have.
            None => Routed::default(),
        }
    }

    /// Adds what routing one message did to `/metrics` (a session's publishes add
    /// theirs once a batch instead: `credit.rs`).
    pub(crate) fn count(&self, routed: &Routed) {
        self.metrics.count_routed(routed);
    }

    /// [`Bus::route`] to the plain subscriptions, the queue groups, or one group;
    /// `tokens` are the message's subject's.
    pub(crate) fn route_reaching(
        &self,
        msg: &Arc<Msg>,
        tokens: &Tokens,
        reach: relay::Reach,
    ) -> Routed {
        let mut routed = Routed::default();
        let offer = |sub: &Arc<Sub>, routed: &mut Routed| {
            let delivery = Delivery {
                sid: sub.sid.clone(),
                msg: Arc::clone(msg),
                delivery: 0,
            };
            match conn::push_deferring(&sub.conn, delivery, sub.policy) {
                Pushed::Queued => routed.delivered += 1,
                Pushed::Dropped(n) => {
                    routed.delivered += 1;
                    routed.dropped += n;
                }
                Pushed::Rejected => routed.rejected += 1,
                Pushed::Disconnected => routed.disconnected += 1,
            }
        };
        // Plain subscriptions are offered the message while the trie is walked;
        // queue group members are gathered to pick one per group.
        let mut queued: Vec<Arc<Sub>> = Vec::new();
        self.router.read().expect("router lock").visit_tokens(
            tokens,
            &mut |sub: &Arc<Sub>| match (sub.queue.as_deref(), reach) {
                (None, relay::Reach::All | relay::Reach::Plain) => offer(sub, &mut routed),
                (Some(_), relay::Reach::All) => queued.push(Arc::clone(sub)),
                (Some(group), relay::Reach::Queue(wanted)) if group == wanted => {
                    queued.push(Arc::clone(sub))
                }
                _ => {}
            },
        );
        if !queued.is_empty() {
            let mut groups: Vec<(&str, Vec<&Arc<Sub>>)> = Vec::new();
            for sub in &queued {
                let queue = sub.queue.as_deref().expect("queue member");
                match groups.iter_mut().find(|(name, _)| *name == queue) {
                    Some((_, members)) => members.push(sub),
                    None => groups.push((queue, vec![sub])),
                }
            }
            for (_, members) in groups {
                // Round robin over the members that are not closing.
                let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
                let live: Vec<&&Arc<Sub>> =
                    members.iter().filter(|s| !s.conn.is_closing()).collect();
                if let Some(sub) = live.get(start % live.len().max(1)) {
                    offer(sub, &mut routed);
                }
            }
        }
        routed
    }
}

/// Checks that `raw` is a JSON object whose values are strings.
pub fn check_headers(raw: &RawValue) -> Result<(), String> {
    serde_json::from_str::<std::collections::BTreeMap<String, String>>(raw.get())
        .map(|_| ())
        .map_err(|_| "headers must be a JSON object of strings".to_string())
}
