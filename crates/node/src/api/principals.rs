use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::principals::{
    CreatePrincipal as CreateRequest, ListQuery, PrincipalAction, PrincipalCreated, PrincipalList,
    PrincipalQueued, PrincipalView, QuarantineView,
};
use colony_api::{ErrorBody, Explained, Justified};
use colony_kernel::{
    CommandBody, CreatePrincipal, Decision, Effect, PrincipalId, PrincipalKind, Role,
};

use super::{require_justification, AppState, Body, Params, Segment};
use crate::auth::{hash_token, new_token, Caller};
use crate::ApiError;

/// Creates a principal: an admin any, anyone else (with the `spawn` scope) a child
/// under itself (an AI or artifact, counted by `ai_accounts`, its quotas nested in
/// the parent's, its first token no wider than the one used). The token is in the
/// answer, once.
#[utoipa::path(post, path = "/v1/principals", tag = "principals", request_body = CreateRequest,
    responses((status = 201, body = PrincipalCreated), (status = 202, description = "queued past a soft limit", body = PrincipalQueued),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let justification = require_justification(request.justification)?;
    let kind = PrincipalKind::parse(&request.kind)
        .filter(|kind| {
            matches!(
                kind,
                PrincipalKind::Human
                    | PrincipalKind::Ai
                    | PrincipalKind::Artifact
                    | PrincipalKind::Node
            )
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_kind",
                format!(
                    "kind `{}` is not one of human, ai, artifact, node",
                    request.kind
                ),
            )
        })?;
    let roles = request
        .roles
        .iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_role",
                    format!("role `{name}` is not one of admin, member, observer"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Anyone but an admin spawns under itself, its child's first token no wider
    // than the token it used (the kernel holds the rest: kinds, roles, depth).
    let spawning = !caller.is_admin();
    let parent = match request.parent.as_deref() {
        Some(address) => Some(app.principal_at(address)?),
        None if spawning => Some(caller.id),
        None => None,
    };
    let scopes = if spawning && !caller.scopes.iter().any(|s| s == "*") {
        caller.scopes.clone()
    } else {
        Vec::new()
    };
    let token = new_token();
    let body = CommandBody::CreatePrincipal(CreatePrincipal {
        name: request.name,
        kind,
        roles,
        token_hash: hash_token(&token),
        parent,
        address: request.address,
        priority: request.priority,
        scopes,
    });
    let outcome = app.decide(caller.id, justification, body).await?;
    match &outcome.primary.effect {
        Effect::PrincipalCreated { id, address, .. } => Ok((
            StatusCode::CREATED,
            Json(PrincipalCreated {
                id: id.0,
                address: address.clone(),
                token,
                warnings: Explained::all(&outcome.primary.warnings),
                decision: outcome.primary.decision.as_str().to_string(),
                seq: outcome.seq,
            }),
        )
            .into_response()),
        Effect::PrincipalQueued {
            ticket,
            limit,
            position,
        } if outcome.primary.decision == Decision::Queued => Ok((
            StatusCode::ACCEPTED,
            Json(PrincipalQueued {
                status: "queued".into(),
                ticket: *ticket,
                limit: limit.clone(),
                position: *position,
                token,
                message: format!("{limit} is past its soft limit; the principal is created when usage drops (the token works from then on)"),
                warnings: vec![Explained::of(&outcome.primary.reason)],
            }),
        )
            .into_response()),
        other => Err(ApiError::internal(format!("unexpected effect {other:?}"))),
    }
}

/// Principals with standing (`?all=true`: removed ones too).
#[utoipa::path(get, path = "/v1/principals", tag = "principals", params(("all" = Option<bool>, Query, description = "include removed principals")),
    responses((status = 403, body = ErrorBody), (status = 200, body = PrincipalList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<PrincipalList>, ApiError> {
    app.check_read(&caller, "principals", app.shared.read.principals)?;
    let state = app.shared.state.read().expect("state lock");
    let principals = state
        .principals()
        .filter(|p| p.kind != PrincipalKind::System && (query.all || p.standing))
        .map(|p| view(&state, p))
        .collect();
    Ok(Json(PrincipalList { principals }))
}

/// A principal as the API shows it: `state` is `active`, `quarantined` (with the
/// evidence under `quarantine`) or `removed`.
fn view(state: &colony_kernel::State, p: &colony_kernel::Principal) -> PrincipalView {
    let quarantine = state.quarantine_of(p.id);
    let status = match (p.standing, quarantine) {
        (false, _) => "removed",
        (true, Some(_)) => "quarantined",
        (true, None) => "active",
    };
    PrincipalView {
        id: p.id.0,
        address: p.address.clone(),
        name: p.name.clone(),
        kind: p.kind.as_str().to_string(),
        roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
        standing: p.standing,
        state: status.to_string(),
        quarantine: quarantine.map(|q| QuarantineView {
            since: colony_api::format_time(q.since_ms),
            evidence: q.evidence.clone(),
            released_reservations: q.released_reservations,
            revoked_leases: q.revoked_leases.clone(),
            ended_workers: q.ended_workers.clone(),
        }),
        parent: p
            .parent
            .and_then(|id| state.principal(id))
            .map(|parent| parent.address.clone()),
        created_at: colony_api::format_time(p.created_at_ms),
    }
}

/// One principal.
#[utoipa::path(get, path = "/v1/principals/{address}", tag = "principals", params(("address" = String, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = PrincipalView), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
) -> Result<Json<PrincipalView>, ApiError> {
    app.check_read(&caller, "principals", app.shared.read.principals)?;
    let id = app.principal_at(&address)?;
    let state = app.shared.state.read().expect("state lock");
    let principal = state.principal(id).expect("found above");
    Ok(Json(view(&state, principal)))
}

/// A human member or admin lifts a quarantine.
#[utoipa::path(post, path = "/v1/principals/{address}/release", tag = "principals", params(("address" = String, Path)), request_body = Justified,
    responses((status = 200, body = PrincipalAction), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn release(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<Justified>,
) -> Result<Json<PrincipalAction>, ApiError> {
    act_on(&app, &caller, address, request, Act::Release).await
}

/// An admin removes a principal, or a parent its descendant; its descendants go with
/// it (reservations released, tokens revoked, bus connections closed).
#[utoipa::path(post, path = "/v1/principals/{address}/remove", tag = "principals", params(("address" = String, Path)), request_body = Justified,
    responses((status = 200, body = PrincipalAction), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<Justified>,
) -> Result<Json<PrincipalAction>, ApiError> {
    act_on(&app, &caller, address, request, Act::Remove).await
}

/// What is done to a principal.
enum Act {
    Remove,
    Release,
}

/// Decides `act` on the principal at `address`.
async fn act_on(
    app: &AppState,
    caller: &Caller,
    address: String,
    request: Justified,
    act: Act,
) -> Result<Json<PrincipalAction>, ApiError> {
    let justification = require_justification(request.justification)?;
    let principal = app.principal_at(&address)?;
    let body = match act {
        Act::Remove => CommandBody::RemovePrincipal { principal },
        Act::Release => CommandBody::ReleaseQuarantine { principal },
    };
    let outcome = app.decide(caller.id, justification, body).await?;
    if let Act::Remove = act {
        // Its tokens, and its descendants', are revoked with it: their bus
        // connections close too.
        let gone: Vec<PrincipalId> = {
            let state = app.shared.state.read().expect("state lock");
            state
                .principals()
                .filter(|p| !p.standing)
                .filter(|p| {
                    let mut current = Some(p.id);
                    (0..colony_kernel::PRINCIPAL_DEPTH_MAX).any(|_| {
                        let Some(id) = current else { return false };
                        current = state.principal(id).and_then(|p| p.parent);
                        id == principal
                    })
                })
                .map(|p| p.id)
                .collect()
        };
        for id in gone {
            app.shared.bus.close_principal(id);
        }
    }
    let (removed, released) = match act {
        Act::Remove => (Some(address), None),
        Act::Release => (None, Some(address)),
    };
    Ok(Json(PrincipalAction {
        removed,
        released,
        effect: outcome.primary.effect.clone(),
        seq: outcome.seq,
    }))
}
