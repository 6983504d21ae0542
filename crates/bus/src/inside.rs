//! The bus for principals that live inside the node (artifacts): publishing with
//! the same authorization, edge gating and stream capture as a WebSocket publish,
//! and an inbox (a connection without a socket) that their subscriptions fill.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use colony_kernel::{PrincipalId, Priority, Reason, Role};

use crate::credit::Credit;
use crate::meter::{Meter, Spent};
use crate::subject::{check_pattern, check_subject, Tokens, SUBJECT_TOKENS_MAX};
use crate::{policy, Backpressure, Bus, Conn, MsgParts, Routed, Sub};

/// Why a publish or a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Bad subject or data.
    Invalid(String),
    /// Outside the principal's authorization.
    Forbidden(String),
    /// The edge gate said no (io_ops or data_creation_bytes).
    Denied(Reason),
    /// In a cluster, this node's lease of `what` is spent while the cluster has
    /// room: try again after `retry_after_ms` (the node's next lease round).
    LeaseSpent {
        what: &'static str,
        retry_after_ms: u64,
    },
    /// A stream or a subscriber could not take it.
    Backpressure(String),
    /// The node, or the principal, holds as many connections as it may.
    Full(crate::Full),
}

impl Refused {
    /// A lease refusal's words for the agent.
    pub fn lease_spent_message(what: &str, retry_after_ms: u64) -> String {
        format!(
            "this node's share of {what} is spent until its next lease (within {retry_after_ms} ms); \
             the cluster still has room: try again then"
        )
    }
}

/// Who pays for a publish: its principal's meter, for this message alone, or a
/// session's credit, for the batch under way (`credit.rs`).
pub(crate) enum Payer<'a> {
    Each(&'a Meter),
    Batch(&'a Meter, &'a mut Credit),
}

impl Bus {
    /// Gates a checked publish at the edge, routes it, and appends it to the stream
    /// that captures its subject (answering `reply` once stored, if given).
    pub(crate) fn deliver(
        &self,
        mut payer: Payer<'_>,
        parts: &MsgParts,
        reply: Option<(Arc<Conn>, String)>,
    ) -> Result<(Routed, bool), Refused> {
        let tokens = Tokens::of(parts.subject).ok_or_else(|| {
            Refused::Invalid(format!("a subject has at most {SUBJECT_TOKENS_MAX} tokens"))
        })?;
        let bytes = parts.data.len() as u64;
        let spent = match &mut payer {
            Payer::Each(meter) => self.meters.take(meter, parts.from, bytes),
            Payer::Batch(meter, credit) => self.meters.spend(meter, credit, parts.from, bytes),
        };
        spent.map_err(|reason| {
            self.metrics.denied.fetch_add(1, Ordering::Relaxed);
            match reason {
                Spent::Denied(reason) => Refused::Denied(reason),
                Spent::Lease {
                    what,
                    retry_after_ms,
                } => Refused::LeaseSpent {
                    what,
                    retry_after_ms,
                },
            }
        })?;
        let routed = self.route_published(Arc::new(parts.to_msg(None)), &tokens);
        match payer {
            Payer::Each(_) => {
                self.metrics.count_published(1, bytes);
                self.count(&routed);
            }
            Payer::Batch(_, credit) => credit.count(bytes, &routed),
        }
        let stream = self.streams.capturing(&tokens);
        if let Some(stream) = &stream {
            self.streams
                .append(stream, parts, reply)
                .map_err(|message| {
                    Refused::Backpressure(format!("stream {}: {message}", stream.name))
                })?;
        }
        Ok((routed, stream.is_some()))
    }
}

/// An inbox: the connection its subscriptions fill, and the subscriptions by
/// pattern.
type Inbox = (Arc<Conn>, Vec<(String, Arc<Sub>)>);

/// One inside principal's use of the bus.
pub struct Inside {
    principal: PrincipalId,
    address: String,
    roles: Vec<Role>,
    meter: Arc<Meter>,
    inbox: Mutex<Option<Inbox>>,
}

impl Inside {
    pub fn new(bus: &Bus, principal: PrincipalId, address: &str, roles: Vec<Role>) -> Inside {
        Inside {
            principal,
            address: address.to_string(),
            roles,
            meter: bus.meters.meter(principal),
            inbox: Mutex::new(None),
        }
    }

    /// Publishes `data` (JSON) on `subject`; how many subscribers got it.
    pub fn publish(&self, bus: &Bus, subject: &str, data: &str) -> Result<usize, Refused> {
        check_subject(subject).map_err(|e| Refused::Invalid(format!("subject: {e}")))?;
        policy::may_publish(&bus.config, &self.address, &self.roles, subject).map_err(|m| {
            bus.metrics.denied.fetch_add(1, Ordering::Relaxed);
            Refused::Forbidden(m)
        })?;
        let parts = MsgParts {
            subject,
            data,
            priority: Priority::Normal,
            from: &self.address,
            headers: None,
            reply_to: None,
        };
        let (routed, _) = bus.deliver(Payer::Each(&self.meter), &parts, None)?;
        Ok(routed.delivered)
    }

    /// Subscribes the inbox to `pattern` (the inbox is made at the first).
    pub fn subscribe(&self, bus: &Bus, pattern: &str) -> Result<(), Refused> {
        check_pattern(pattern).map_err(|e| Refused::Invalid(format!("subject: {e}")))?;
        policy::may_subscribe(&bus.config, &self.address, &self.roles, pattern).map_err(|m| {
            bus.metrics.denied.fetch_add(1, Ordering::Relaxed);
            Refused::Forbidden(m)
        })?;
        let mut inbox = self.inbox.lock().expect("inbox lock");
        if inbox.is_none() {
            let conn = bus
                .connect(self.principal, &self.address, 0, None)
                .map_err(Refused::Full)?;
            *inbox = Some((conn, Vec::new()));
        }
        let (conn, subs) = inbox.as_mut().expect("made above");
        let sub = Arc::new(Sub {
            conn: Arc::clone(conn),
            sid: crate::Sid::new(&format!("inside-{}", subs.len() + 1)),
            queue: None,
            policy: Backpressure::DropOldest,
        });
        bus.subscribe(pattern, Arc::clone(&sub));
        subs.push((pattern.to_string(), sub));
        Ok(())
    }

    /// The next message in the inbox.
    pub fn receive(&self) -> Option<String> {
        let inbox = self.inbox.lock().expect("inbox lock");
        inbox.as_ref().and_then(|(conn, _)| conn.pop())
    }

    /// The inbox's connection, to wait on (`None` before the first subscription).
    pub fn inbox(&self) -> Option<Arc<Conn>> {
        let inbox = self.inbox.lock().expect("inbox lock");
        inbox.as_ref().map(|(conn, _)| Arc::clone(conn))
    }

    /// Unsubscribes everything and lets the inbox go.
    pub fn end(&self, bus: &Bus) {
        if let Some((conn, subs)) = self.inbox.lock().expect("inbox lock").take() {
            for (pattern, sub) in subs {
                bus.unsubscribe(&pattern, &sub);
            }
            bus.disconnected(&conn);
        }
    }
}
