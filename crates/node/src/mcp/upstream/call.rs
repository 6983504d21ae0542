//! One governed call of an upstream tool: checked (scope, roles, standing, the
//! justification, the arguments' size, the rate), approved by a human when the
//! tool says so, priced (reserved before), made within the upstream's deadline, and
//! recorded with what it was charged (`RecordToolCall`), even when the caller left.

use std::sync::Arc;
use std::time::Instant;

use colony_kernel::grants::{GrantState, GrantWhat};
use colony_kernel::tool_calls::{ToolCallRecord, ToolOutcome};
use colony_kernel::{CommandBody, Effect, PrincipalId, ReservationId, Resource};
use colony_pipeline::outbox::Answered;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock};
use serde_json::{Map, Value};
use sha2::Digest;

use super::config::{Approval, ToolRule};
use super::connection::{CallFailure, Connection};
use super::Upstreams;
use crate::api::AppState;
use crate::auth::Caller;
use crate::mcp::progress::Progress;

/// Most of the arguments a request for approval shows the approver.
const ARGUMENTS_SHOWN_BYTES_MAX: usize = 1_024;

fn refused(text: String) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(text)]).into()
}

impl Upstreams {
    /// Calls `name` (`{server}__{tool}`) for `caller`; every refusal and failure is
    /// a tool error that says why.
    pub(crate) async fn call(
        self: &Arc<Self>,
        app: &AppState,
        caller: &Caller,
        name: &str,
        mut arguments: Map<String, Value>,
        progress: Option<Progress>,
    ) -> CallToolResponse {
        let Some((connection, tool, rule)) = self.find(name) else {
            return refused(format!("no tool named `{name}`"));
        };
        let offered = connection.cached_tools();
        let Some(upstream_tool) = offered.iter().find(|t| t.name == tool) else {
            return refused(format!(
                "no tool named `{name}`: the upstream `{}` lists no `{tool}` (or is down)",
                connection.name()
            ));
        };
        if let Err(why) = super::may_call(caller, &connection.config, &tool, rule) {
            return refused(why);
        }
        if let Some(quarantine) = app
            .shared
            .state
            .read()
            .expect("state lock")
            .quarantine_over(caller.id)
        {
            return refused(format!(
                "{name}: {} is quarantined (since {} ms); a human member releases it",
                caller.address, quarantine.since_ms
            ));
        }
        // The justification is Colony's, unless the upstream's tool takes one itself.
        let own_justification = upstream_tool
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key("justification"));
        let why = match if own_justification {
            arguments.get("justification").cloned()
        } else {
            arguments.remove("justification")
        } {
            Some(Value::String(why)) if !why.trim().is_empty() => why,
            _ => {
                return refused(format!(
                    "{name}: `justification` is required: say why you call it"
                ))
            }
        };
        let encoded = Value::Object(arguments.clone()).to_string();
        if encoded.len() > rule.arguments_bytes_max {
            return refused(format!(
                "{name}: the arguments are {} bytes; this tool takes at most {}",
                encoded.len(),
                rule.arguments_bytes_max
            ));
        }
        let key = format!("{}__{}", connection.name(), rule.name);
        let now_ms = crate::sequencer::now_ms();
        if let Err(why) = self
            .rates
            .take(caller.id, &key, rule.rate_per_minute, now_ms)
        {
            return refused(format!("{name}: {why}"));
        }
        let digest = hex::encode(sha2::Sha256::digest(encoded.as_bytes()));
        let grant = match rule.approval {
            Approval::None => None,
            Approval::Human => match self
                .approve(app, caller, name, rule, &digest, &encoded, &why, progress)
                .await
            {
                Ok(grant) => Some(grant),
                Err(text) => return refused(text),
            },
        };
        let call = Governed {
            app: app.clone(),
            connection: Arc::clone(connection),
            caller: caller.id,
            name: name.to_string(),
            tool,
            rule: rule.clone(),
            digest,
            arguments,
            arguments_bytes: encoded.len() as u64,
            why,
            grant,
        };
        // Once priced, the call runs and is recorded even if the caller leaves.
        match tokio::spawn(call.run()).await {
            Ok(response) => response,
            Err(error) => refused(format!("{name}: the call failed inside the node: {error}")),
        }
    }

    /// Asks for a human's approval of this call and waits for it; the grant when
    /// approved.
    #[allow(clippy::too_many_arguments)]
    async fn approve(
        &self,
        app: &AppState,
        caller: &Caller,
        name: &str,
        rule: &ToolRule,
        digest: &str,
        encoded: &str,
        why: &str,
        mut progress: Option<Progress>,
    ) -> Result<u64, String> {
        let mut shown = cut(encoded.to_string(), ARGUMENTS_SHOWN_BYTES_MAX);
        if shown.len() < encoded.len() {
            shown.push_str("...");
        }
        let justification = bounded(format!("[mcp] call {name} with {shown}: {why}"));
        let body = CommandBody::RequestGrant {
            what: GrantWhat::ToolCall {
                tool: name.to_string(),
                arguments_sha256: digest.to_string(),
            },
            ttl_ms: rule.approval_timeout_ms,
        };
        let outcome = app
            .shared
            .submitter
            .submit(caller.id, justification, body)
            .await
            .map_err(|e| format!("{name}: asking for approval: {}", e.message))?;
        let grant = match outcome.primary.effect {
            Effect::GrantRequested { grant, .. } if outcome.primary.decision.is_allowed() => grant,
            _ => {
                return Err(format!(
                    "{name}: asking for approval was refused: {}",
                    colony_api::explain(&outcome.primary.reason)
                ))
            }
        };
        let mut waiter = self
            .approvals
            .wait(grant)
            .map_err(|why| format!("{name}: {why}"))?;
        let pending = |app: &AppState| {
            app.shared
                .state
                .read()
                .expect("state lock")
                .grant_request(grant)
                .map(|g| g.state)
        };
        if pending(app) == Some(GrantState::Pending) {
            // The kernel ends the request at its ttl; a little more for the decision
            // to arrive. Meanwhile a client that asked hears how the wait goes.
            let timeout_s = rule.approval_timeout_ms as f64 / 1_000.0;
            let wait = std::time::Duration::from_millis(rule.approval_timeout_ms + 5_000);
            let deadline = tokio::time::Instant::now() + wait;
            let started = tokio::time::Instant::now();
            loop {
                if let Some(progress) = progress.as_mut() {
                    let waited = started.elapsed().as_secs_f64();
                    let message = format!(
                        "{name}: waiting for a human member other than {} to approve (approval request {grant}: \
                         `colony grants approve {grant}`); {:.0} s of {:.0} s",
                        caller.address, waited, timeout_s
                    );
                    progress.tell(waited, Some(timeout_s), message).await;
                }
                let tick = if progress.is_some() {
                    crate::mcp::progress::PROGRESS_EVERY
                } else {
                    wait
                };
                let until = deadline.min(tokio::time::Instant::now() + tick);
                match tokio::time::timeout_at(until, &mut waiter.told).await {
                    Ok(_) => break,
                    Err(_) if tokio::time::Instant::now() >= deadline => break,
                    Err(_) => {}
                }
            }
        } else {
            drop(waiter);
        }
        let decided = app
            .shared
            .state
            .read()
            .expect("state lock")
            .grant_request(grant)
            .map(|g| {
                (
                    g.state,
                    g.decided_by.clone().unwrap_or_else(|| "a human".into()),
                )
            });
        let Some((state, by)) = decided else {
            return Err(format!("{name}: approval request {grant} is gone"));
        };
        match state {
            GrantState::Active => {
                if let Some(progress) = progress.as_mut() {
                    let message = format!("{name}: {by} approved (approval request {grant}); calling");
                    let total = rule.approval_timeout_ms as f64 / 1_000.0;
                    progress.tell(total, Some(total), message).await;
                }
                Ok(grant)
            }
            GrantState::Denied => Err(format!(
                "{name}: {by} denied this call (approval request {grant}); it was not made"
            )),
            _ => Err(format!(
                "{name}: nobody approved this call within {} s (approval request {grant}); it was not made",
                rule.approval_timeout_ms / 1_000
            )),
        }
    }
}

/// A call past its checks, run to its record.
struct Governed {
    app: AppState,
    connection: Arc<Connection>,
    caller: PrincipalId,
    name: String,
    tool: String,
    rule: ToolRule,
    digest: String,
    arguments: Map<String, Value>,
    arguments_bytes: u64,
    why: String,
    grant: Option<u64>,
}

impl Governed {
    async fn run(self) -> CallToolResponse {
        let name = self.name.clone();
        let charges = match self.reserve().await {
            Ok(charges) => charges,
            Err(text) => return refused(text),
        };
        let started = Instant::now();
        let called = self
            .connection
            .call(&self.tool, self.arguments.clone())
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let upstream = self.connection.name().to_string();
        let (outcome, result_bytes, response) = match called {
            Ok(result) => {
                let bytes = serde_json::to_vec(&result).map_or(0, |b| b.len()) as u64;
                if bytes > self.rule.result_bytes_max as u64 {
                    let text = format!(
                        "{name}: the upstream `{upstream}` answered {bytes} bytes; this tool passes on at most {}",
                        self.rule.result_bytes_max
                    );
                    (ToolOutcome::TooLarge, bytes, refused(text))
                } else {
                    let outcome = if result.is_error == Some(true) {
                        ToolOutcome::ToolError
                    } else {
                        ToolOutcome::Ok
                    };
                    (outcome, bytes, result.into())
                }
            }
            Err(CallFailure::NotCalled(why)) => (
                ToolOutcome::NotCalled,
                0,
                refused(format!("{name}: not called: {why}")),
            ),
            Err(CallFailure::Timeout) => (
                ToolOutcome::Timeout,
                0,
                refused(format!(
                    "{name}: the upstream `{upstream}` did not answer within {} ms; the call was cut",
                    self.connection.config.timeout_ms
                )),
            ),
            Err(CallFailure::Failed(why)) => (
                ToolOutcome::UpstreamError,
                0,
                refused(format!("{name}: the upstream `{upstream}` failed: {why}")),
            ),
        };
        // A call that reached the upstream is charged its price; one that did not,
        // nothing.
        let charged = outcome != ToolOutcome::NotCalled;
        let record = ToolCallRecord {
            tool: name.clone(),
            arguments_sha256: self.digest.clone(),
            arguments_bytes: self.arguments_bytes,
            outcome,
            result_bytes,
            duration_ms,
            charges: charges
                .iter()
                .map(|(id, amount)| (*id, if charged { *amount } else { 0 }))
                .collect(),
            grant: self.grant,
        };
        let justification = bounded(format!(
            "[mcp] {name}: {} ({result_bytes} bytes in {duration_ms} ms): {}",
            outcome.as_str(),
            self.why
        ));
        let recorded = self
            .app
            .shared
            .submitter
            .submit_until_decided(
                self.caller,
                justification,
                CommandBody::RecordToolCall(Box::new(record)),
                Answered::WhenDurable,
            )
            .await;
        match recorded {
            Ok(outcome) if outcome.primary.decision.is_allowed() => {}
            Ok(outcome) => tracing::error!(
                tool = %name,
                "a tool call's record was refused: {:?}",
                outcome.primary.reason
            ),
            Err(error) => {
                tracing::error!(tool = %name, "a tool call was not recorded: {}", error.message)
            }
        }
        response
    }

    /// Reserves the call's price, resource by resource; all or none.
    async fn reserve(&self) -> Result<Vec<(ReservationId, u64)>, String> {
        let prices = [
            (Resource::IoOps, self.rule.io_ops),
            (Resource::ComputeMs, self.rule.compute_ms),
            (Resource::LlmBudgetUsd, self.rule.micro_usd),
        ];
        let justification = bounded(format!(
            "[mcp] {} (arguments sha256 {}, {} bytes): {}",
            self.name,
            &self.digest[..16],
            self.arguments_bytes,
            self.why
        ));
        let submitter = &self.app.shared.submitter;
        let mut held: Vec<(ReservationId, u64)> = Vec::new();
        let mut refusal = None;
        for (resource, amount) in prices.into_iter().filter(|(_, amount)| *amount > 0) {
            let body = CommandBody::Reserve {
                resource,
                amount,
                ttl_ms: Some(self.connection.config.timeout_ms + 60_000),
            };
            match submitter
                .submit(self.caller, justification.clone(), body)
                .await
            {
                Ok(outcome) => match outcome.primary.effect {
                    Effect::Reserved { reservation, .. }
                        if outcome.primary.decision.is_allowed() =>
                    {
                        held.push((reservation, amount))
                    }
                    _ => {
                        refusal = Some(format!(
                            "{}: refused: {} (ask for more with grant_request)",
                            self.name,
                            colony_api::explain(&outcome.primary.reason)
                        ));
                        break;
                    }
                },
                Err(error) => {
                    refusal = Some(format!("{}: {}", self.name, error.message));
                    break;
                }
            }
        }
        let Some(refusal) = refusal else {
            return Ok(held);
        };
        for (reservation, _) in held {
            let _ = submitter
                .submit_until_decided(
                    self.caller,
                    format!("[mcp] {}: not called", self.name),
                    CommandBody::Release { reservation },
                    Answered::WhenDurable,
                )
                .await;
        }
        Err(refusal)
    }
}

/// `text` cut to what a justification holds.
fn bounded(text: String) -> String {
    cut(text, colony_kernel::JUSTIFICATION_BYTES_MAX)
}

/// `text` cut to at most `max` bytes, at a character's boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
