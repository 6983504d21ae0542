//! The HTTP API. Every route but `/healthz`, `/v1/openapi.json` and the dashboard's
//! page needs a bearer token; every error is `{"error":{"code","message",...}}`; every
//! body is bounded. Every route is declared once, in [`routes`] (its handler, scope,
//! lane and body bound), and the router, the scope checks, the body bounds and the
//! OpenAPI document come from there; one file per resource holds the handlers
//! (`tasks.rs` serves `/v1/tasks...`), and `docs/api.md` says what each does.

mod alerts;
mod artifacts;
mod audit;
mod bus;
mod bus_http;
mod cluster;
mod dashboard;
mod exposition;
mod gateway;
mod governance;
mod grants;
mod hypernet_tasks;
mod inbox;
mod ledger;
mod limits;
mod metrics;
pub mod openapi;
mod principals;
mod reports;
pub mod routes;
mod task_view;
mod tasks;
mod tokens;
mod workers;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Router;
use serde::de::DeserializeOwned;

use crate::ApiError;

pub use crate::app::{AppState, Shared};
pub use crate::route::REQUEST_BODY_BYTES_MAX;
pub(crate) use alerts::view as alert_view;
pub use artifacts::ARTIFACT_BODY_BYTES_MAX;
pub(crate) use dashboard::sample as sample_history;
pub(crate) use limits::current as current_limits;
pub(crate) use reports::{build as build_report, markdown as report_markdown};
/// Largest amount accepted in a request: 2^53 - 1, the largest integer every JSON
/// client represents exactly.
pub const AMOUNT_MAX: u64 = (1 << 53) - 1;

pub fn router(app: AppState) -> Router {
    // Every route comes from the one table (`routes.rs`), by lane, and each lane's
    // routes have one layer, the edge (`edge.rs`): the governance lane is counted but
    // never shed by `concurrent_api_requests`; the gated lane is shed and each
    // principal's requests in flight are bounded.
    let open = routes::lane(&app, routes::Lane::Open).layer(axum::middleware::from_fn_with_state(
        app.clone(),
        crate::edge::open_lane,
    ));
    let lane = routes::lane(&app, routes::Lane::Governance).layer(
        axum::middleware::from_fn_with_state(app.clone(), crate::edge::governance_lane),
    );
    let gated = routes::lane(&app, routes::Lane::Gated).layer(
        axum::middleware::from_fn_with_state(app.clone(), crate::edge::gated_lane),
    );
    Router::new()
        .merge(open)
        .merge(lane)
        .merge(gated)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn not_found(
    axum::extract::State(app): axum::extract::State<AppState>,
    request: Request,
) -> axum::response::Response {
    let answer = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see docs/api.md",
    );
    crate::edge::unrouted(&app, &request, answer)
}

async fn method_not_allowed(
    axum::extract::State(app): axum::extract::State<AppState>,
    request: Request,
) -> axum::response::Response {
    let answer = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    );
    crate::edge::unrouted(&app, &request, answer)
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
