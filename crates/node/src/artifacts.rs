//! What the node lends the artifact runtime: the bus (as an inside principal, with
//! the same authorization and edge gating as a WebSocket client) and the LLM gateway
//! (the same reservation and settlement as `POST /v1/chat/completions`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use colony_artifacts::host::code;
use colony_artifacts::{BoxFuture, HostError, Identity, Services};
use colony_bus::inside::{Inside, Refused};
use colony_kernel::PrincipalId;

use crate::bus::Bus;
use crate::gateway::{Answer, CallRequest, Caller, Dialect, Gateway};

pub(crate) struct NodeServices {
    pub(crate) bus: Arc<Bus>,
    pub(crate) gateway: Arc<Gateway>,
    inside: Mutex<HashMap<PrincipalId, Arc<Inside>>>,
}

impl NodeServices {
    pub(crate) fn new(bus: Arc<Bus>, gateway: Arc<Gateway>) -> NodeServices {
        NodeServices {
            bus,
            gateway,
            inside: Mutex::new(HashMap::new()),
        }
    }

    fn inside(&self, me: &Identity) -> Arc<Inside> {
        let mut inside = self.inside.lock().expect("inside lock");
        Arc::clone(inside.entry(me.principal).or_insert_with(|| {
            let roles = self
                .bus
                .state
                .read()
                .expect("state lock")
                .principal(me.principal)
                .map(|p| p.roles.clone())
                .unwrap_or_default();
            Arc::new(Inside::new(&self.bus, me.principal, &me.address, roles))
        }))
    }
}

fn refused(refused: Refused) -> HostError {
    match refused {
        Refused::Invalid(message) => HostError::invalid(message),
        Refused::Forbidden(message) => HostError::new(code::FORBIDDEN, message),
        Refused::Denied(reason) => colony_artifacts::host_denied(&reason),
        Refused::Backpressure(message) => HostError::new(code::UNAVAILABLE, message),
        Refused::LeaseSpent {
            what,
            retry_after_ms,
        } => HostError::new(
            code::UNAVAILABLE,
            Refused::lease_spent_message(what, retry_after_ms),
        ),
        Refused::Full(colony_bus::Full::Node { max }) => HostError::new(
            code::UNAVAILABLE,
            format!("the node holds its maximum of {max} bus connections"),
        ),
        Refused::Full(colony_bus::Full::Principal { max }) => HostError::new(
            code::UNAVAILABLE,
            format!("this artifact holds its maximum of {max} bus connections"),
        ),
    }
}

impl Services for NodeServices {
    fn publish(&self, me: &Identity, subject: &str, data: &str) -> Result<(), HostError> {
        self.inside(me)
            .publish(&self.bus, subject, data)
            .map(|_| ())
            .map_err(refused)
    }

    fn subscribe(&self, me: &Identity, pattern: &str) -> Result<(), HostError> {
        self.inside(me)
            .subscribe(&self.bus, pattern)
            .map_err(refused)
    }

    fn receive(&self, me: &Identity) -> Option<String> {
        self.inside(me).receive()
    }

    fn wait_message(&self, me: &Identity) -> BoxFuture<()> {
        let inbox = self.inside(me).inbox();
        Box::pin(async move {
            match inbox {
                Some(conn) => conn.notified().await,
                None => std::future::pending().await,
            }
        })
    }

    fn chat(&self, me: &Identity, request: String) -> BoxFuture<Result<String, HostError>> {
        let gateway = Arc::clone(&self.gateway);
        let me = me.clone();
        Box::pin(async move {
            let mut body: serde_json::Value = serde_json::from_str(&request)
                .map_err(|e| HostError::invalid(format!("a chat request is JSON: {e}")))?;
            if body.get("stream").and_then(|s| s.as_bool()) == Some(true) {
                return Err(HostError::invalid(
                    "an artifact's chat call does not stream",
                ));
            }
            body["stream"] = serde_json::Value::Bool(false);
            let caller = Caller {
                id: me.principal,
                address: &me.address,
            };
            let prepared = gateway
                .prepare(caller, None, &body)
                .await
                .map_err(|refusal| {
                    let kind = if refusal.status == 429 || refusal.status == 402 {
                        code::DENIED
                    } else if refusal.status >= 500 {
                        code::UNAVAILABLE
                    } else {
                        code::INVALID
                    };
                    HostError::new(kind, format!("{}: {}", refusal.code, refusal.message))
                })?;
            let call = CallRequest {
                dialect: Dialect::OpenAi,
                stream: false,
                chat: body,
                anthropic: None,
                anthropic_version: None,
            };
            match gateway.call(prepared, call).await {
                Answer::Whole { body, .. } => Ok(String::from_utf8_lossy(&body).into_owned()),
                Answer::Relayed { status, body } => Err(HostError::invalid(format!(
                    "the upstream refused the request ({status}): {}",
                    String::from_utf8_lossy(&body)
                ))),
                Answer::Refused(refusal) => Err(HostError::new(
                    code::UNAVAILABLE,
                    format!("{}: {}", refusal.code, refusal.message),
                )),
                Answer::Stream { .. } => Err(HostError::new(
                    code::UNAVAILABLE,
                    "the upstream answered a stream to a call that asked for none",
                )),
            }
        })
    }

    fn end(&self, me: &Identity) {
        if let Some(inside) = self
            .inside
            .lock()
            .expect("inside lock")
            .remove(&me.principal)
        {
            inside.end(&self.bus);
        }
    }
}

/// What hears of durable decisions in a node: the bus (which publishes them), and
/// the artifact runtime, whose idle artifacts are woken when tasks become claimable.
pub(crate) struct DecisionFanout {
    pub(crate) bus: Arc<Bus>,
    pub(crate) artifacts: colony_artifacts::Runtime,
    /// The MCP side: tool calls waiting for a person's approval, clients listening
    /// for tasks' changes.
    pub(crate) mcp: Arc<crate::mcp::McpStatus>,
}

impl colony_pipeline::sequencer::DecisionSink for DecisionFanout {
    fn wants_decisions(&self) -> bool {
        self.bus.wants_decisions() || self.mcp.approvals.any_waiting() || self.mcp.watches.any()
    }

    fn wants_offers(&self) -> bool {
        self.bus.wants_offers() || self.artifacts.any_driven()
    }

    fn offer(&self, tasks: &[colony_kernel::TaskAddress]) {
        if self.bus.wants_offers() {
            self.bus.offer(tasks);
        }
        self.artifacts.wake_idle();
    }

    fn admitted(&self, workers: &[u64]) {
        self.bus.admitted(workers);
    }

    fn decided(&self, command: &colony_kernel::Command, events: &[colony_kernel::Event]) {
        self.bus.decided(command, events);
        if self.mcp.approvals.any_waiting() {
            self.mcp.approvals.decided(events);
        }
        if self.mcp.watches.any() {
            self.mcp.watches.decided(events);
        }
    }
}
