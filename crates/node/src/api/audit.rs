use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use colony_api::audit::{AuditPage, AuditQuery as AuditParams};
use colony_api::ErrorBody;
use colony_log::audit::AuditQuery;

use super::{AppState, Params};
use crate::auth::Caller;
use crate::ApiError;

/// The node's newest signed head of the decision log (`404` before the first is
/// signed: within `audit.toml`'s `interval` of the first records).
#[utoipa::path(get, path = "/v1/audit/head", tag = "audit",
    responses((status = 200, body = colony_api::audit::SignedHeadView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn head(
    State(app): State<AppState>,
    _caller: Caller,
) -> Result<axum::Json<colony_api::audit::SignedHeadView>, ApiError> {
    let head = app.shared.heads.newest().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "no head is signed yet: one is within audit.toml's interval of the first records",
        )
    })?;
    Ok(axum::Json(colony_api::audit::SignedHeadView {
        seq: head.seq,
        head: head.head,
        at_ms: head.at_ms,
        public_key: head.public_key,
        signature: head.signature,
    }))
}

/// Most records one page returns.
pub const AUDIT_PAGE_RECORDS_MAX: usize = 1_000;
/// Most records one filtered query examines before it returns what it found.
pub const AUDIT_SCAN_RECORDS_MAX: u64 = 100_000;

/// Records after `after`, oldest first, as stored (byte for byte, so that clients
/// can check the hashes themselves). The body is an [`AuditPage`], written here
/// without parsing the records. Those the read policy does not admit to the whole
/// log (`[read] audit`, admins and human members by default) read the records of
/// their own commands.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query, description = "1 to 1000"), ("actor" = Option<String>, Query), ("address" = Option<String>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(mut params): Params<AuditParams>,
) -> Result<Response, ApiError> {
    // Past the read policy, a principal reads the records of its own commands only.
    if !app.shared.read.audit.admits(&caller) {
        match params.actor.as_deref() {
            None => params.actor = Some(caller.address.clone()),
            Some(actor) if actor == caller.address => {}
            Some(_) => return Err(crate::app::read_refusal("audit", app.shared.read.audit)),
        }
    }
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_PAGE_RECORDS_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {AUDIT_PAGE_RECORDS_MAX}"),
        ));
    }
    // Everything decided before this request is in the answer: wait for its sync
    // (a few milliseconds at most) so that the log never lags what the state shows.
    let decided = app.shared.state.read().expect("state lock").last_seq;
    if !app.shared.submitter.synced_through(decided).await {
        return Err(ApiError::shutting_down());
    }
    let reader = app.shared.audit.clone();
    let head = reader.last_index();
    let page = tokio::task::spawn_blocking(move || {
        AuditQuery {
            after: params.after,
            limit,
            actor: params.actor.as_deref(),
            address: params.address.as_deref(),
            scan_max: AUDIT_SCAN_RECORDS_MAX,
        }
        .run(&reader)
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))?
    .map_err(|error| ApiError::internal(error.to_string()))?;
    let mut body = Vec::with_capacity(page.records.iter().map(Vec::len).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"records\":[");
    for (index, record) in page.records.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.extend_from_slice(
        format!(
            "],\"next_after\":{},\"last_seq\":{head}}}",
            page.next_after.max(params.after)
        )
        .as_bytes(),
    );
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}
