//! What the node's MCP side holds right now, for the dashboard: calls being
//! answered, calls waiting for a person, open subscriptions and by whom, and the
//! upstream servers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use colony_api::dashboard::{McpActivity, McpSubscriber};
use colony_kernel::State;

use super::upstream::{Approvals, Upstreams};
use super::watches::TaskWatches;

/// The node's MCP parts, made before the node serves (the upstreams once they
/// started).
#[derive(Default)]
pub struct McpStatus {
    pub(crate) approvals: Arc<Approvals>,
    pub(crate) watches: Arc<TaskWatches>,
    pub(crate) calls_in_flight: AtomicU64,
    pub(crate) upstreams: OnceLock<Arc<Upstreams>>,
}

/// One `tools/call` being answered; counted until dropped.
pub(crate) struct InFlight<'a>(&'a McpStatus);

impl McpStatus {
    pub(crate) fn call_started(&self) -> InFlight<'_> {
        self.calls_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

impl crate::app::McpActivitySource for McpStatus {
    fn activity(&self, state: &State) -> McpActivity {
        let mut subscribers: Vec<McpSubscriber> = self
            .watches
            .by_principal()
            .into_iter()
            .map(|(principal, subscriptions)| McpSubscriber {
                principal: state
                    .principal(principal)
                    .map_or_else(|| principal.0.to_string(), |p| p.address.clone()),
                subscriptions: subscriptions as u64,
            })
            .collect();
        subscribers.sort_by(|a, b| {
            b.subscriptions
                .cmp(&a.subscriptions)
                .then_with(|| a.principal.cmp(&b.principal))
        });
        McpActivity {
            tool_calls_in_flight: self.calls_in_flight.load(Ordering::Relaxed),
            waiting_for_approval: self.approvals.waiting() as u64,
            subscriptions: self.watches.open() as u64,
            subscribers,
            servers: self
                .upstreams
                .get()
                .map(|upstreams| upstreams.servers())
                .unwrap_or_default(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.calls_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
