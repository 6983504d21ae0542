//! `pub`: checks a publish (subject, headers, scope, edge gating), routes it to
//! subscribers and appends it to a capturing stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::frame::{parse_priority, required, Frame, FrameError};
use super::{Publishing, Session, HEADERS_BYTES_MAX};
use crate::inside::{Payer, Refused};
use crate::subject::check_subject;
use crate::{check_headers, policy, MsgParts};

impl Session {
    pub(super) fn publish(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let subject = required(frame.subject.as_deref(), "pub", "subject")?;
        // Checked and allowed at this session's last publish.
        let known = self
            .publishing
            .as_ref()
            .is_some_and(|publishing| publishing.allowed == subject);
        if !known {
            check_subject(subject).map_err(|e| {
                FrameError::new("invalid", format!("subject: {e}")).with("field", "subject")
            })?;
        }
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
        if !known {
            policy::may_publish(&bus.config, &self.conn.address, self.peer.roles(), subject)
                .and_then(|()| self.peer.may_publish(subject))
                .map_err(|message| {
                    bus.metrics.denied.fetch_add(1, Ordering::Relaxed);
                    FrameError::new("forbidden", message).with("subject", subject)
                })?;
        }
        let publishing = self
            .publishing
            .get_or_insert_with(|| Publishing::new(bus.meters.meter(self.conn.principal)));
        if !known {
            publishing.allowed.clear();
            publishing.allowed.push_str(subject);
        }
        let payer = Payer::Batch(&publishing.meter, &mut publishing.credit);
        let parts = MsgParts {
            subject,
            data: data.get(),
            priority,
            from: &self.conn.address,
            headers: frame.headers.map(RawValue::get),
            reply_to: frame.reply_to.as_deref(),
        };
        let reply = frame
            .id
            .map(|id| (Arc::clone(&self.conn), id.get().to_string()));
        let (routed, stored) =
            bus.deliver(payer, &parts, reply)
                .map_err(|refused| match refused {
                    Refused::Denied(reason) => FrameError::from_reason(&reason),
                    Refused::Backpressure(message) => FrameError::new("backpressure", message),
                    Refused::LeaseSpent {
                        what,
                        retry_after_ms,
                    } => FrameError::new(
                        "lease_spent",
                        Refused::lease_spent_message(what, retry_after_ms),
                    )
                    .with("resource", what)
                    .with("retry_after_ms", retry_after_ms)
                    .with("retry_after", retry_after_ms.div_ceil(1000)),
                    other => FrameError::new("invalid", format!("{other:?}")),
                })?;
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
        if !stored && frame.id.is_some() {
            let answer = colony_api::bus::Answer {
                delivered: Some(routed.delivered as u64),
                ..colony_api::bus::Answer::default()
            };
            self.send_ok(frame.id, answer);
        }
        Ok(())
    }
}
