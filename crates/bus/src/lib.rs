//! The agent bus: authenticated pub/sub over WebSocket (`GET /v1/bus`).
//!
//! - [`ws`]: the WebSocket codec (handshake key, incremental frame decoder).
//! - [`subject`]: the routing trie over dot-separated subjects with `*` and `>`.
//! - [`session`]: one task per connection: reads frames, routes publishes, and writes
//!   the connection's outbound queue.
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
//! Why one file of ~860 lines: `Bus` (routing, subscriptions, queue groups) and `Conn`
//! (a connection's outbound lanes and their backpressure) share private state on the
//! publish path; the next split is `Conn` and its lanes into `conn.rs` (the
//! architecture issue), not done yet.

pub mod config;
pub mod meter;
pub mod policy;
pub mod session;
pub mod streams;
pub mod subject;
pub mod ws;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use colony_kernel::{PrincipalId, Priority, State};
use serde_json::value::RawValue;
use tokio::sync::Notify;

pub use config::BusConfig;
use subject::Trie;

/// A message as it is queued for delivery: the JSON of a `msg` frame after its
/// `sid` (and `delivery`) fields, built once however many subscribers get it.
#[derive(Debug)]
pub struct Msg {
    pub subject: Box<str>,
    pub priority: Priority,
    /// `"subject":...,"data":...,...}`: the rest of the frame.
    pub tail: Box<[u8]>,
    /// Stream sequence number (0 for a message that is not stored).
    pub seq: u64,
    pub at_ms: u64,
}

/// The parts of a published message.
#[derive(Clone, Copy, Debug)]
pub struct MsgParts<'a> {
    pub subject: &'a str,
    /// Raw JSON.
    pub data: &'a str,
    pub priority: Priority,
    pub from: &'a str,
    /// Raw JSON object of strings.
    pub headers: Option<&'a str>,
    pub reply_to: Option<&'a str>,
}

impl MsgParts<'_> {
    /// The frame tail; `stream` adds the stream's name, sequence number and time.
    pub fn tail(&self, stream: Option<(&str, u64, u64)>) -> Vec<u8> {
        let mut tail = String::with_capacity(80 + self.subject.len() + self.data.len());
        tail.push_str("\"subject\":\"");
        tail.push_str(self.subject);
        tail.push_str("\",\"data\":");
        tail.push_str(self.data);
        tail.push_str(",\"priority\":\"");
        tail.push_str(self.priority.as_str());
        tail.push_str("\",\"from\":\"");
        tail.push_str(self.from);
        tail.push('"');
        if let Some(headers) = self.headers {
            tail.push_str(",\"headers\":");
            tail.push_str(headers);
        }
        if let Some(reply_to) = self.reply_to {
            tail.push_str(",\"reply_to\":\"");
            tail.push_str(reply_to);
            tail.push('"');
        }
        if let Some((name, seq, at_ms)) = stream {
            tail.push_str(&format!(
                ",\"stream\":\"{name}\",\"seq\":{seq},\"time_ms\":{at_ms}"
            ));
        }
        tail.push('}');
        tail.into_bytes()
    }

    pub fn to_msg(&self, stream: Option<(&str, u64, u64)>) -> Msg {
        Msg {
            subject: self.subject.into(),
            priority: self.priority,
            tail: self.tail(stream).into_boxed_slice(),
            seq: stream.map_or(0, |s| s.1),
            at_ms: stream.map_or(0, |s| s.2),
        }
    }
}

/// One message for one subscription of a connection.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub sid: Arc<str>,
    pub msg: Arc<Msg>,
    /// How many times a stream message has been delivered to this consumer
    /// (0 for core messages, which carry no count).
    pub delivery: u32,
}

impl Delivery {
    /// Bytes the frame takes in the queue and on the wire, near enough.
    pub fn size(&self) -> usize {
        40 + self.sid.len() + self.msg.tail.len()
    }

    /// Appends the whole WebSocket frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let delivery = if self.delivery > 0 {
            format!(",\"delivery\":{}", self.delivery)
        } else {
            String::new()
        };
        let head_len = "{\"op\":\"msg\",\"sid\":\"".len() + self.sid.len() + 2 + delivery.len();
        ws::encode_header(ws::OP_TEXT, head_len + self.msg.tail.len(), out);
        out.extend_from_slice(b"{\"op\":\"msg\",\"sid\":\"");
        out.extend_from_slice(self.sid.as_bytes());
        out.push(b'"');
        out.extend_from_slice(delivery.as_bytes());
        out.push(b',');
        out.extend_from_slice(&self.msg.tail);
    }
}

/// What a subscription does when its connection's outbound queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backpressure {
    /// Drops the oldest queued messages, lowest priority first (the default).
    #[default]
    DropOldest,
    /// Keeps the queue; the publisher gets an `err` with code `backpressure`.
    RejectPublisher,
    /// Closes the slow connection (close code 1008).
    Disconnect,
}

impl Backpressure {
    pub fn parse(text: &str) -> Option<Backpressure> {
        match text {
            "drop_oldest" => Some(Backpressure::DropOldest),
            "reject_publisher" => Some(Backpressure::RejectPublisher),
            "disconnect" => Some(Backpressure::Disconnect),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backpressure::DropOldest => "drop_oldest",
            Backpressure::RejectPublisher => "reject_publisher",
            Backpressure::Disconnect => "disconnect",
        }
    }
}

/// What happened to one message offered to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping this many older messages (or this one, when everything
    /// queued was more urgent).
    Dropped(usize),
    Rejected,
    /// The connection is closing (now, or already).
    Disconnected,
}

/// A connection's outbound queue.
#[derive(Debug, Default)]
struct Outbound {
    /// Encoded frames that go before any message: answers, pongs, notices.
    control: VecDeque<Vec<u8>>,
    /// Messages by priority, low to critical.
    lanes: [VecDeque<Delivery>; 4],
    msgs: usize,
    bytes: usize,
    /// Messages dropped since the last notice to the client.
    dropped_unreported: u64,
    /// Set when the connection must close: code and reason.
    closing: Option<(u16, String)>,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

/// One WebSocket connection, as publishers see it.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub principal: PrincipalId,
    pub address: Arc<str>,
    /// The token the connection was opened with (revoking it closes the connection).
    pub token: u64,
    /// When that token stops working.
    pub token_expires_at_ms: Option<u64>,
    out: Mutex<Outbound>,
    notify: Notify,
    /// The worker session this connection speaks for (`hello`), if any.
    pub worker: Mutex<Option<u64>>,
    /// Bounds, copied from the configuration.
    msgs_max: usize,
    bytes_max: usize,
    control_max: usize,
}

impl Conn {
    /// Offers a message; never waits.
    pub fn push(&self, delivery: Delivery, policy: Backpressure) -> Pushed {
        let size = delivery.size();
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_some() {
            return Pushed::Disconnected;
        }
        let mut dropped = 0;
        if out.msgs + 1 > self.msgs_max || out.bytes + size > self.bytes_max {
            match policy {
                Backpressure::RejectPublisher => return Pushed::Rejected,
                Backpressure::Disconnect => {
                    let reason = format!(
                        "slow consumer: the outbound queue is full ({} messages, {} bytes); \
                         subscription {} asked to be disconnected rather than lose messages",
                        out.msgs, out.bytes, delivery.sid
                    );
                    out.closing = Some((ws::CLOSE_POLICY, reason));
                    out.lanes.iter_mut().for_each(VecDeque::clear);
                    out.msgs = 0;
                    out.bytes = 0;
                    drop(out);
                    self.notify.notify_one();
                    return Pushed::Disconnected;
                }
                Backpressure::DropOldest => {
                    let incoming = lane(delivery.msg.priority);
                    while out.msgs + 1 > self.msgs_max || out.bytes + size > self.bytes_max {
                        let Some(victim_lane) = (0..=incoming).find(|&l| !out.lanes[l].is_empty())
                        else {
                            // Everything queued is more urgent: this one goes.
                            out.dropped_unreported += 1;
                            drop(out);
                            self.notify.notify_one();
                            return Pushed::Dropped(1);
                        };
                        let victim = out.lanes[victim_lane]
                            .pop_front()
                            .expect("lane is not empty");
                        out.msgs -= 1;
                        out.bytes -= victim.size();
                        dropped += 1;
                    }
                    out.dropped_unreported += dropped as u64;
                }
            }
        }
        // The session drains everything once woken, so only the first message into
        // an empty queue (or one that dropped others) needs to wake it.
        let was_empty = out.msgs == 0 && out.control.is_empty();
        out.msgs += 1;
        out.bytes += size;
        out.lanes[lane(delivery.msg.priority)].push_back(delivery);
        drop(out);
        if was_empty || dropped > 0 {
            self.notify.notify_one();
        }
        if dropped > 0 {
            Pushed::Dropped(dropped)
        } else {
            Pushed::Queued
        }
    }

    /// Room for this many more messages before the queue is full.
    pub fn room(&self) -> usize {
        let out = self.out.lock().expect("outbound lock");
        self.msgs_max.saturating_sub(out.msgs)
    }

    /// Queues an encoded frame ahead of messages. A client that lets answers pile
    /// up past the bound is not reading: it is disconnected.
    pub fn push_control(&self, frame: Vec<u8>) {
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_some() {
            return;
        }
        if out.control.len() >= self.control_max {
            out.closing = Some((
                ws::CLOSE_POLICY,
                format!(
                    "{} answers are waiting for a client that does not read them",
                    self.control_max
                ),
            ));
        } else {
            out.control.push_back(frame);
        }
        drop(out);
        self.notify.notify_one();
    }

    /// Queues a JSON text frame ahead of messages.
    pub fn push_json(&self, value: &serde_json::Value) {
        let mut frame = Vec::new();
        ws::encode_frame(ws::OP_TEXT, value.to_string().as_bytes(), &mut frame);
        self.push_control(frame);
    }

    /// Asks the session to close the connection.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_none() {
            out.closing = Some((code, reason.into()));
        }
        drop(out);
        self.notify.notify_one();
    }

    /// Moves queued frames into `buf`, most urgent first, until it holds about
    /// `budget` bytes. Returns the close request once everything before it is out.
    fn drain_into(&self, buf: &mut Vec<u8>, budget: usize) -> Option<(u16, String)> {
        let mut out = self.out.lock().expect("outbound lock");
        if out.dropped_unreported > 0 {
            let dropped = std::mem::take(&mut out.dropped_unreported);
            let notice = serde_json::json!({"op": "err", "error": {
                "code": "slow_consumer",
                "message": format!("{dropped} messages were dropped because this connection's outbound queue was full (drop_oldest)"),
                "dropped": dropped,
            }});
            ws::encode_frame(ws::OP_TEXT, notice.to_string().as_bytes(), buf);
        }
        while buf.len() < budget {
            let Some(frame) = out.control.pop_front() else {
                break;
            };
            buf.extend_from_slice(&frame);
        }
        for lane in (0..4).rev() {
            while buf.len() < budget {
                let Some(delivery) = out.lanes[lane].pop_front() else {
                    break;
                };
                out.msgs -= 1;
                out.bytes -= delivery.size();
                delivery.encode(buf);
            }
        }
        if out.control.is_empty() && out.msgs == 0 {
            out.control.shrink_to_fit();
            out.lanes.iter_mut().for_each(VecDeque::shrink_to_fit);
        }
        if out.closing.is_some() && out.control.is_empty() {
            return out.closing.clone();
        }
        None
    }

    fn is_closing(&self) -> bool {
        self.out.lock().expect("outbound lock").closing.is_some()
    }
}

/// A core (not stream) subscription in the routing trie.
#[derive(Debug)]
pub struct Sub {
    pub conn: Arc<Conn>,
    pub sid: Arc<str>,
    pub queue: Option<Box<str>>,
    pub policy: Backpressure,
}

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
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub denied: AtomicU64,
    pub bad_frames: AtomicU64,
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
    /// Open connections, to close them when the node stops.
    conns: Mutex<std::collections::HashMap<u64, std::sync::Weak<Conn>>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl Bus {
    pub fn new(
        config: BusConfig,
        state: Arc<RwLock<State>>,
        streams: streams::Streams,
        submitter: colony_pipeline::sequencer::Submitter,
    ) -> Arc<Bus> {
        Arc::new(Bus {
            submitter,
            conns: Mutex::new(std::collections::HashMap::new()),
            worker_conns: Mutex::new(std::collections::HashMap::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            meters: meter::Meters::new(Arc::clone(&state)),
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

    /// A new connection for an authenticated principal.
    /// A new connection, or `None` when the node holds `connections_max` already.
    /// The count is raised before it is checked, so that concurrent upgrades cannot
    /// pass the bound together.
    /// A new connection for `principal` with the token `token` (which stops working
    /// at `token_expires_at_ms`), or `None` at `connections_max`.
    pub fn connect(
        &self,
        principal: PrincipalId,
        address: &str,
        token: u64,
        token_expires_at_ms: Option<u64>,
    ) -> Option<Arc<Conn>> {
        let before = self.metrics.connections.fetch_add(1, Ordering::AcqRel);
        if before as usize >= self.config.connections_max {
            self.metrics.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            principal,
            address: address.into(),
            token,
            token_expires_at_ms,
            out: Mutex::new(Outbound::default()),
            notify: Notify::new(),
            worker: Mutex::new(None),
            msgs_max: self.config.outbound_msgs_max,
            bytes_max: self.config.outbound_bytes_max,
            control_max: self.config.control_frames_max,
        });
        self.conns
            .lock()
            .expect("connections lock")
            .insert(conn.id, Arc::downgrade(&conn));
        Some(conn)
    }

    /// Forgets a connection that ended.
    pub(crate) fn disconnected(&self, conn: &Conn) {
        self.conns
            .lock()
            .expect("connections lock")
            .remove(&conn.id);
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
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
        let conns: Vec<_> = self
            .conns
            .lock()
            .expect("connections lock")
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|conn| which(conn))
            .collect();
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
    /// group). Never waits.
    pub fn route(&self, msg: &Arc<Msg>) -> Routed {
        let mut routed = Routed::default();
        let offer = |sub: &Arc<Sub>, routed: &mut Routed| {
            let delivery = Delivery {
                sid: Arc::clone(&sub.sid),
                msg: Arc::clone(msg),
                delivery: 0,
            };
            match sub.conn.push(delivery, sub.policy) {
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
        self.router.read().expect("router lock").visit(
            &msg.subject,
            &mut |sub: &Arc<Sub>| match sub.queue {
                None => offer(sub, &mut routed),
                Some(_) => queued.push(Arc::clone(sub)),
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
        let metrics = &self.metrics;
        metrics
            .delivered
            .fetch_add(routed.delivered as u64, Ordering::Relaxed);
        metrics
            .dropped
            .fetch_add(routed.dropped as u64, Ordering::Relaxed);
        metrics
            .rejected
            .fetch_add(routed.rejected as u64, Ordering::Relaxed);
        routed
    }

    /// Publishes as the system (`0.1`): kernel events and dead letters. Not gated.
    pub fn publish_system(&self, subject: &str, data: &str) {
        let parts = MsgParts {
            subject,
            data,
            priority: Priority::Normal,
            from: "0.1",
            headers: None,
            reply_to: None,
        };
        self.route(&Arc::new(parts.to_msg(None)));
        if let Some(stream) = self.streams.capturing(subject) {
            let _ = self.streams.append(&stream, &parts, None);
        }
    }

    /// Offers tasks that became claimable on [`TASK_OFFERS_SUBJECT`]: what a worker
    /// needs to decide whether to claim (`POST /v1/tasks/claim`).
    /// Tells each connection holding a queued `hello` that its session was admitted
    /// (`{"op":"admitted","worker":ID,...}`), once the admission is durable.
    pub fn workers_admitted(&self, workers: &[u64]) {
        let (heartbeat_ms, lease_ms) = {
            let state = self.state.read().expect("state lock");
            state
                .task_config()
                .map_or((0, 0), |c| (c.worker_heartbeat_ms, c.lease_ms))
        };
        for worker in workers {
            let conn_id = self
                .worker_conns
                .lock()
                .expect("worker lock")
                .get(worker)
                .copied();
            let conn = conn_id.and_then(|id| {
                self.conns
                    .lock()
                    .expect("connections lock")
                    .get(&id)
                    .and_then(std::sync::Weak::upgrade)
            });
            if let Some(conn) = conn {
                conn.push_json(&serde_json::json!({
                    "op": "admitted", "worker": worker, "status": "active",
                    "heartbeat_ms": heartbeat_ms, "lease_ms": lease_ms,
                }));
            }
        }
    }

    pub fn publish_offers(&self, addresses: &[String]) {
        let offers: Vec<String> = {
            let state = self.state.read().expect("state lock");
            addresses
                .iter()
                .filter_map(|address| state.task(address))
                .filter(|task| task.status == colony_kernel::tasks::TaskStatus::Pending)
                .map(|task| {
                    serde_json::json!({
                        "address": task.address,
                        "title": task.title,
                        "capabilities": task.capabilities,
                        "priority": task.priority.as_str(),
                        "effective_priority": state.effective_priority(task),
                        "parent": task.parent,
                        "budget_remaining_micro_usd": task.budget.as_ref().map(|b| b.remaining_micro_usd),
                        "attempts": task.attempts.len(),
                        "resume_from_checkpoint": task.checkpoint.is_some(),
                    })
                    .to_string()
                })
                .collect()
        };
        for offer in offers {
            self.publish_system(TASK_OFFERS_SUBJECT, &offer);
        }
    }

    /// Publishes the decisions of one command on `colony.events.decision.<action>`,
    /// and limit alerts on `colony.events.alert.<limit>`.
    pub fn publish_events(
        &self,
        command: &colony_kernel::Command,
        events: &[colony_kernel::Event],
    ) {
        for event in events {
            let subject = format!("colony.events.decision.{}", event.action);
            let alert_limits: Vec<&str> = std::iter::once(&event.reason)
                .chain(event.warnings.iter())
                .filter_map(|reason| match reason {
                    colony_kernel::Reason::SoftLimit { limit, .. }
                    | colony_kernel::Reason::HardLimit { limit, .. } => Some(limit.as_str()),
                    _ => None,
                })
                .collect();
            // A grant's news also goes to `colony.grants.<requested|approved|denied|
            // expired>.<requester>`, where requesters and approvers listen.
            let grant_subject = event
                .action
                .strip_prefix("grant.")
                .filter(|_| event.decision.is_allowed())
                .map(|what| {
                    let what = match what {
                        "request" => "requested",
                        "approve" => "approved",
                        "deny" => "denied",
                        _ => "expired",
                    };
                    format!("{GRANTS_SUBJECT}.{what}.{}", event.subject)
                })
                .filter(|subject| self.has_subscribers(subject));
            let wanted = self.has_subscribers(&subject)
                || grant_subject.is_some()
                || alert_limits
                    .iter()
                    .any(|l| self.has_subscribers(&format!("colony.events.alert.{l}")));
            if !wanted {
                continue;
            }
            let actor = self
                .state
                .read()
                .expect("state lock")
                .principal(command.actor)
                .map(|p| p.address.clone())
                .unwrap_or_default();
            let data = serde_json::json!({
                "seq": command.seq,
                "at_ms": command.at_ms,
                "actor": actor,
                "justification": command.justification,
                "event": event,
            })
            .to_string();
            self.publish_system(&subject, &data);
            if let Some(grant_subject) = grant_subject {
                self.publish_system(&grant_subject, &data);
            }
            for limit in alert_limits {
                self.publish_system(&format!("colony.events.alert.{limit}"), &data);
            }
        }
    }
}

/// Where tasks that became claimable are offered to workers.
pub const TASK_OFFERS_SUBJECT: &str = "colony.tasks.offers";

/// Whether a pattern may match some subject under `colony.events` or
/// `colony.grants` (the decisions the bus publishes).
fn may_match_events(pattern: &str) -> bool {
    ["events", "grants"].into_iter().any(|second| {
        let mut tokens = pattern.split('.');
        for want in ["colony", second] {
            match tokens.next() {
                Some(">") => return true,
                Some("*") => {}
                Some(token) if token == want => {}
                _ => return false,
            }
        }
        tokens.next().is_some()
    })
}

/// Where requesters and approvers hear of grants: `colony.grants.<what>.<requester>`.
pub const GRANTS_SUBJECT: &str = "colony.grants";

/// Checks that `raw` is a JSON object whose values are strings.
pub fn check_headers(raw: &RawValue) -> Result<(), String> {
    serde_json::from_str::<std::collections::BTreeMap<String, String>>(raw.get())
        .map(|_| ())
        .map_err(|_| "headers must be a JSON object of strings".to_string())
}

/// The bus hears of every durable decision: it publishes them on `colony.events.>`,
/// offers claimable tasks on `colony.tasks.offers`, and tells queued workers they
/// were admitted.
impl colony_pipeline::sequencer::DecisionSink for Bus {
    fn wants_decisions(&self) -> bool {
        self.wants_events()
    }

    fn wants_offers(&self) -> bool {
        self.has_subscribers(TASK_OFFERS_SUBJECT)
    }

    fn offer(&self, tasks: &[String]) {
        self.publish_offers(tasks);
    }

    fn admitted(&self, workers: &[u64]) {
        self.workers_admitted(workers);
    }

    fn decided(&self, command: &colony_kernel::Command, events: &[colony_kernel::Event]) {
        self.publish_events(command, events);
    }
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
