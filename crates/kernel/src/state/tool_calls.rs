//! Recording a call of an upstream MCP server's tool (see `tool_calls.rs`): its
//! charges settled and its approval used, in one decision, or nothing.

use super::*;
use crate::grants::{GrantState, GrantWhat};
use crate::tool_calls::{check_sha256, check_tool_name, ToolCallRecord, TOOL_CALL_CHARGES_MAX};

impl State {
    pub(super) fn record_tool_call(
        &mut self,
        fx: &mut Effects,
        command: &Command,
        actor_address: &str,
        record: &ToolCallRecord,
    ) -> Event {
        const ACTION: &str = "mcp.tool_call";
        let actor = command.actor;
        let subject = format!("tool:{}", record.tool);
        if let Err(message) =
            check_tool_name(&record.tool).and_then(|()| check_sha256(&record.arguments_sha256))
        {
            return Event::denied(ACTION, subject, invalid(message));
        }
        if record.charges.len() > TOOL_CALL_CHARGES_MAX {
            let message = format!("a call settles at most {TOOL_CALL_CHARGES_MAX} reservations");
            return Event::denied(ACTION, subject, invalid(message));
        }
        // Everything that can refuse is checked before anything changes.
        let mut seen = Vec::new();
        for (id, actual) in &record.charges {
            if seen.contains(id) {
                return Event::denied(ACTION, subject, invalid(format!("reservation {id} twice")));
            }
            seen.push(*id);
            if let Err(event) = self.own_reservation(actor, *id, ACTION) {
                return *event;
            }
            let reservation = self.book.reservation(*id).expect("checked above");
            if reservation.state != ReservationState::Reserved {
                let message = format!("reservation {id} is already settled");
                return Event::denied(ACTION, subject, invalid(message));
            }
            if *actual > reservation.amount {
                let message = format!(
                    "reservation {id} holds {} {}; a call is charged its price, not {actual}",
                    reservation.amount, reservation.resource
                );
                return Event::denied(ACTION, subject, invalid(message));
            }
        }
        if let Some(id) = record.grant {
            let usable = match self.grants.get(id) {
                None => Err(not_found("grant", id)),
                Some(grant) if grant.requester != actor => Err(forbidden(format!(
                    "grant {id} approved a call of {}, not of {actor_address}",
                    grant.requester_address
                ))),
                // Approved (active, or ended by its time while the call it approved
                // ran: the call happened and is charged), never denied, undecided or
                // used.
                Some(grant)
                    if !(grant.state == GrantState::Active
                        || (grant.state == GrantState::Expired
                            && grant.decided_at_ms.is_some())) =>
                {
                    Err(invalid(format!(
                        "grant {id} is {}, not approved",
                        grant.state.as_str()
                    )))
                }
                Some(grant) => match &grant.what {
                    GrantWhat::ToolCall {
                        tool,
                        arguments_sha256,
                    } if *tool == record.tool && *arguments_sha256 == record.arguments_sha256 => {
                        Ok(())
                    }
                    _ => Err(invalid(format!(
                        "grant {id} does not approve this call of {} with these arguments",
                        record.tool
                    ))),
                },
            };
            if let Err(reason) = usable {
                return Event::denied(ACTION, subject, reason);
            }
        }
        let mut charged = Vec::new();
        for (id, actual) in &record.charges {
            let event = self.commit(actor, actor_address, *id, *actual);
            if let Effect::Committed {
                resource,
                charged: c,
                ..
            } = &event.effect
            {
                charged.push((*resource, *c));
            }
            fx.consequences.push(event);
        }
        if let Some(id) = record.grant {
            if self
                .grants
                .get(id)
                .is_some_and(|g| g.state == GrantState::Active)
            {
                self.grants.unschedule(id);
            }
            self.grants.edit(id).expect("checked above").state = GrantState::Used;
        }
        Event::allowed(
            ACTION,
            subject,
            Effect::ToolCalled {
                tool: record.tool.clone(),
                arguments_sha256: record.arguments_sha256.clone(),
                outcome: record.outcome,
                result_bytes: record.result_bytes,
                duration_ms: record.duration_ms,
                charged,
                grant: record.grant,
            },
        )
    }
}
