//! What every handler, the authentication and the edge gates share: the node's
//! [`AppState`]. It lives apart from the routes so that `api` depends on `auth` and
//! `edge`, never the reverse.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use colony_kernel::State;
use colony_log::LogReader;

use crate::auth::Caller;
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
    pub(crate) slots: crate::gate_counts::PrincipalSlots,
    /// Bytes of request bodies held now.
    pub(crate) body_bytes: crate::gate_counts::BodyBytes,
    /// Set when the node cannot go on.
    pub fatal: Arc<crate::fatal::Fatal>,
    /// The artifact runtime.
    pub artifacts: colony_artifacts::Runtime,
    /// Finished task trees that left the live state (`<data>/archive/tasks`).
    pub archive: colony_log::TaskArchive,
    /// Proximity alerts: `alerts.toml` and the webhooks.
    pub alerts: AlertsRuntime,
    /// The node's key and the decision log's signed heads.
    pub heads: crate::audit_heads::Heads,
    /// The MCP side's activity (calls in flight, approvals, subscriptions,
    /// upstreams), for the dashboard.
    pub mcp: Arc<dyn McpActivitySource>,
    /// Each limit's recent usage, for the dashboard's charts.
    pub history: std::sync::Mutex<colony_dashboard::History>,
    /// The cluster this node is one of (`None`: embedded).
    pub cluster: Option<colony_cluster::Cluster>,
    /// In a cluster, the bus's relay to the other nodes (for `/metrics`).
    pub relay: Option<Arc<colony_cluster::bus_relay::BusRelay>>,
    /// The route table, indexed (scopes and body bounds by matched route).
    pub(crate) routes: &'static crate::route::Routes,
    /// Claims waiting for work (`wait_ms`).
    pub(crate) claim_waiters: Arc<crate::claim_wait::ClaimWaiters>,
}

impl Shared {
    /// Signs the decision log's newest head when it is due (`force`: whenever it is
    /// not signed yet). Reads a record: call it off the async threads.
    pub(crate) fn sign_heads(&self, force: bool) {
        self.heads
            .sign_if_due(&self.audit, &self.bus, &self.alerts.webhooks, force);
    }
}

/// What the MCP side is doing now (`mcp::McpStatus` says), as the dashboard shows
/// it. A trait, so that what every handler shares does not hold the MCP server,
/// whose tools call the handlers.
pub trait McpActivitySource: Send + Sync {
    /// The activity now, principals named by their addresses in `state`.
    fn activity(&self, state: &State) -> colony_api::dashboard::McpActivity;
}

/// What the node runs for alerts: its configuration and its webhooks.
pub struct AlertsRuntime {
    pub config: colony_alerts::AlertsConfig,
    pub webhooks: colony_alerts::Webhooks,
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
        caller: &Caller,
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

/// The authenticated caller of a request: found by the fairness gate already, or
/// from its bearer token; its token's scopes checked against the route's.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Caller, ApiError> {
        // Found already when the request was counted among its principal's.
        let caller = match parts.extensions.remove::<Caller>() {
            Some(caller) => caller,
            None => {
                if !parts
                    .headers
                    .contains_key(axum::http::header::AUTHORIZATION)
                {
                    return Err(ApiError::unauthenticated(
                        "send your token as `Authorization: Bearer <token>`",
                    ));
                }
                let token = crate::auth::bearer_token(&parts.headers).ok_or_else(|| {
                    ApiError::unauthenticated("the Authorization header must be `Bearer <token>`")
                })?;
                crate::auth::authenticate(&app.shared.state, token)?
            }
        };
        crate::listener::mark_authenticated(&parts.extensions);
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| parts.uri.path().to_string(), |m| m.as_str().to_string());
        let task = parts
            .headers
            .get("x-colony-task")
            .and_then(|v| v.to_str().ok());
        caller.check_scope(
            app.shared.routes,
            &parts.method,
            &route,
            parts.uri.path(),
            task,
        )?;
        Ok(caller)
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
