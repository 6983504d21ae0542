//! The HTTP API. Every route but `/healthz` needs a bearer token; every error is
//! `{"error":{"code","message",...}}`; every body is bounded.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | 200 while serving |
//! | `GET /v1/limits`, `GET /v1/limits/{name}` | limits with usage and state |
//! | `POST /v1/principals`, `GET /v1/principals`, `GET /v1/principals/{address}`, `POST /v1/principals/{address}/remove`, `POST /v1/principals/{address}/release` | principals (release: a quarantine) |
//! | `POST /v1/ledger/{reserve,commit,release,grant,free}`, `GET /v1/ledger/me` | the ledger |
//! | `GET /v1/audit` | the decision log, paged and filtered |
//! | `POST /v1/proposals`, `GET /v1/proposals[?state=]`, `GET /v1/proposals/{id}`, `POST /v1/proposals/{id}/votes` | governance |
//! | `POST /v1/tasks`, `GET /v1/tasks`, `POST /v1/tasks/claim`, `GET /v1/tasks/dead`, `GET /v1/tasks/{address}`, `POST /v1/tasks/{address}/{heartbeat,checkpoint,complete,fail,release,spend,decompose,requeue,cancel,priority}` | the task board |
//! | `POST /v1/workers`, `GET /v1/workers`, `POST /v1/workers/{id}/heartbeat`, `DELETE /v1/workers/{id}` | worker sessions |
//! | `POST /v1/artifacts`, `GET /v1/artifacts`, `GET /v1/artifacts/{address}`, `POST /v1/artifacts/{address}/{stop,start}`, `GET /v1/artifacts/{address}/logs` | WebAssembly artifacts |
//! | `GET /v1/bus` | the agent bus (WebSocket, docs/protocol.md) |
//! | `POST /v1/streams`, `GET /v1/streams`, `GET /v1/streams/{name}`, `DELETE /v1/streams/{name}` | durable bus streams |
//! | `POST /v1/chat/completions`, `GET /v1/models`, `POST /v1/messages` | the LLM gateway |
//! | `GET /v1/cluster` | the cluster's nodes and its command log's stream |
//! | `GET /metrics` | Prometheus text |
//! | `GET /limits`, `GET /limits/{name}`, `GET /limits/check/{name}`, `POST /tasks`, `GET /tasks`, `POST /tasks/{address}/{claim,start,progress,complete,fail}`, `GET /tasks/mine/{assignee}` | the Hypernet swarm's routes, old shapes |

mod alerts;
mod artifacts;
mod audit;
mod bus;
mod cluster;
mod dashboard;
mod gateway;
mod governance;
mod grants;
mod hypernet_tasks;
mod ledger;
mod limits;
mod metrics;
pub mod openapi;
mod principals;
mod reports;
mod tasks;
mod tokens;
mod workers;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ApiError;

pub use crate::app::{AppState, Shared};
pub use crate::edge::REQUEST_BODY_BYTES_MAX;
pub use artifacts::ARTIFACT_BODY_BYTES_MAX;
pub(crate) use dashboard::sample as sample_history;
pub(crate) use limits::current as current_limits;
pub(crate) use reports::{build as build_report, markdown as report_markdown};
/// Largest amount accepted in a request: 2^53 - 1, the largest integer every JSON
/// client represents exactly.
pub const AMOUNT_MAX: u64 = (1 << 53) - 1;

pub fn router(app: AppState) -> Router {
    // The governance lane: seeing the limits, proposing (braking included), voting,
    // administering principals, and the metrics. Counted, but never shed by
    // `concurrent_api_requests`, so that no load and no brake can keep the colony
    // from being governed (as Kubernetes exempts its system priority level).
    let lane = Router::new()
        .route("/v1/dashboard", get(dashboard::overview))
        .route("/v1/cluster", get(cluster::view))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/alerts/dead-letters", get(alerts::dead_letters))
        .route("/v1/limits", get(limits::list))
        .route("/v1/limits/{name}", get(limits::one))
        .route(
            "/v1/principals",
            post(principals::create).get(principals::list),
        )
        .route("/v1/principals/{address}", get(principals::one))
        .route("/v1/principals/{address}/remove", post(principals::remove))
        .route(
            "/v1/principals/{address}/release",
            post(principals::release),
        )
        .route(
            "/v1/principals/{address}/tokens",
            post(tokens::create).get(tokens::list),
        )
        .route(
            "/v1/principals/{address}/tokens/{id}",
            axum::routing::delete(tokens::revoke),
        )
        .route(
            "/v1/proposals",
            post(governance::propose).get(governance::list),
        )
        .route("/v1/proposals/{id}", get(governance::one))
        .route("/v1/grants", post(grants::request).get(grants::list))
        .route("/v1/grants/{id}", get(grants::one))
        .route("/v1/grants/{id}/approve", post(grants::approve))
        .route("/v1/grants/{id}/deny", post(grants::deny))
        .route("/v1/proposals/{id}/votes", post(governance::vote))
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::fairness::body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::edge::governance_lane,
        ));
    let gated = Router::new()
        .route("/v1/ledger/reserve", post(ledger::reserve))
        .route("/v1/ledger/commit", post(ledger::commit))
        .route("/v1/ledger/release", post(ledger::release))
        .route("/v1/ledger/grant", post(ledger::grant))
        .route("/v1/ledger/free", post(ledger::free))
        .route("/v1/ledger/me", get(ledger::me))
        .route("/v1/audit", get(audit::list))
        .route("/v1/reports/summary", get(reports::summary))
        .route("/v1/workers", post(workers::register).get(workers::list))
        .route("/v1/supervisor", get(workers::supervisor))
        .route("/v1/workers/{id}", get(workers::one).delete(workers::leave))
        .route("/v1/workers/{id}/heartbeat", post(workers::heartbeat))
        .route("/v1/tasks", post(tasks::post).get(tasks::list))
        .route("/v1/tasks/claim", post(tasks::claim))
        .route("/v1/tasks/dead", get(tasks::dead))
        .route("/v1/tasks/{address}", get(tasks::one))
        .route("/v1/tasks/{address}/decompose", post(tasks::decompose))
        .route("/v1/tasks/{address}/requeue", post(tasks::requeue))
        .route("/v1/tasks/{address}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{address}/priority", post(tasks::priority))
        .route("/v1/tasks/{address}/{action}", post(tasks::act))
        .route("/v1/bus", get(bus::upgrade))
        .route(
            "/v1/artifacts",
            post(artifacts::deploy)
                .layer(DefaultBodyLimit::max(artifacts::ARTIFACT_BODY_BYTES_MAX))
                .get(artifacts::list),
        )
        .route("/v1/artifacts/{address}", get(artifacts::one))
        .route("/v1/artifacts/{address}/stop", post(artifacts::stop))
        .route("/v1/artifacts/{address}/start", post(artifacts::start))
        .route("/v1/artifacts/{address}/logs", get(artifacts::logs))
        .route(
            "/v1/chat/completions",
            post(gateway::chat_completions).layer(DefaultBodyLimit::max(
                app.shared.gateway.config.request_bytes_max,
            )),
        )
        .route("/v1/models", get(gateway::models))
        .route(
            "/v1/messages",
            post(gateway::messages).layer(DefaultBodyLimit::max(
                app.shared.gateway.config.request_bytes_max,
            )),
        )
        .route(
            "/v1/streams",
            post(bus::create_stream).get(bus::list_streams),
        )
        .route(
            "/v1/streams/{name}",
            get(bus::one_stream).delete(bus::delete_stream),
        )
        // The Hypernet swarm's routes, in their old shapes (HYPERNET.md).
        .route("/limits", get(limits::hypernet_list))
        .route("/limits/{name}", get(limits::hypernet_one))
        .route("/limits/check/{name}", get(limits::hypernet_check))
        .route(
            "/tasks",
            post(hypernet_tasks::post).get(hypernet_tasks::list),
        )
        .route("/tasks/mine/{assignee}", get(hypernet_tasks::mine))
        .route("/tasks/{address}/{action}", post(hypernet_tasks::act))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::fairness::gated,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::edge::concurrency_gate,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/{file}", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi::serve))
        .merge(lane)
        .merge(gated)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see docs/api.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::edge::oversized_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::edge::health_counter,
        ))
        .layer(axum::middleware::map_response_with_state(
            app.clone(),
            mark_stale,
        ))
        .with_state(app)
}

/// In a cluster, while this node has lost NATS, every answer says that what it read
/// may be behind the others (`X-Colony-Stale: true`); writes are refused meanwhile.
async fn mark_stale(
    axum::extract::State(app): axum::extract::State<AppState>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if app
        .shared
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.connected())
    {
        response.headers_mut().insert(
            "x-colony-stale",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// `200 {"status":"ok"}` while serving; `503 {"status":"failed","reason"}` once the
/// node cannot go on. No token needed.
#[utoipa::path(get, path = "/healthz", tag = "node", security(()),
    responses((status = 200, body = colony_api::Health), (status = 503, body = colony_api::Health)))]
pub(crate) async fn healthz(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match app.shared.fatal.reason() {
        None => axum::Json(colony_api::Health {
            status: "ok".into(),
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(colony_api::Health {
                status: "failed".into(),
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// A JSON body whose every failure is a structured error: malformed JSON, unknown
/// fields, wrong types, missing content type, and bodies over the bound.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, app).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            ApiError::bad_request("invalid_body", error.body_text())
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::bad_request("malformed_json", error.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are at most {REQUEST_BODY_BYTES_MAX} bytes"),
        )
        .with("limit_bytes", REQUEST_BODY_BYTES_MAX),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// Query parameters whose failures are structured errors (`invalid_query`).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, app)
            .await
            .map(|axum::extract::Query(value)| Params(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// Path segments whose failures are structured errors (`invalid_path`).
pub struct Segment<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Segment<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, app)
            .await
            .map(|axum::extract::Path(value)| Segment(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// A justification is required for every action that changes state.
pub(crate) fn require_justification(justification: Option<String>) -> Result<String, ApiError> {
    match justification {
        Some(text) if !text.trim().is_empty() => Ok(text),
        _ => Err(ApiError::bad_request(
            "justification_required",
            "say why: every action that changes state carries a `justification`",
        )),
    }
}

pub(crate) fn check_amount(field: &str, amount: u64) -> Result<u64, ApiError> {
    if amount > AMOUNT_MAX {
        return Err(ApiError::bad_request(
            "amount_out_of_range",
            format!("{field} must be at most {AMOUNT_MAX}"),
        )
        .with("field", field)
        .with("max", AMOUNT_MAX));
    }
    Ok(amount)
}

pub(crate) fn parse_resource(name: &str) -> Result<colony_kernel::Resource, ApiError> {
    colony_kernel::Resource::parse(name).ok_or_else(|| {
        let known: Vec<&str> = colony_kernel::Resource::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        ApiError::bad_request(
            "unknown_resource",
            format!(
                "no resource `{name}`; known resources are {}",
                known.join(", ")
            ),
        )
        .with("resource", name)
        .with("known", known)
    })
}

/// A kernel effect in a response body: its own serde shape (`{"effect": NAME, ...}`).
pub(crate) fn effect_json(effect: &colony_kernel::Effect) -> Value {
    serde_json::to_value(effect).unwrap_or(Value::Null)
}
