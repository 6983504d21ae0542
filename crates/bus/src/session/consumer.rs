//! Stream subscriptions: one consumer per `sub` on a stream, replaying from a
//! sequence number or a time, then following; acknowledgements, redelivery after
//! `ack_wait`, and dead letters after `max_deliver`. Core subscriptions too, since
//! `sub` decides which of the two a frame asks for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use colony_api::bus::{Answer, DeadLetter};
use serde_json::Value;
use tokio::time::Instant;

use super::frame::{check_sid, parse_time, required, Frame, FrameError};
use super::Session;
use crate::streams::{Next, Stream};
use crate::subject::check_pattern;
use crate::{policy, Backpressure, Delivery, Sid, Sub};

/// A stream subscription: replays from a sequence number, then follows.
pub(super) struct Consumer {
    stream: Arc<Stream>,
    sid: Sid,
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

pub(super) enum Subscription {
    Core { pattern: Box<str>, sub: Arc<Sub> },
    Stream(Box<Consumer>),
}

/// A connection's subscriptions by `sid`. The map is made at the first
/// subscription: most connections publish only, and an empty map would still take
/// 48 bytes of every idle session's state.
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes in every session, not 48
pub(super) struct Subs(Option<Box<HashMap<Arc<str>, Subscription>>>);

impl Subs {
    pub(super) fn get_mut(&mut self, sid: &str) -> Option<&mut Subscription> {
        self.0.as_mut()?.get_mut(sid)
    }

    pub(super) fn contains_key(&self, sid: &str) -> bool {
        self.0.as_ref().is_some_and(|map| map.contains_key(sid))
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    pub(super) fn insert(&mut self, sid: Arc<str>, subscription: Subscription) {
        self.0
            .get_or_insert_with(Box::default)
            .insert(sid, subscription);
    }

    pub(super) fn remove(&mut self, sid: &str) -> Option<Subscription> {
        self.0.as_mut()?.remove(sid)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Subscription> {
        self.0.iter_mut().flat_map(|map| map.values_mut())
    }

    /// Every subscription, leaving none.
    pub(super) fn take(&mut self) -> impl Iterator<Item = Subscription> {
        self.0.take().into_iter().flat_map(|map| map.into_values())
    }
}

impl Session {
    /// `ack`: a stream consumer's message is handled; acking twice, or after a
    /// redelivery, is harmless.
    pub(super) fn ack(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let sid = required(frame.sid.as_deref(), "ack", "sid")?;
        let seq = required(frame.seq, "ack", "seq")?;
        match self.subs.get_mut(sid) {
            Some(Subscription::Stream(consumer)) => {
                consumer.pending.remove(&seq);
                self.send_ok(frame.id, Answer::default());
                Ok(())
            }
            Some(Subscription::Core { .. }) => Err(FrameError::new(
                "invalid",
                format!("subscription {sid:?} is not on a stream: nothing to acknowledge"),
            )),
            None => Err(
                FrameError::new("not_found", format!("no subscription {sid:?}")).with("sid", sid),
            ),
        }
    }

    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<(), FrameError> {
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
            self.peer.roles(),
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
        let sid = Sid::new(sid);
        match frame.stream.as_deref() {
            None => self.subscribe_core(frame, sid, pattern, policy),
            Some(stream_name) => self.subscribe_stream(frame, sid, pattern, stream_name),
        }
    }

    /// A core subscription: into the routing trie, alone or in a queue group.
    fn subscribe_core(
        &mut self,
        frame: &Frame,
        sid: Sid,
        pattern: &str,
        policy: Backpressure,
    ) -> Result<(), FrameError> {
        if frame.from_seq.is_some() || frame.from_time.is_some() {
            return Err(FrameError::new(
                "invalid",
                "from_seq and from_time replay a stream: name it with `stream`",
            ));
        }
        let sub = Arc::new(Sub {
            conn: Arc::clone(&self.conn),
            sid: sid.clone(),
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
        self.count_subscription()?;
        self.bus.subscribe(pattern, Arc::clone(&sub));
        self.subs.insert(
            sid.as_str().into(),
            Subscription::Core {
                pattern: pattern.into(),
                sub,
            },
        );
        let answer = Answer {
            sid: Some(sid.to_string()),
            ..Answer::default()
        };
        self.send_ok(frame.id, answer);
        Ok(())
    }

    /// A stream consumer: replays from a sequence number or a time, then follows.
    fn subscribe_stream(
        &mut self,
        frame: &Frame,
        sid: Sid,
        pattern: &str,
        stream_name: &str,
    ) -> Result<(), FrameError> {
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
        self.count_subscription()?;
        let spec = stream.spec();
        stream.watch(&self.conn);
        let consumer = Consumer {
            stream: Arc::clone(&stream),
            sid: sid.clone(),
            filter: pattern.into(),
            next_seq: start,
            pending: BTreeMap::new(),
            deadlines: VecDeque::new(),
            redeliver: VecDeque::new(),
            ack_wait: Duration::from_millis(spec.ack_wait_ms),
            max_deliver: spec.max_deliver,
            dead_letter_subject: spec.dead_letter_subject(),
        };
        self.subs.insert(
            sid.as_str().into(),
            Subscription::Stream(Box::new(consumer)),
        );
        let answer = Answer {
            sid: Some(sid.to_string()),
            stream: Some(stream.name.clone()),
            from_seq: Some(start),
            ..Answer::default()
        };
        self.send_ok(frame.id, answer);
        self.conn.notify.notify_one();
        Ok(())
    }

    pub(super) fn drop_subscription(&self, subscription: Subscription) {
        self.bus.conns.unsubscribed(self.conn.principal);
        if let Subscription::Core { pattern, sub } = subscription {
            self.bus.unsubscribe(&pattern, &sub);
        }
    }

    /// Counts one more subscription of this connection's principal, or refuses it
    /// past `subscriptions_per_principal_max` (on this node, all its connections).
    fn count_subscription(&self) -> Result<(), FrameError> {
        let max = self.bus.config.subscriptions_per_principal_max;
        self.bus
            .conns
            .subscribed(self.conn.principal, max)
            .map_err(|()| {
                FrameError::new(
                    "too_many_subscriptions",
                    format!(
                        "{} holds {max} subscriptions on this node, the most one principal may (subscriptions_per_principal_max)",
                        self.conn.address
                    ),
                )
                .with("max", max)
                .with("scope", "principal")
            })
    }

    /// Moves stream messages into the connection's queue while it has room and the
    /// consumer is under its unacknowledged maximum.
    pub(super) fn pull_streams(&mut self) {
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
                    sid: consumer.sid.clone(),
                    msg: Arc::clone(&stored.msg),
                    delivery: count,
                };
                if self.conn.push(delivery, Backpressure::RejectPublisher) != crate::Pushed::Queued
                {
                    break;
                }
                self.bus.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                room -= 1;
            }
        }
    }

    /// The earliest ack deadline still pending.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
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
    pub(super) fn expire(&mut self, now: Instant) {
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
                        let letter = DeadLetter {
                            stream: consumer.stream.name.clone(),
                            seq,
                            consumer: consumer.sid.to_string(),
                            address: self.conn.address.to_string(),
                            deliveries: count,
                            message: serde_json::from_str(&stored.record).unwrap_or(Value::Null),
                        };
                        dead.push((consumer.dead_letter_subject.clone(), letter));
                    }
                } else {
                    consumer.redeliver.push_back(seq);
                }
            }
        }
        for (subject, letter) in dead {
            let data = serde_json::to_string(&letter).expect("a dead letter always encodes");
            tracing::info!(%subject, "dead letter: {data}");
            self.bus.publish_system(&subject, &data);
        }
        self.conn.notify.notify_one();
    }
}
