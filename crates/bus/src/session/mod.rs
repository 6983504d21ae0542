//! One WebSocket connection: a single task that reads frames, routes what they ask,
//! serves stream consumers, and writes the connection's outbound queue.
//!
//! Memory while idle: the task (the session's state and its socket), the
//! connection's (empty) queue and the decoder's (empty) partial buffer. Reads go
//! through one scratch buffer per runtime thread; the write buffer exists only while
//! there is something to write; the subscriptions' map, at the first subscription.
//!
//! This file holds the frame loop and the dispatch; [`wire`] is the socket side
//! (reading, writing, waiting). Each group of operations reads and writes the same
//! per-connection [`Session`] from a file of its own: [`frame`] (what a client frame
//! may hold, the `err` frame's error), [`publish`] (`pub`), [`consumer`] (`sub`,
//! `unsub`, `ack`, stream consumers and their redelivery), [`worker`] (`hello`,
//! `heartbeat`, `bye`).

mod consumer;
mod fast_frame;
mod frame;
mod park;
mod publish;
mod wire;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use colony_api::bus::{Answer, NodeFrame};
use colony_kernel::{CommandBody, Role};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use self::consumer::Subs;
use self::frame::{required, Frame, FrameError};
use self::wire::{Rang, ReadEnd, Step, Wire};
pub use self::wire::{Socket, Transport};
use crate::ws::{self, Decoded, Decoder, WsError, WsEvent};
use crate::{Bus, Conn};

pub use self::worker::WORKER_OPS_IN_FLIGHT_MAX;

/// Longest `sid`, in bytes.
pub const SID_BYTES_MAX: usize = 64;
/// Largest `headers` object, in bytes of JSON.
pub const HEADERS_BYTES_MAX: usize = 4_096;

/// Who is connected. Held inline in every session, so kept small: the roles (at
/// most one of each) without a heap allocation, the scope's patterns boxed.
#[derive(Clone, Debug)]
pub struct Peer {
    roles: [Role; 3],
    role_count: u8,
    /// The subject patterns the connection's token is scoped to (`bus:PATTERN`);
    /// `None` when the token has the whole `bus` scope.
    subjects: Option<Box<[String]>>,
}

impl Peer {
    pub fn new(roles: &[Role], subjects: Option<Vec<String>>) -> Peer {
        let mut peer = Peer {
            roles: [Role::Observer; 3],
            role_count: 0,
            subjects: subjects.map(Vec::into_boxed_slice),
        };
        for role in roles {
            if !peer.roles().contains(role) && usize::from(peer.role_count) < peer.roles.len() {
                peer.roles[usize::from(peer.role_count)] = *role;
                peer.role_count += 1;
            }
        }
        peer
    }

    /// The principal's roles, each once.
    pub fn roles(&self) -> &[Role] {
        &self.roles[..usize::from(self.role_count)]
    }

    /// Whether the token's scope lets it publish on `subject`.
    fn may_publish(&self, subject: &str) -> Result<(), String> {
        match &self.subjects {
            Some(patterns)
                if !patterns
                    .iter()
                    .any(|p| colony_kernel::subject::matches(p, subject)) =>
            {
                Err(format!(
                    "this token's bus scope is {}; it does not cover {subject}",
                    patterns.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether the token's scope lets it subscribe to `pattern`.
    fn may_subscribe(&self, pattern: &str) -> Result<(), String> {
        match &self.subjects {
            Some(patterns)
                if !patterns
                    .iter()
                    .any(|p| colony_kernel::subject::covers(p, pattern)) =>
            {
                Err(format!(
                    "this token's bus scope is {}; it does not cover {pattern}",
                    patterns.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }
}

struct Session {
    bus: Arc<Bus>,
    conn: Arc<Conn>,
    peer: Peer,
    /// Made at the first publish (or, in a cluster, when the connection's first
    /// lease comes): most sessions only subscribe or idle, and hold 8 bytes for it.
    publishing: Option<Box<Publishing>>,
    subs: Subs,
}

/// What a session that publishes keeps.
struct Publishing {
    meter: Arc<super::meter::Meter>,
    /// The last subject the session was allowed to publish on. The subject grants
    /// and the token's scope depend only on the session, so a publisher that keeps
    /// to a subject has it checked once (empty: none yet).
    allowed: String,
    /// What the batch under way spent and routed, settled at its end.
    credit: crate::credit::Credit,
}

impl Publishing {
    fn new(meter: Arc<super::meter::Meter>) -> Box<Publishing> {
        Box::new(Publishing {
            meter,
            allowed: String::new(),
            credit: crate::credit::Credit::default(),
        })
    }
}

/// Longest a new connection waits for its principal's first lease in a cluster.
const LEASE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves one upgraded connection until it closes. `read_ahead` is what the HTTP
/// server read past the upgrade request (a client that did not wait for the answer).
///
/// What the connection needs is built before the future, which then owns it in
/// place: an `async fn` keeps its arguments beside the values made of them for as
/// long as it lives, and this future lives as long as the connection (every idle
/// connection pays for each byte of it).
pub fn run(
    bus: Arc<Bus>,
    conn: Arc<Conn>,
    peer: Peer,
    io: Socket,
    read_ahead: &[u8],
) -> impl std::future::Future<Output = ()> + Send {
    let mut wire = Wire::new(io, Decoder::new(bus.config.frame_bytes_max));
    let mut session = Session {
        bus,
        conn,
        peer,
        publishing: None,
        subs: Subs::default(),
    };
    if !read_ahead.is_empty() {
        let mut events = wire::lend();
        match wire.decoder.feed(read_ahead, &mut events) {
            Ok(()) => session.on_events(&events),
            Err(error) => session.on_bad_frame(error),
        }
        wire::give_back(events);
    }
    async move {
        // In a cluster a principal new to this node has no allowance until the node's
        // next lease: the connection waits for it (one round through the cluster's log)
        // rather than have its first publishes refused.
        if session.bus.meters.is_leasing() {
            // Boxed: the wait (a timer and a watch) would otherwise take room in every
            // session's state for as long as it lives, cluster or not.
            let lease = session
                .bus
                .meters
                .meter_with_lease(session.conn.principal, LEASE_WAIT_MAX);
            session.publishing = Some(Publishing::new(Box::pin(lease).await));
        }
        serve(session, wire).await
    }
}

/// The frame loop: until the connection closes, or it parks (a resumed session
/// comes back here in a new task).
async fn serve(mut session: Session, mut wire: Wire) {
    loop {
        if wire.flushed() {
            if wire.closing {
                break;
            }
            wire::recycle(std::mem::take(&mut wire.out));
            wire.out = wire::write_buffer();
            wire.written = 0;
            if let Some((code, reason)) = session.fill(&mut wire.out) {
                if code == ws::CLOSE_POLICY {
                    let bus = &session.bus;
                    bus.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    let conn = &session.conn;
                    tracing::info!(conn = conn.id, address = %conn.address, "closing: {reason}");
                }
                ws::encode_close(code, &reason, &mut wire.out);
                wire.closing = true;
            }
            if wire.out.is_empty() {
                wire::recycle(std::mem::take(&mut wire.out));
            }
        }
        wire.set_timer(session.next_deadline());
        let conn = &*session.conn;
        match std::future::poll_fn(|cx| wire.poll_step(cx, &conn.notify)).await {
            Step::Read(Ok(events)) => {
                session.on_events(&events);
                wire::give_back(events);
            }
            Step::Read(Err(ReadEnd::Ws(error))) => session.on_bad_frame(error),
            Step::Read(Err(ReadEnd::Eof)) => break,
            Step::Read(Err(ReadEnd::Io(error))) => {
                tracing::debug!(conn = conn.id, "bus connection read failed: {error}");
                break;
            }
            Step::Wrote(Ok(0) | Err(_)) => break,
            Step::Wrote(Ok(n)) => wire.written += n,
            Step::Signalled => {}
            Step::Timer => match wire.rang() {
                Rang::Ack => session.expire(Instant::now()),
                Rang::Busy => {}
                // Over TLS: the session keeps its task, the queues' memory goes back.
                Rang::Quiet if !wire.parkable() => session.conn.shed(),
                Rang::Quiet => match park::park(session, wire) {
                    Some(woken) => (session, wire) = woken,
                    None => return,
                },
            },
            Step::Idle => match park::park(session, wire) {
                Some(woken) => (session, wire) = woken,
                None => return,
            },
        }
    }
    let _ = wire.io.shutdown().await;
    session.end();
}

impl Session {
    /// The connection's token still holds: past its expiry the connection closes.
    fn check_token(&self) -> Result<(), FrameError> {
        let now = colony_pipeline::sequencer::now_ms();
        match self.conn.token_expires_at_ms() {
            Some(at) if now >= at => {
                self.conn
                    .close(ws::CLOSE_POLICY, "the connection's token expired");
                Err(FrameError::new(
                    "token_expired",
                    "the connection's token expired; connect again with a live token",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Pulls stream messages into the queue, then moves the queue into `out`.
    fn fill(&mut self, out: &mut Vec<u8>) -> Option<(u16, String)> {
        self.pull_streams();
        self.conn.drain_into(out, self.bus.config.write_batch_bytes)
    }

    /// Handles what one read brought.
    fn on_events(&mut self, events: &Decoded) {
        // Subscribers wake once for what this read brought.
        let _batch = crate::conn::DeferWakeups::begin();
        for event in events.events() {
            if let Some((code, reason)) = self.on_event(event) {
                self.conn.close(code, reason);
            }
        }
        if let Some(publishing) = &mut self.publishing {
            let bus = &self.bus;
            bus.meters
                .settle(&publishing.meter, &mut publishing.credit, &bus.metrics);
        }
    }

    /// A frame broke the protocol: the connection closes with the code that says how.
    fn on_bad_frame(&self, error: WsError) {
        self.bus.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
        self.conn.close(error.close_code(), error.to_string());
    }

    fn on_event(&mut self, event: WsEvent) -> Option<(u16, String)> {
        match event {
            WsEvent::Text(text) => {
                if let Err((id, error)) = self.on_frame(text) {
                    self.bus.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                    self.send_err(id.as_deref(), error);
                }
                None
            }
            WsEvent::Binary(_) => {
                self.send_err(
                    None,
                    FrameError::new(
                        "bad_frame",
                        "the bus speaks JSON in text frames (docs/protocol.md)",
                    ),
                );
                None
            }
            WsEvent::Ping(payload) => {
                let mut frame = Vec::new();
                ws::encode_frame(ws::OP_PONG, payload, &mut frame);
                self.conn.push_control(frame);
                None
            }
            WsEvent::Pong => None,
            WsEvent::Close(_) => Some((ws::CLOSE_NORMAL, "goodbye".into())),
        }
    }

    fn send_err(&self, id: Option<&str>, error: FrameError) {
        let refusal = error.refusal(id.map(crate::frame_id));
        self.conn.push_frame(NodeFrame::Err(&refusal));
    }

    /// Answers a frame that had an `id` (a frame without one is not answered).
    fn send_ok(&self, id: Option<&RawValue>, answer: Answer) {
        if let Some(id) = id {
            let answer = Answer {
                id: Some(crate::frame_id(id.get())),
                ..answer
            };
            self.conn.push_frame(NodeFrame::Ok(&answer));
        }
    }

    /// Handles one text frame; `Err` carries the frame's `id` (if it could be read).
    fn on_frame(&mut self, text: &str) -> Result<(), (Option<String>, FrameError)> {
        if let Some(frame) = fast_frame::publish(text) {
            return self.dispatch(&frame).map_err(|error| (None, error));
        }
        let frame: Frame = serde_json::from_str(text).map_err(|error| {
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("id").map(Value::to_string));
            (
                id,
                FrameError::new("bad_frame", format!("not a valid frame: {error}")),
            )
        })?;
        self.dispatch(&frame)
            .map_err(|error| (frame.id.map(|id| id.get().to_string()), error))
    }

    fn dispatch(&mut self, frame: &Frame) -> Result<(), FrameError> {
        match &*frame.op {
            "ping" => {
                let id = frame.id.map(|id| crate::frame_id(id.get()));
                self.conn.push_frame(NodeFrame::Pong { id: id.as_ref() });
                Ok(())
            }
            "pub" => self.publish(frame),
            "sub" => self.subscribe(frame),
            "unsub" => {
                let sid = required(frame.sid.as_deref(), "unsub", "sid")?;
                match self.subs.remove(sid) {
                    Some(subscription) => {
                        self.drop_subscription(subscription);
                        self.send_ok(frame.id, Answer::default());
                        Ok(())
                    }
                    None => Err(FrameError::new("not_found", format!("no subscription {sid:?}"))
                        .with("sid", sid)),
                }
            }
            "ack" => self.ack(frame),
            "hello" => self.hello(frame),
            "heartbeat" | "bye" => self.worker_op(frame),
            other => Err(FrameError::new(
                "unknown_op",
                format!(
                    "unknown op {other:?}: ping, pub, sub, unsub, ack, hello, heartbeat, bye (docs/protocol.md)"
                ),
            )),
        }
    }

    fn end(mut self) {
        for subscription in self.subs.take() {
            self.drop_subscription(subscription);
        }
        self.bus.disconnected(&self.conn);
        // A worker whose connection dropped without `bye` has a grace period to
        // come back (hello with its id, or an HTTP heartbeat) before it is lost.
        let worker = self.conn.worker.take();
        // Unless the worker already came back on another connection.
        let worker = worker.filter(|worker| {
            let mut attached = self.bus.worker_conns.lock().expect("worker lock");
            if attached.get(worker) == Some(&self.conn.id) {
                attached.remove(worker);
                true
            } else {
                false
            }
        });
        if let (Some(worker), false) = (worker, self.bus.is_shutting_down()) {
            let bus = Arc::clone(&self.bus);
            let disconnected_at_ms = colony_pipeline::sequencer::now_ms();
            let grace_ms = bus.config.worker_grace_ms;
            tracing::info!(worker, address = %self.conn.address, grace_ms, "a worker's bus connection dropped without bye");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(grace_ms)).await;
                let heard_since = bus
                    .liveness
                    .as_ref()
                    .and_then(|l| l.last_heard(worker))
                    .filter(|at| *at > disconnected_at_ms);
                if let Some(at_ms) = heard_since {
                    // It heartbeat since (over HTTP, or on another connection), in
                    // memory: the log hears it first, so the kernel finds it back.
                    let _ = bus
                        .submitter
                        .submit_until_decided(
                            colony_kernel::PrincipalId::SYSTEM,
                            format!("worker {worker} heard since its connection dropped"),
                            CommandBody::RenewWorkers {
                                heard: vec![colony_kernel::workers::WorkerHeard { worker, at_ms }],
                            },
                            colony_pipeline::Answered::WhenDecided,
                        )
                        .await;
                }
                // Sent until decided: a full queue must not leave the session (and
                // its leases) held by a worker that is gone.
                let disconnected = bus
                    .submitter
                    .submit_until_decided(
                        colony_kernel::PrincipalId::SYSTEM,
                        format!(
                            "worker {worker}'s bus connection dropped and the grace period ran out"
                        ),
                        CommandBody::WorkerDisconnected {
                            worker,
                            disconnected_at_ms,
                            grace_ms,
                        },
                        colony_pipeline::Answered::WhenDurable,
                    )
                    .await;
                if disconnected.is_err() {
                    // The node is stopping; its timeout will find the session lost.
                    tracing::warn!(worker, "the dropped connection was not recorded");
                }
            });
        }
    }
}
