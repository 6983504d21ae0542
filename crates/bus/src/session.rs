//! One WebSocket connection: a single task that reads frames, routes what they ask,
//! serves stream consumers, and writes the connection's outbound queue.
//!
//! Memory while idle: the task, the connection's (empty) queue and the decoder's
//! (empty) partial buffer. Reads go through one scratch buffer per runtime thread;
//! the write buffer exists only while there is something to write.
//!
//! Why one file of ~1 020 lines: one connection's frame loop, and each operation it
//! serves (sub, pub, request-reply, stream consumers, worker hello/heartbeat/bye) reads
//! and writes the same per-connection state; the next split is one file per group of
//! operations (the architecture issue), not done yet.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use colony_kernel::{CommandBody, Priority, Role};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::streams::{Next, Stream};
use super::subject::{check_pattern, check_subject};
use super::ws::{self, Decoder, WsError, WsEvent};
use super::{check_headers, policy, Backpressure, Bus, Conn, Delivery, MsgParts, Sub};

/// Longest `sid`, in bytes.
pub const SID_BYTES_MAX: usize = 64;
/// Largest `headers` object, in bytes of JSON.
pub const HEADERS_BYTES_MAX: usize = 4_096;
const SCRATCH_BYTES: usize = 64 << 10;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Who is connected.
#[derive(Clone, Debug)]
pub struct Peer {
    pub roles: Vec<Role>,
    /// The subject patterns the connection's token is scoped to (`bus:PATTERN`);
    /// `None` when the token has the whole `bus` scope.
    pub subjects: Option<Vec<String>>,
}

impl Peer {
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

/// A client frame: every field any op uses; each op checks the ones it needs.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    queue: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stream: Option<Cow<'a, str>>,
    from_seq: Option<u64>,
    from_time: Option<Value>,
    #[serde(borrow)]
    backpressure: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    priority: Option<Cow<'a, str>>,
    #[serde(borrow)]
    headers: Option<&'a RawValue>,
    #[serde(borrow)]
    reply_to: Option<Cow<'a, str>>,
    seq: Option<u64>,
    capabilities: Option<Vec<String>>,
    model: Option<String>,
    profile: Option<String>,
    worker: Option<u64>,
    justification: Option<String>,
}

/// An `err` frame's error.
#[derive(Debug)]
struct FrameError {
    code: &'static str,
    message: String,
    details: Map<String, Value>,
}

impl FrameError {
    fn new(code: &'static str, message: impl Into<String>) -> FrameError {
        FrameError {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> FrameError {
        self.details.insert(key.into(), value.into());
        self
    }

    fn from_reason(reason: &colony_kernel::Reason) -> FrameError {
        let denial = colony_api::Denial::of(reason);
        let retry_after = denial.retry_after_secs(colony_pipeline::sequencer::now_ms());
        let mut error = FrameError::new("denied", denial.message);
        error.details = denial.details;
        error.code = reason.code();
        if let Some(secs) = retry_after {
            error.details.insert("retry_after".into(), secs.into());
        }
        error
    }
}

fn required<T>(value: Option<T>, op: &str, field: &str) -> Result<T, FrameError> {
    value.ok_or_else(|| {
        FrameError::new("invalid", format!("`{op}` needs `{field}`")).with("field", field)
    })
}

fn check_sid(sid: &str) -> Result<(), FrameError> {
    if sid.is_empty()
        || sid.len() > SID_BYTES_MAX
        || !sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(FrameError::new(
            "invalid",
            format!("a sid is 1 to {SID_BYTES_MAX} letters, digits or -_.:"),
        )
        .with("field", "sid"));
    }
    Ok(())
}

fn parse_priority(text: Option<&str>) -> Result<Priority, FrameError> {
    match text {
        None | Some("normal") => Ok(Priority::Normal),
        Some("low") => Ok(Priority::Low),
        Some("high") => Ok(Priority::High),
        Some("critical") => Ok(Priority::Critical),
        Some(other) => Err(FrameError::new(
            "invalid",
            format!("priority {other:?} is not one of low, normal, high, critical"),
        )
        .with("field", "priority")),
    }
}

/// A stream subscription: replays from a sequence number, then follows.
struct Consumer {
    stream: Arc<Stream>,
    sid: Arc<str>,
    filter: Box<str>,
    next_seq: u64,
    /// Unacknowledged deliveries: sequence number to delivery count.
    pending: BTreeMap<u64, u32>,
    /// When each delivery's ack is due, in delivery order (ack_wait is constant,
    /// so this is also deadline order). Stale entries are skipped.
    deadlines: VecDeque<(Instant, u64, u32)>,
    redeliver: VecDeque<u64>,
    ack_wait: Duration,
    max_deliver: u32,
    dead_letter_subject: String,
}

enum Subscription {
    Core { pattern: Box<str>, sub: Arc<Sub> },
    Stream(Box<Consumer>),
}

struct Session {
    bus: Arc<Bus>,
    conn: Arc<Conn>,
    peer: Peer,
    meter: Option<Arc<super::meter::Meter>>,
    subs: HashMap<Arc<str>, Subscription>,
}

enum ReadEnd {
    Eof,
    Io(std::io::Error),
    Ws(WsError),
}

/// Reads what the socket has into the thread's scratch buffer and decodes it.
async fn read_events<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut Decoder,
) -> Result<Vec<WsEvent>, ReadEnd> {
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(error)) => Poll::Ready(Err(ReadEnd::Io(error))),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(ReadEnd::Eof)),
                Poll::Ready(Ok(())) => {
                    let mut events = Vec::new();
                    Poll::Ready(
                        decoder
                            .feed(buf.filled(), &mut events)
                            .map(|()| events)
                            .map_err(ReadEnd::Ws),
                    )
                }
            }
        })
    })
    .await
}

/// Serves one upgraded connection until it closes.
pub async fn run<S>(bus: Arc<Bus>, conn: Arc<Conn>, peer: Peer, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut decoder = Decoder::new(bus.config.frame_bytes_max);
    let mut session = Session {
        bus: Arc::clone(&bus),
        conn: Arc::clone(&conn),
        peer,
        meter: None,
        subs: HashMap::new(),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut closing = false;
    // The ack timer exists only while a stream consumer has something unacknowledged.
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        if written == out.len() {
            if closing {
                break;
            }
            out = Vec::new();
            written = 0;
            if let Some((code, reason)) = session.fill(&mut out) {
                if code == ws::CLOSE_POLICY {
                    bus.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(conn = conn.id, address = %conn.address, "closing: {reason}");
                }
                ws::encode_close(code, &reason, &mut out);
                closing = true;
            }
            if out.is_empty() {
                out = Vec::new();
            }
        }
        match (session.next_deadline(), &mut timer) {
            (Some(at), Some(sleep)) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
            }
            (Some(at), None) => timer = Some(Box::pin(tokio::time::sleep_until(at))),
            (None, _) => timer = None,
        }
        tokio::select! {
            read = read_events(&mut reader, &mut decoder), if !closing => match read {
                Ok(events) => {
                    for event in events {
                        if let Some((code, reason)) = session.on_event(event) {
                            conn.close(code, reason);
                        }
                    }
                }
                Err(ReadEnd::Ws(error)) => {
                    bus.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                    conn.close(error.close_code(), error.to_string());
                }
                Err(ReadEnd::Eof) => break,
                Err(ReadEnd::Io(error)) => {
                    tracing::debug!(conn = conn.id, "bus connection read failed: {error}");
                    break;
                }
            },
            result = writer.write(&out[written..]), if written < out.len() => match result {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            },
            _ = conn.notify.notified(), if written == out.len() && !closing => {}
            _ = wait(&mut timer), if timer.is_some() => session.expire(Instant::now()),
        }
    }
    let _ = writer.shutdown().await;
    session.end();
}

async fn wait(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// The connection's token still holds: past its expiry the connection closes.
    fn check_token(&self) -> Result<(), FrameError> {
        let now = colony_pipeline::sequencer::now_ms();
        match self.conn.token_expires_at_ms {
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

    fn on_event(&mut self, event: WsEvent) -> Option<(u16, String)> {
        match event {
            WsEvent::Text(text) => {
                if let Err((id, error)) = self.on_frame(&text) {
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
                ws::encode_frame(ws::OP_PONG, &payload, &mut frame);
                self.conn.push_control(frame);
                None
            }
            WsEvent::Pong => None,
            WsEvent::Close(_) => Some((ws::CLOSE_NORMAL, "goodbye".into())),
        }
    }

    fn send_err(&self, id: Option<&str>, error: FrameError) {
        let mut body = error.details;
        body.insert("code".into(), error.code.into());
        body.insert("message".into(), error.message.into());
        let mut frame = Map::new();
        frame.insert("op".into(), "err".into());
        if let Some(id) = id {
            frame.insert("id".into(), serde_json::from_str(id).unwrap_or(Value::Null));
        }
        frame.insert("error".into(), Value::Object(body));
        self.conn.push_json(&Value::Object(frame));
    }

    fn send_ok(&self, id: Option<&RawValue>, mut fields: Map<String, Value>) {
        if let Some(id) = id {
            fields.insert("op".into(), "ok".into());
            fields.insert(
                "id".into(),
                serde_json::from_str(id.get()).unwrap_or(Value::Null),
            );
            self.conn.push_json(&Value::Object(fields));
        }
    }

    /// Handles one text frame; `Err` carries the frame's `id` (if it could be read).
    fn on_frame(&mut self, text: &str) -> Result<(), (Option<String>, FrameError)> {
        let frame: Frame = serde_json::from_str(text).map_err(|error| {
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("id").map(Value::to_string));
            (
                id,
                FrameError::new("bad_frame", format!("not a valid frame: {error}")),
            )
        })?;
        let id = frame.id.map(|id| id.get().to_string());
        self.dispatch(&frame).map_err(|error| (id, error))
    }

    fn dispatch(&mut self, frame: &Frame) -> Result<(), FrameError> {
        match &*frame.op {
            "ping" => {
                let mut pong = Map::new();
                pong.insert("op".into(), "pong".into());
                if let Some(id) = frame.id {
                    pong.insert("id".into(), serde_json::from_str(id.get()).unwrap_or(Value::Null));
                }
                self.conn.push_json(&Value::Object(pong));
                Ok(())
            }
            "pub" => self.publish(frame),
            "sub" => self.subscribe(frame),
            "unsub" => {
                let sid = required(frame.sid.as_deref(), "unsub", "sid")?;
                match self.subs.remove(sid) {
                    Some(subscription) => {
                        self.drop_subscription(subscription);
                        self.send_ok(frame.id, Map::new());
                        Ok(())
                    }
                    None => Err(FrameError::new("not_found", format!("no subscription {sid:?}"))
                        .with("sid", sid)),
                }
            }
            "ack" => {
                let sid = required(frame.sid.as_deref(), "ack", "sid")?;
                let seq = required(frame.seq, "ack", "seq")?;
                match self.subs.get_mut(sid) {
                    Some(Subscription::Stream(consumer)) => {
                        // Acking twice, or after a redelivery, is harmless.
                        consumer.pending.remove(&seq);
                        self.send_ok(frame.id, Map::new());
                        Ok(())
                    }
                    Some(Subscription::Core { .. }) => Err(FrameError::new(
                        "invalid",
                        format!("subscription {sid:?} is not on a stream: nothing to acknowledge"),
                    )),
                    None => Err(FrameError::new("not_found", format!("no subscription {sid:?}"))
                        .with("sid", sid)),
                }
            }
            "hello" => {
                self.hello(frame);
                Ok(())
            }
            "heartbeat" | "bye" => {
                let worker = frame
                    .worker
                    .or(*self.conn.worker.lock().expect("worker lock"))
                    .ok_or_else(|| {
                        FrameError::new(
                            "invalid",
                            "no worker session on this connection: say hello first",
                        )
                    })?;
                let body = if frame.op == "bye" {
                    CommandBody::LeaveWorker { worker }
                } else {
                    CommandBody::WorkerHeartbeat { worker }
                };
                let justification = frame.justification.clone().unwrap_or_else(|| {
                    if frame.op == "bye" {
                        format!("worker {worker} leaves (bus)")
                    } else {
                        format!("worker {worker} is alive (bus)")
                    }
                });
                self.decide(frame, justification, body, frame.op == "bye");
                Ok(())
            }
            other => Err(FrameError::new(
                "unknown_op",
                format!(
                    "unknown op {other:?}: ping, pub, sub, unsub, ack, hello, heartbeat, bye (docs/protocol.md)"
                ),
            )),
        }
    }

    /// Registers a worker session for this connection, or resumes one (`worker`).
    fn hello(&mut self, frame: &Frame) {
        let (justification, body) = match frame.worker {
            Some(worker) => (
                frame
                    .justification
                    .clone()
                    .unwrap_or_else(|| format!("worker {worker} is back on the bus")),
                CommandBody::WorkerHeartbeat { worker },
            ),
            None => (
                frame.justification.clone().unwrap_or_else(|| {
                    format!("{} starts a worker session (bus)", self.conn.address)
                }),
                CommandBody::RegisterWorker(Box::new(colony_kernel::workers::NewWorker {
                    capabilities: frame.capabilities.clone().unwrap_or_default(),
                    model: frame.model.clone(),
                    profile: frame.profile.clone(),
                })),
            ),
        };
        self.decide(frame, justification, body, false);
    }

    /// Submits a worker command for this connection's principal and answers when it
    /// is decided (the session goes on meanwhile).
    fn decide(&self, frame: &Frame, justification: String, body: CommandBody, leaving: bool) {
        let bus = Arc::clone(&self.bus);
        let conn = Arc::clone(&self.conn);
        let id: Value = frame
            .id
            .and_then(|id| serde_json::from_str(id.get()).ok())
            .unwrap_or(Value::Null);
        let resumed = frame.op == "hello" && frame.worker.is_some();
        let op = frame.op.to_string();
        tokio::spawn(async move {
            let outcome = match bus
                .submitter
                .submit(conn.principal, justification, body)
                .await
            {
                Ok(outcome) => outcome,
                Err(error) => {
                    conn.push_json(&json!({"op": "err", "id": id, "error": {
                        "code": error.code, "message": error.message,
                    }}));
                    return;
                }
            };
            let primary = &outcome.primary;
            if primary.decision == colony_kernel::Decision::Denied {
                let mut error = FrameError::from_reason(&primary.reason);
                error.code = primary.reason.code();
                if matches!(primary.reason, colony_kernel::Reason::WorkerGone { .. }) {
                    conn.worker.lock().expect("worker lock").take();
                }
                let mut body = error.details;
                body.insert("code".into(), error.code.into());
                body.insert("message".into(), error.message.into());
                conn.push_json(&json!({"op": "err", "id": id, "error": body}));
                return;
            }
            let (worker, status) = match primary.effect {
                colony_kernel::Effect::WorkerRegistered { worker, .. } => (Some(worker), "active"),
                colony_kernel::Effect::WorkerQueued { ticket, .. } => (Some(ticket), "queued"),
                colony_kernel::Effect::WorkerEnded { worker, .. } => (Some(worker), "left"),
                _ => (None, "active"),
            };
            if leaving {
                if let Some(worker) = conn.worker.lock().expect("worker lock").take() {
                    bus.worker_conns
                        .lock()
                        .expect("worker lock")
                        .remove(&worker);
                }
            } else if let Some(worker) = worker {
                *conn.worker.lock().expect("worker lock") = Some(worker);
                bus.worker_conns
                    .lock()
                    .expect("worker lock")
                    .insert(worker, conn.id);
            }
            if op == "heartbeat" && id.is_null() {
                return;
            }
            let (heartbeat_ms, lease_ms) = {
                let state = bus.state.read().expect("state lock");
                state
                    .task_config()
                    .map_or((0, 0), |c| (c.worker_heartbeat_ms, c.lease_ms))
            };
            conn.push_json(&json!({
                "op": "ok", "id": id, "worker": worker, "status": status,
                "heartbeat_ms": heartbeat_ms, "lease_ms": lease_ms, "resumed": resumed,
                "seq": outcome.seq,
            }));
        });
    }

    fn publish(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let subject = required(frame.subject.as_deref(), "pub", "subject")?;
        check_subject(subject).map_err(|e| {
            FrameError::new("invalid", format!("subject: {e}")).with("field", "subject")
        })?;
        let data = required(frame.data, "pub", "data")?;
        let priority = parse_priority(frame.priority.as_deref())?;
        if let Some(headers) = frame.headers {
            if headers.get().len() > HEADERS_BYTES_MAX {
                return Err(FrameError::new(
                    "invalid",
                    format!("headers take at most {HEADERS_BYTES_MAX} bytes"),
                ));
            }
            check_headers(headers)
                .map_err(|m| FrameError::new("invalid", m).with("field", "headers"))?;
        }
        if let Some(reply_to) = frame.reply_to.as_deref() {
            check_subject(reply_to).map_err(|e| {
                FrameError::new("invalid", format!("reply_to: {e}")).with("field", "reply_to")
            })?;
        }
        let bus = &self.bus;
        self.check_token()?;
        policy::may_publish(&bus.config, &self.conn.address, &self.peer.roles, subject)
            .and_then(|()| self.peer.may_publish(subject))
            .map_err(|message| {
                bus.metrics.denied.fetch_add(1, Ordering::Relaxed);
                FrameError::new("forbidden", message).with("subject", subject)
            })?;
        let meter = self
            .meter
            .get_or_insert_with(|| bus.meters.meter(self.conn.principal));
        let bytes = data.get().len() as u64;
        bus.meters
            .take(meter, &self.conn.address, bytes)
            .map_err(|reason| {
                bus.metrics.denied.fetch_add(1, Ordering::Relaxed);
                FrameError::from_reason(&reason)
            })?;
        let parts = MsgParts {
            subject,
            data: data.get(),
            priority,
            from: &self.conn.address,
            headers: frame.headers.map(RawValue::get),
            reply_to: frame.reply_to.as_deref(),
        };
        let routed = bus.route(&Arc::new(parts.to_msg(None)));
        bus.metrics.published.fetch_add(1, Ordering::Relaxed);
        bus.metrics
            .published_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        let stream = bus.streams.capturing(subject);
        if let Some(stream) = &stream {
            let reply = frame
                .id
                .map(|id| (Arc::clone(&self.conn), id.get().to_string()));
            bus.streams
                .append(stream, &parts, reply)
                .map_err(|message| {
                    FrameError::new("backpressure", message).with("stream", stream.name.as_str())
                })?;
        }
        if routed.rejected > 0 {
            return Err(FrameError::new(
                "backpressure",
                format!(
                    "{} subscriber(s) of {subject} are too far behind and asked that publishers be told; \
                     they did not get this message ({} others did)",
                    routed.rejected, routed.delivered
                ),
            )
            .with("rejected", routed.rejected)
            .with("delivered", routed.delivered));
        }
        if stream.is_none() {
            let mut fields = Map::new();
            fields.insert("delivered".into(), routed.delivered.into());
            self.send_ok(frame.id, fields);
        }
        Ok(())
    }

    fn subscribe(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let sid = required(frame.sid.as_deref(), "sub", "sid")?;
        check_sid(sid)?;
        if self.subs.contains_key(sid) {
            return Err(FrameError::new(
                "duplicate_sid",
                format!("subscription {sid:?} exists on this connection; unsub it first or use another sid"),
            )
            .with("sid", sid));
        }
        let max = self.bus.config.subscriptions_per_connection_max;
        if self.subs.len() >= max {
            return Err(FrameError::new(
                "too_many_subscriptions",
                format!("a connection holds at most {max} subscriptions"),
            )
            .with("max", max));
        }
        let pattern = required(frame.subject.as_deref(), "sub", "subject")?;
        check_pattern(pattern).map_err(|e| {
            FrameError::new("invalid", format!("subject: {e}")).with("field", "subject")
        })?;
        self.check_token()?;
        policy::may_subscribe(
            &self.bus.config,
            &self.conn.address,
            &self.peer.roles,
            pattern,
        )
        .and_then(|()| self.peer.may_subscribe(pattern))
        .map_err(|message| {
            self.bus.metrics.denied.fetch_add(1, Ordering::Relaxed);
            FrameError::new("forbidden", message).with("subject", pattern)
        })?;
        let policy = match frame.backpressure.as_deref() {
            None => Backpressure::default(),
            Some(text) => Backpressure::parse(text).ok_or_else(|| {
                FrameError::new(
                    "invalid",
                    format!("backpressure {text:?} is not one of drop_oldest, reject_publisher, disconnect"),
                )
                .with("field", "backpressure")
            })?,
        };
        let sid: Arc<str> = sid.into();
        let Some(stream_name) = frame.stream.as_deref() else {
            if frame.from_seq.is_some() || frame.from_time.is_some() {
                return Err(FrameError::new(
                    "invalid",
                    "from_seq and from_time replay a stream: name it with `stream`",
                ));
            }
            let sub = Arc::new(Sub {
                conn: Arc::clone(&self.conn),
                sid: Arc::clone(&sid),
                queue: frame.queue.as_deref().map(Into::into),
                policy,
            });
            if let Some(queue) = &sub.queue {
                check_sid(queue).map_err(|_| {
                    FrameError::new(
                        "invalid",
                        "a queue group name is 1 to 64 letters, digits or -_.:",
                    )
                    .with("field", "queue")
                })?;
            }
            self.bus.subscribe(pattern, Arc::clone(&sub));
            self.subs.insert(
                sid.clone(),
                Subscription::Core {
                    pattern: pattern.into(),
                    sub,
                },
            );
            let mut fields = Map::new();
            fields.insert("sid".into(), sid.to_string().into());
            self.send_ok(frame.id, fields);
            return Ok(());
        };
        let stream = self.bus.streams.get(stream_name).ok_or_else(|| {
            FrameError::new(
                "not_found",
                format!("no stream named {stream_name:?} (GET /v1/streams lists them)"),
            )
            .with("stream", stream_name)
        })?;
        if frame.queue.is_some() {
            return Err(FrameError::new(
                "invalid",
                "queue groups are for core subjects; a stream subscription is one consumer",
            ));
        }
        let start = match (&frame.from_seq, &frame.from_time) {
            (Some(_), Some(_)) => {
                return Err(FrameError::new(
                    "invalid",
                    "give from_seq or from_time, not both",
                ))
            }
            (Some(seq), None) => (*seq).max(1),
            (None, Some(time)) => stream.seq_at_time(parse_time(time)?),
            (None, None) => stream.info().last_seq + 1,
        };
        let spec = stream.spec();
        stream.watch(&self.conn);
        let consumer = Consumer {
            stream: Arc::clone(&stream),
            sid: Arc::clone(&sid),
            filter: pattern.into(),
            next_seq: start,
            pending: BTreeMap::new(),
            deadlines: VecDeque::new(),
            redeliver: VecDeque::new(),
            ack_wait: Duration::from_millis(spec.ack_wait_ms),
            max_deliver: spec.max_deliver,
            dead_letter_subject: spec.dead_letter_subject(),
        };
        self.subs
            .insert(Arc::clone(&sid), Subscription::Stream(Box::new(consumer)));
        let mut fields = Map::new();
        fields.insert("sid".into(), sid.to_string().into());
        fields.insert("stream".into(), stream.name.clone().into());
        fields.insert("from_seq".into(), start.into());
        self.send_ok(frame.id, fields);
        self.conn.notify.notify_one();
        Ok(())
    }

    fn drop_subscription(&self, subscription: Subscription) {
        if let Subscription::Core { pattern, sub } = subscription {
            self.bus.unsubscribe(&pattern, &sub);
        }
    }

    /// Moves stream messages into the connection's queue while it has room and the
    /// consumer is under its unacknowledged maximum.
    fn pull_streams(&mut self) {
        let ack_pending_max = self.bus.config.ack_pending_max;
        let now_ms = colony_pipeline::sequencer::now_ms();
        for subscription in self.subs.values_mut() {
            let Subscription::Stream(consumer) = subscription else {
                continue;
            };
            if consumer.stream.is_deleted() {
                continue;
            }
            // Keep half the queue for core messages.
            let mut room = self
                .conn
                .room()
                .saturating_sub(self.bus.config.outbound_msgs_max / 2);
            while room > 0 && consumer.pending.len() < ack_pending_max {
                let stored = if let Some(seq) = consumer.redeliver.pop_front() {
                    if !consumer.pending.contains_key(&seq) {
                        continue;
                    }
                    match consumer.stream.get(seq) {
                        Some(stored) => stored,
                        None => {
                            // Retention dropped it meanwhile.
                            consumer.pending.remove(&seq);
                            continue;
                        }
                    }
                } else {
                    match consumer
                        .stream
                        .next(consumer.next_seq, Some(&consumer.filter), now_ms)
                    {
                        Next::Msg(stored) => {
                            consumer.next_seq = stored.msg.seq + 1;
                            stored
                        }
                        Next::Caught(seq) => {
                            let more = seq > consumer.next_seq;
                            consumer.next_seq = seq;
                            if more {
                                continue;
                            }
                            break;
                        }
                    }
                };
                let seq = stored.msg.seq;
                let count = consumer.pending.entry(seq).or_insert(0);
                *count += 1;
                let count = *count;
                consumer
                    .deadlines
                    .push_back((Instant::now() + consumer.ack_wait, seq, count));
                let delivery = Delivery {
                    sid: Arc::clone(&consumer.sid),
                    msg: Arc::clone(&stored.msg),
                    delivery: count,
                };
                if self.conn.push(delivery, Backpressure::RejectPublisher) != super::Pushed::Queued
                {
                    break;
                }
                self.bus.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                room -= 1;
            }
        }
    }

    /// The earliest ack deadline still pending.
    fn next_deadline(&mut self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for subscription in self.subs.values_mut() {
            let Subscription::Stream(consumer) = subscription else {
                continue;
            };
            while let Some(&(at, seq, count)) = consumer.deadlines.front() {
                if consumer.pending.get(&seq) == Some(&count) {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    break;
                }
                consumer.deadlines.pop_front();
            }
        }
        earliest
    }

    /// Redelivers what was not acknowledged in time; dead-letters what ran out of
    /// deliveries.
    fn expire(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for subscription in self.subs.values_mut() {
            let Subscription::Stream(consumer) = subscription else {
                continue;
            };
            while let Some(&(at, seq, count)) = consumer.deadlines.front() {
                if at > now {
                    break;
                }
                consumer.deadlines.pop_front();
                if consumer.pending.get(&seq) != Some(&count) {
                    continue;
                }
                if count >= consumer.max_deliver {
                    consumer.pending.remove(&seq);
                    if let Some(stored) = consumer.stream.get(seq) {
                        dead.push((consumer.dead_letter_subject.clone(), json!({
                            "stream": consumer.stream.name,
                            "seq": seq,
                            "consumer": &*consumer.sid,
                            "address": &*self.conn.address,
                            "deliveries": count,
                            "message": serde_json::from_str::<Value>(&stored.record).unwrap_or(Value::Null),
                        })));
                    }
                } else {
                    consumer.redeliver.push_back(seq);
                }
            }
        }
        for (subject, data) in dead {
            tracing::info!(%subject, "dead letter: {data}");
            self.bus.publish_system(&subject, &data.to_string());
        }
        self.conn.notify.notify_one();
    }

    fn end(mut self) {
        for (_, subscription) in std::mem::take(&mut self.subs) {
            self.drop_subscription(subscription);
        }
        self.bus.disconnected(&self.conn);
        // A worker whose connection dropped without `bye` has a grace period to
        // come back (hello with its id, or an HTTP heartbeat) before it is lost.
        let worker = self.conn.worker.lock().expect("worker lock").take();
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
                let _ = bus
                    .submitter
                    .submit(
                        colony_kernel::PrincipalId::SYSTEM,
                        format!(
                            "worker {worker}'s bus connection dropped and the grace period ran out"
                        ),
                        CommandBody::WorkerDisconnected {
                            worker,
                            disconnected_at_ms,
                            grace_ms,
                        },
                    )
                    .await;
            });
        }
    }
}

/// `from_time`: Unix milliseconds, or an RFC 3339 time.
fn parse_time(value: &Value) -> Result<u64, FrameError> {
    let invalid = || {
        FrameError::new(
            "invalid",
            "from_time is Unix milliseconds or an RFC 3339 time like 2026-11-22T10:00:00Z",
        )
        .with("field", "from_time")
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(invalid),
        Value::String(text) => humantime::parse_rfc3339_weak(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}
