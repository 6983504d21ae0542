//! One connection as publishers see it: its outbound queue (a control lane and four
//! priority lanes), the backpressure policy of each subscription, and closing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use colony_kernel::{PrincipalId, Priority};
use futures_util::task::AtomicWaker;

use crate::{ws, BusConfig, Delivery};

/// Entries an emptied queue lane always keeps room for. A lane keeps more, room for
/// twice what the drain that emptied it took, so that a steady flow does not grow
/// its lanes again from nothing at every batch; what a burst grew past that goes
/// back at the first drain after it. An idle connection gives it all back when it
/// goes quiet ([`Conn::shed`]).
const QUEUE_KEPT: usize = 256;

/// The most deliveries a thread keeps room for between drains (a batch of more
/// grows its list, which is then let go).
const TAKEN_CAPACITY_MAX: usize = 4096;

/// Bytes a batch may take past its estimate (a frame's header and fields beyond what
/// [`Delivery::size`] counts).
const BATCH_SLACK_BYTES: usize = 4096;

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

/// A connection's queued frames.
#[derive(Debug, Default)]
struct Queues {
    /// Encoded frames that go before any message: answers, pongs, notices.
    control: VecDeque<Vec<u8>>,
    /// Messages by priority, low to critical.
    lanes: [VecDeque<Delivery>; 4],
}

/// A connection's outbound queue.
#[derive(Debug, Default)]
struct Outbound {
    /// Made at the first frame queued; given back when the connection parks with
    /// nothing queued (see [`Conn::shed`]), so that an idle connection holds none.
    queues: Option<Box<Queues>>,
    msgs: usize,
    bytes: usize,
    /// Messages dropped since the last notice to the client.
    dropped_unreported: u64,
    /// Set when the connection must close: code and reason (boxed: every open
    /// connection holds the field, few ever fill it).
    closing: Option<Box<(u16, String)>>,
}

impl Outbound {
    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    fn control_len(&self) -> usize {
        self.queues
            .as_ref()
            .map_or(0, |queues| queues.control.len())
    }

    /// The most urgent queued messages, taken off their lanes and the counts into
    /// `taken`, until their sizes reach `room` bytes (at least one, when any is
    /// queued).
    fn take_batch(&mut self, room: usize, taken: &mut Vec<Delivery>) {
        let Some(queues) = self.queues.as_mut() else {
            return;
        };
        if self.msgs == 0 || room == 0 {
            return;
        }
        let before = taken.len();
        let (mut left, mut bytes) = (room, 0);
        'lanes: for lane in queues.lanes.iter_mut().rev() {
            while let Some(delivery) = lane.pop_front() {
                let size = delivery.size();
                bytes += size;
                taken.push(delivery);
                left = left.saturating_sub(size);
                if left == 0 {
                    break 'lanes;
                }
            }
        }
        self.msgs -= taken.len() - before;
        self.bytes -= bytes;
    }

    /// The most urgent queued message, taken off its lane and the counts.
    fn take_next(&mut self) -> Option<Delivery> {
        let delivery = self
            .queues
            .as_mut()?
            .lanes
            .iter_mut()
            .rev()
            .find_map(VecDeque::pop_front)?;
        self.msgs -= 1;
        self.bytes -= delivery.size();
        Some(delivery)
    }
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

/// A frame's `id` (its raw JSON) as the answer echoes it: any JSON, `null` when it
/// is not JSON.
pub fn frame_id(raw: &str) -> serde_json::Value {
    serde_json::from_str(raw).unwrap_or(serde_json::Value::Null)
}

/// One WebSocket connection, as publishers see it.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub principal: PrincipalId,
    pub address: Arc<str>,
    /// The token the connection was opened with (revoking it closes the connection).
    pub token: u64,
    /// When that token stops working (`u64::MAX`: never).
    token_expires_at_ms: u64,
    out: Mutex<Outbound>,
    pub(crate) notify: Signal,
    /// The worker session this connection speaks for (`hello`), if any.
    pub worker: WorkerSlot,
    /// Worker commands (`hello`, `heartbeat`, `bye`) sent and not yet answered.
    pub(crate) worker_ops: std::sync::atomic::AtomicUsize,
    /// Bounds, copied from the configuration (as `u32`: every open connection
    /// holds them; a bound past 4 Gi is held to it).
    msgs_max: u32,
    bytes_max: u32,
    control_max: u32,
}

fn bound(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl Conn {
    fn msgs_max(&self) -> usize {
        self.msgs_max as usize
    }

    fn bytes_max(&self) -> usize {
        self.bytes_max as usize
    }

    fn control_max(&self) -> usize {
        self.control_max as usize
    }

    /// When the connection's token stops working, if it does.
    pub fn token_expires_at_ms(&self) -> Option<u64> {
        (self.token_expires_at_ms != u64::MAX).then_some(self.token_expires_at_ms)
    }

    /// A connection with empty queues, bounded by `config`; `token` is the token it
    /// was opened with and when that token stops working.
    pub(crate) fn new(
        id: u64,
        principal: PrincipalId,
        address: Arc<str>,
        token: (u64, Option<u64>),
        config: &BusConfig,
    ) -> Conn {
        Conn {
            id,
            principal,
            address,
            token: token.0,
            token_expires_at_ms: token.1.unwrap_or(u64::MAX),
            out: Mutex::new(Outbound::default()),
            notify: Signal::default(),
            worker: WorkerSlot::default(),
            worker_ops: Default::default(),
            msgs_max: bound(config.outbound_msgs_max),
            bytes_max: bound(config.outbound_bytes_max),
            control_max: bound(config.control_frames_max),
        }
    }

    /// Offers a message; never waits.
    pub fn push(&self, delivery: Delivery, policy: Backpressure) -> Pushed {
        let (pushed, wake) = self.queue(delivery, policy);
        if wake {
            self.notify.notify_one();
        }
        pushed
    }

    /// Queues a message; whether the session must be woken for it.
    fn queue(&self, delivery: Delivery, policy: Backpressure) -> (Pushed, bool) {
        let size = delivery.size();
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_some() {
            return (Pushed::Disconnected, false);
        }
        let mut dropped = 0;
        if out.msgs + 1 > self.msgs_max() || out.bytes + size > self.bytes_max() {
            match policy {
                Backpressure::RejectPublisher => return (Pushed::Rejected, false),
                Backpressure::Disconnect => {
                    let reason = format!(
                        "slow consumer: the outbound queue is full ({} messages, {} bytes); \
                         subscription {} asked to be disconnected rather than lose messages",
                        out.msgs, out.bytes, delivery.sid
                    );
                    out.closing = Some(Box::new((ws::CLOSE_POLICY, reason)));
                    out.queues = None;
                    out.msgs = 0;
                    out.bytes = 0;
                    return (Pushed::Disconnected, true);
                }
                Backpressure::DropOldest => {
                    let incoming = lane(delivery.msg.priority);
                    while out.msgs + 1 > self.msgs_max() || out.bytes + size > self.bytes_max() {
                        let lanes = &mut out.queues().lanes;
                        let Some(victim_lane) = (0..=incoming).find(|&l| !lanes[l].is_empty())
                        else {
                            // Everything queued is more urgent: this one goes.
                            out.dropped_unreported += 1;
                            return (Pushed::Dropped(1), true);
                        };
                        let victim = lanes[victim_lane].pop_front().expect("lane is not empty");
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
        let was_empty = out.msgs == 0 && out.control_len() == 0;
        out.msgs += 1;
        out.bytes += size;
        out.queues().lanes[lane(delivery.msg.priority)].push_back(delivery);
        drop(out);
        let pushed = if dropped > 0 {
            Pushed::Dropped(dropped)
        } else {
            Pushed::Queued
        };
        (pushed, was_empty || dropped > 0)
    }

    /// Room for this many more messages before the queue is full.
    pub fn room(&self) -> usize {
        let out = self.out.lock().expect("outbound lock");
        self.msgs_max().saturating_sub(out.msgs)
    }

    /// Queues an encoded frame ahead of messages. A client that lets answers pile
    /// up past the bound is not reading: it is disconnected.
    pub fn push_control(&self, frame: Vec<u8>) {
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_some() {
            return;
        }
        if out.control_len() >= self.control_max() {
            out.closing = Some(Box::new((
                ws::CLOSE_POLICY,
                format!(
                    "{} answers are waiting for a client that does not read them",
                    self.control_max()
                ),
            )));
        } else {
            out.queues().control.push_back(frame);
        }
        drop(out);
        self.notify.notify_one();
    }

    /// Queues a frame of the node's (an answer, a refusal, a notice) ahead of
    /// messages. Its `id` echoes the answered frame's ([`frame_id`]).
    pub fn push_frame(&self, value: colony_api::bus::NodeFrame<'_>) {
        let text = serde_json::to_vec(&value).expect("a frame always encodes");
        let mut frame = Vec::new();
        ws::encode_frame(ws::OP_TEXT, &text, &mut frame);
        self.push_control(frame);
    }

    /// Asks the session to close the connection.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_none() {
            out.closing = Some(Box::new((code, reason.into())));
        }
        drop(out);
        self.notify.notify_one();
    }

    /// Moves queued frames into `buf`, most urgent first, until it holds about
    /// `budget` bytes. Returns the close request once everything before it is out.
    ///
    /// The messages are taken off their lanes under the lock and encoded after it
    /// is released: publishers pushing to this connection wait for the taking, not
    /// for the copying.
    pub(crate) fn drain_into(&self, buf: &mut Vec<u8>, budget: usize) -> Option<(u16, String)> {
        let mut out = self.out.lock().expect("outbound lock");
        // Room for the whole batch at once: growing the buffer frame by frame copied
        // it over and over (a fifth of a delivery's instructions, by callgrind).
        let control: usize = out
            .queues
            .iter()
            .flat_map(|queues| queues.control.iter())
            .map(Vec::len)
            .sum();
        buf.reserve((control + out.bytes).min(budget) + BATCH_SLACK_BYTES);
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
            let Some(frame) = out.queues.as_mut().and_then(|q| q.control.pop_front()) else {
                break;
            };
            buf.extend_from_slice(&frame);
        }
        let mut taken = TAKEN.take();
        out.take_batch(budget.saturating_sub(buf.len()), &mut taken);
        if out.control_len() == 0 && out.msgs == 0 {
            let kept = QUEUE_KEPT.max(2 * taken.len());
            if let Some(queues) = &mut out.queues {
                queues.control.shrink_to(QUEUE_KEPT);
                for lane in &mut queues.lanes {
                    if lane.capacity() > 2 * kept {
                        lane.shrink_to(kept);
                    }
                }
            }
        }
        let close = if out.closing.is_some() && out.control_len() == 0 {
            out.closing.as_deref().cloned()
        } else {
            None
        };
        drop(out);
        for delivery in taken.drain(..) {
            delivery.encode(buf);
        }
        if taken.capacity() <= TAKEN_CAPACITY_MAX {
            TAKEN.set(taken);
        }
        close
    }

    /// Takes the most urgent queued message, for a consumer inside the node (an
    /// artifact's inbox) rather than a WebSocket: `{"subject","data",...}`; `None`
    /// when nothing waits (or the connection is closing).
    pub fn pop(&self) -> Option<String> {
        let mut out = self.out.lock().expect("outbound lock");
        if out.closing.is_some() {
            return None;
        }
        let delivery = out.take_next()?;
        let mut text = String::with_capacity(1 + delivery.msg.tail.len());
        text.push('{');
        text.push_str(&String::from_utf8_lossy(&delivery.msg.tail));
        Some(text)
    }

    /// Waits until something is pushed to the connection. One waiter at a time: the
    /// connection's session, or the one consumer inside the node that reads it.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.notify.poll(cx)).await
    }

    /// Gives back the queues' memory if nothing is queued: the connection went
    /// quiet (its session parks, or over TLS waits without a timer), and queues that
    /// once held frames keep room for as many again until then.
    pub(crate) fn shed(&self) {
        let mut out = self.out.lock().expect("outbound lock");
        if out.msgs == 0 && out.control_len() == 0 {
            out.queues = None;
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.out.lock().expect("outbound lock").closing.is_some()
    }
}

/// The worker session a connection speaks for: an atomic rather than a locked
/// `Option` (every open connection holds one).
#[derive(Debug)]
pub struct WorkerSlot(AtomicU64);

impl Default for WorkerSlot {
    fn default() -> WorkerSlot {
        WorkerSlot(AtomicU64::new(WorkerSlot::NONE))
    }
}

impl WorkerSlot {
    /// No worker (no worker session or ticket id is ever this large).
    const NONE: u64 = u64::MAX;

    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|id| *id != WorkerSlot::NONE)
    }

    pub fn set(&self, worker: u64) {
        self.0.store(worker, Ordering::Release);
    }

    pub fn take(&self) -> Option<u64> {
        Some(self.0.swap(WorkerSlot::NONE, Ordering::AcqRel)).filter(|id| *id != WorkerSlot::NONE)
    }
}

/// What wakes a connection's session when something is pushed to it: a permit kept
/// until taken, and the one waker waiting for it. Smaller than tokio's `Notify` and,
/// unlike it, needs no future of its own in the waiting session's state (an idle
/// connection's whole life is spent waiting on it).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Leaves a permit and wakes the waiter, if there is one.
    pub(crate) fn notify_one(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Registers `cx`'s waker to be woken at the next permit; whether one is left
    /// already (it stays, for whoever polls next).
    pub(crate) fn register(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.pending.load(Ordering::Acquire)
    }

    /// Takes the permit, or registers the task to be woken when one is left.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A permit left between the first look and the registration.
        if self.pending.swap(false, Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A core (not stream) subscription in the routing trie.
#[derive(Debug)]
pub struct Sub {
    pub conn: Arc<Conn>,
    pub sid: crate::Sid,
    pub queue: Option<Box<str>>,
    pub policy: Backpressure,
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;

thread_local! {
    /// The deliveries a drain takes off the lanes, to encode once the lock is let
    /// go: one list per runtime thread, kept between drains.
    static TAKEN: std::cell::Cell<Vec<Delivery>> = const { std::cell::Cell::new(Vec::new()) };
    /// Connections to wake once the current batch of publishes is routed, while a
    /// [`DeferWakeups`] guard is alive on this thread.
    static DEFERRED: std::cell::RefCell<Option<Vec<Arc<Conn>>>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, [`push_deferring`] on this thread wakes no session at once: the
/// sessions its pushes found idle are woken when it drops. A session holds one
/// while it handles what one read of its socket brought (up to a few hundred
/// publishes), so that a subscriber wakes once for the batch and writes it in one
/// go, instead of waking, encoding and writing once per message.
pub(crate) struct DeferWakeups {
    outer: bool,
}

impl DeferWakeups {
    pub(crate) fn begin() -> DeferWakeups {
        let outer = DEFERRED.with_borrow_mut(|deferred| {
            if deferred.is_some() {
                return false;
            }
            *deferred = Some(Vec::new());
            true
        });
        DeferWakeups { outer }
    }
}

impl Drop for DeferWakeups {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        let woken = DEFERRED.with_borrow_mut(Option::take).unwrap_or_default();
        for conn in woken {
            conn.notify.notify_one();
        }
    }
}

/// [`Conn::push`], its wake-up deferred while a [`DeferWakeups`] is alive here.
pub(crate) fn push_deferring(conn: &Arc<Conn>, delivery: Delivery, policy: Backpressure) -> Pushed {
    let (pushed, wake) = conn.queue(delivery, policy);
    if wake {
        let now = DEFERRED.with_borrow_mut(|deferred| match deferred {
            Some(woken) => {
                woken.push(Arc::clone(conn));
                false
            }
            None => true,
        });
        if now {
            conn.notify.notify_one();
        }
    }
    pushed
}
