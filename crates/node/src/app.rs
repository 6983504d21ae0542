//! What every handler, the authentication and the edge gates share: the node's
//! [`AppState`]. It lives apart from the routes so that `api` depends on `auth` and
//! `edge`, never the reverse.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use colony_kernel::State;
use colony_log::LogReader;

use crate::metrics::Metrics;
use crate::sequencer::Submitter;
use crate::ApiError;

/// What every handler shares.
pub struct Shared {
    pub state: Arc<RwLock<State>>,
    pub submitter: Submitter,
    pub audit: LogReader,
    pub metrics: Arc<Metrics>,
    /// Requests being served now (the edge usage of `concurrent_api_requests`).
    pub in_flight: AtomicU64,
    /// What the supervisor runs, refreshed by it.
    pub supervisor: crate::supervisor::SupervisorStatus,
    /// The agent bus.
    pub bus: Arc<crate::bus::Bus>,
    /// Who may read what (`access.toml`).
    pub read: crate::access::ReadPolicy,
    /// The LLM gateway.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// The listener's open connections.
    pub(crate) connections: Arc<crate::listener::Connections>,
    /// Requests of each principal being served now.
    pub(crate) slots: crate::fairness::PrincipalSlots,
    /// Bytes of request bodies held now.
    pub(crate) body_bytes: crate::body::BodyBytes,
    /// Set when the node cannot go on.
    pub fatal: Arc<crate::fatal::Fatal>,
    /// The artifact runtime.
    pub artifacts: colony_artifacts::Runtime,
    /// Finished task trees that left the live state (`<data>/archive/tasks`).
    pub archive: colony_log::TaskArchive,
    /// Proximity alerts: `alerts.toml` and the webhooks.
    pub alerts: crate::alerts::AlertsRuntime,
    /// The node's key and the decision log's signed heads.
    pub heads: crate::audit_heads::Heads,
    /// The MCP side: calls in flight, approvals, subscriptions, upstreams.
    pub mcp: Arc<crate::mcp::McpStatus>,
    /// Each limit's recent usage, for the dashboard's charts.
    pub history: std::sync::Mutex<colony_dashboard::History>,
    /// The cluster this node is one of (`None`: embedded).
    pub cluster: Option<colony_cluster::Cluster>,
    /// In a cluster, the bus's relay to the other nodes (for `/metrics`).
    pub relay: Option<Arc<colony_cluster::bus_relay::BusRelay>>,
    /// Claims waiting for work (`wait_ms`).
    pub(crate) claim_waiters: Arc<crate::claim_wait::ClaimWaiters>,
}

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
}

impl AppState {
    /// Whether `caller` may read what `readers` allows (the read policy's entry
    /// `what`): `403 forbidden` saying who may, otherwise.
    pub(crate) fn check_read(
        &self,
        caller: &crate::auth::Caller,
        what: &str,
        readers: crate::access::Readers,
    ) -> Result<(), ApiError> {
        if readers.admits(caller) {
            return Ok(());
        }
        Err(read_refusal(what, readers))
    }

    /// The principal at `address`, or a 404.
    pub(crate) fn principal_at(
        &self,
        address: &str,
    ) -> Result<colony_kernel::PrincipalId, ApiError> {
        let state = self.shared.state.read().expect("state lock");
        state
            .principal_by_address(address)
            .map(|p| p.id)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no principal at address {address}"),
                )
                .with("address", address)
            })
    }

    /// Submits a command, waits until it is durable, and turns a denial into the
    /// error the client gets.
    pub(crate) async fn decide(
        &self,
        actor: colony_kernel::PrincipalId,
        justification: String,
        body: colony_kernel::CommandBody,
    ) -> Result<crate::sequencer::Outcome, ApiError> {
        let outcome = self
            .shared
            .submitter
            .submit(actor, justification, body)
            .await?;
        if outcome.primary.decision == colony_kernel::Decision::Denied {
            return Err(ApiError::from_denial(
                &outcome.primary.reason,
                outcome.at_ms,
            ));
        }
        Ok(outcome)
    }
}

/// `403 forbidden`: the read policy's entry `what` lets only `readers` read this.
pub(crate) fn read_refusal(what: &str, readers: crate::access::Readers) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the read policy (access.toml: [read] {what} = \"{}\") lets {} read this",
            readers.as_str(),
            readers.who()
        ),
    )
    .with("read_policy", what)
}
