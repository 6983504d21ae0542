//! Permission escalation: `POST /v1/grants` (ask), `GET /v1/grants[?state=]`,
//! `GET /v1/grants/{id}`, `POST /v1/grants/{id}/approve|deny`. The rules are the
//! kernel's (`grants.rs`): roles and scopes by an admin, quotas up to a bound by a
//! human, above it by a human and an AI; nobody decides their own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::grants::{ApprovalView, GrantList, GrantQuery, GrantRequest, GrantView};
use colony_api::{ErrorBody, Justified};
use colony_kernel::grants::{Grant, GrantState, GrantWhat};
use colony_kernel::{CommandBody, Role};

use super::{check_amount, parse_resource, require_justification, AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

fn view(grant: &Grant) -> GrantView {
    let time = colony_api::format_time;
    let (kind, scope, token, role, resource, amount) = match &grant.what {
        GrantWhat::Scope { token, scope } => {
            ("scope", Some(scope.clone()), Some(*token), None, None, None)
        }
        GrantWhat::Role { role } => (
            "role",
            None,
            None,
            Some(role.as_str().to_string()),
            None,
            None,
        ),
        GrantWhat::Quota { resource, amount } => (
            "quota",
            None,
            None,
            None,
            Some(resource.as_str().to_string()),
            Some(*amount),
        ),
        GrantWhat::ToolCall { .. } => ("tool_call", None, None, None, None, None),
    };
    let (tool, arguments_sha256) = match &grant.what {
        GrantWhat::ToolCall {
            tool,
            arguments_sha256,
        } => (Some(tool.clone()), Some(arguments_sha256.clone())),
        _ => (None, None),
    };
    GrantView {
        id: grant.id,
        requester: grant.requester_address.clone(),
        kind: kind.to_string(),
        scope,
        token,
        role,
        resource,
        amount,
        tool,
        arguments_sha256,
        ttl_ms: grant.ttl_ms,
        state: grant.state.as_str().to_string(),
        justification: grant.justification.clone(),
        created_at: time(grant.created_at_ms),
        approvals: grant
            .approvals
            .iter()
            .map(|(by, side)| ApprovalView {
                by: by.clone(),
                side: side.as_str().to_string(),
            })
            .collect(),
        decided_by: grant.decided_by.clone(),
        decided_at: grant.decided_at_ms.map(time),
        expires_at: grant.expires_at_ms.map(time),
        expires_at_ms: grant.expires_at_ms,
        seq: None,
    }
}

fn one_of(app: &AppState, id: u64, seq: Option<u64>) -> Result<Json<GrantView>, ApiError> {
    let state = app.shared.state.read().expect("state lock");
    let grant = state.grant_request(id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no grant {id}"))
            .with("grant", id)
    })?;
    Ok(Json(GrantView { seq, ..view(grant) }))
}

/// Asks for a scope (on the token asking), a role or more quota, for a while.
#[utoipa::path(post, path = "/v1/grants", tag = "governance", request_body = GrantRequest,
    responses((status = 201, body = GrantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn request(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<GrantRequest>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let justification = require_justification(request.justification)?;
    let what = match (request.scope, request.role, request.quota) {
        (Some(scope), None, None) => GrantWhat::Scope {
            token: caller.token,
            scope,
        },
        (None, Some(role), None) => GrantWhat::Role {
            role: Role::parse(&role).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_role",
                    format!("role `{role}` is not one of admin, member, observer"),
                )
            })?,
        },
        (None, None, Some(quota)) => GrantWhat::Quota {
            resource: parse_resource(&quota.resource)?,
            amount: check_amount("quota.amount", quota.amount)?,
        },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "ask for exactly one of `scope`, `role` or `quota`",
            ))
        }
    };
    let ttl_ms = super::bus::duration_ms("ttl", &request.ttl)?;
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::RequestGrant { what, ttl_ms },
        )
        .await?;
    let answer = one_of(&app, outcome.seq, Some(outcome.seq))?;
    Ok((StatusCode::CREATED, answer))
}

/// Grants, oldest first (`?state=pending` for those waiting); those the read policy
/// does not admit (`[read] grants`) see their own.
#[utoipa::path(get, path = "/v1/grants", tag = "governance", params(("state" = Option<String>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = GrantList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<GrantQuery>,
) -> Result<Json<GrantList>, ApiError> {
    let all = app.shared.read.grants.admits(&caller);
    let wanted = match query.state.as_deref() {
        None => None,
        Some(name) => Some(
            [
                GrantState::Pending,
                GrantState::Active,
                GrantState::Denied,
                GrantState::Expired,
            ]
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("state `{name}` is not pending, active, denied or expired"),
                )
            })?,
        ),
    };
    let state = app.shared.state.read().expect("state lock");
    let grants = state
        .grants()
        .filter(|g| wanted.is_none_or(|w| g.state == w))
        .filter(|g| all || g.requester == caller.id)
        .map(view)
        .collect();
    Ok(Json(GrantList { grants }))
}

/// One grant.
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "governance", params(("id" = u64, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = GrantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<GrantView>, ApiError> {
    let own = app
        .shared
        .state
        .read()
        .expect("state lock")
        .grant_request(id)
        .is_some_and(|g| g.requester == caller.id);
    if !own {
        app.check_read(&caller, "grants", app.shared.read.grants)?;
    }
    one_of(&app, id, None)
}

/// Approves a pending grant (it applies at once, or once both sides approved a quota
/// above the bound).
#[utoipa::path(post, path = "/v1/grants/{id}/approve", tag = "governance", params(("id" = u64, Path)), request_body = Justified,
    responses((status = 200, body = GrantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn approve(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
    Body(request): Body<Justified>,
) -> Result<Json<GrantView>, ApiError> {
    decide(app, caller, id, request, true).await
}

/// Denies a pending grant.
#[utoipa::path(post, path = "/v1/grants/{id}/deny", tag = "governance", params(("id" = u64, Path)), request_body = Justified,
    responses((status = 200, body = GrantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deny(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
    Body(request): Body<Justified>,
) -> Result<Json<GrantView>, ApiError> {
    decide(app, caller, id, request, false).await
}

async fn decide(
    app: AppState,
    caller: Caller,
    id: u64,
    request: Justified,
    approve: bool,
) -> Result<Json<GrantView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::DecideGrant { grant: id, approve },
        )
        .await?;
    one_of(&app, id, Some(outcome.seq))
}
