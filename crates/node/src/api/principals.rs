use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_kernel::{
    CommandBody, CreatePrincipal, Decision, Effect, PrincipalKind, Priority, Role,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{require_justification, warnings_json, AppState, Body, Params, Segment};
use crate::auth::{hash_token, new_token, Caller};
use crate::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    kind: String,
    justification: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    /// Address of the principal whose quotas bound the new one.
    parent: Option<String>,
    /// A specific address under the kind's prefix.
    address: Option<String>,
    #[serde(default)]
    priority: Priority,
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let parent = request
        .parent
        .as_deref()
        .map(|address| app.principal_at(address))
        .transpose()?;
    let token = new_token();
    let body = CommandBody::CreatePrincipal(CreatePrincipal {
        name: request.name,
        kind,
        roles,
        token_hash: hash_token(&token),
        parent,
        address: request.address,
        priority: request.priority,
    });
    let outcome = app.decide(caller.id, justification, body).await?;
    let warnings = warnings_json(&outcome.primary.warnings);
    match &outcome.primary.effect {
        Effect::PrincipalCreated { id, address, .. } => Ok((
            StatusCode::CREATED,
            Json(
                json!({ "id": id.0, "address": address, "token": token, "warnings": warnings, "decision": outcome.primary.decision.as_str(), "seq": outcome.seq }),
            ),
        )),
        Effect::PrincipalQueued {
            ticket,
            limit,
            position,
        } if outcome.primary.decision == Decision::Queued => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "queued",
                "ticket": ticket,
                "limit": limit,
                "position": position,
                "token": token,
                "message": format!("{limit} is past its soft limit; the principal is created when usage drops (the token works from then on)"),
                "warnings": warnings_json(std::slice::from_ref(&outcome.primary.reason)),
            })),
        )),
        other => Err(ApiError::internal(format!("unexpected effect {other:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Include principals that were removed.
    #[serde(default)]
    all: bool,
}

pub async fn list(
    State(app): State<AppState>,
    _caller: Caller,
    Params(query): Params<ListQuery>,
) -> Json<Value> {
    let state = app.shared.state.read().expect("state lock");
    let principals: Vec<Value> = state
        .principals()
        .filter(|p| p.kind != PrincipalKind::System && (query.all || p.standing))
        .map(|p| principal_json(&state, p))
        .collect();
    Json(json!({ "principals": principals }))
}

/// A principal as the API shows it: `state` is `active`, `quarantined` (with the
/// evidence under `quarantine`) or `removed`.
fn principal_json(state: &colony_kernel::State, p: &colony_kernel::Principal) -> Value {
    let quarantine = state.quarantine_of(p.id);
    let status = match (p.standing, quarantine) {
        (false, _) => "removed",
        (true, Some(_)) => "quarantined",
        (true, None) => "active",
    };
    json!({
        "id": p.id.0,
        "address": p.address,
        "name": p.name,
        "kind": p.kind.as_str(),
        "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "standing": p.standing,
        "state": status,
        "quarantine": quarantine.map(|q| json!({
            "since": colony_log::audit::format_time(q.since_ms),
            "evidence": q.evidence,
            "released_reservations": q.released_reservations,
            "revoked_leases": q.revoked_leases,
            "ended_workers": q.ended_workers,
        })),
        "parent": p.parent.and_then(|id| state.principal(id)).map(|parent| parent.address.clone()),
        "created_at": colony_log::audit::format_time(p.created_at_ms),
    })
}

/// `GET /v1/principals/{address}`.
pub async fn one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(address): Segment<String>,
) -> Result<Json<Value>, ApiError> {
    let id = app.principal_at(&address)?;
    let state = app.shared.state.read().expect("state lock");
    let principal = state.principal(id).expect("found above");
    Ok(Json(principal_json(&state, principal)))
}

/// `POST /v1/principals/{address}/release`: a human member or admin lifts a
/// quarantine.
pub async fn release(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<RemoveRequest>,
) -> Result<Json<Value>, ApiError> {
    act_on(&app, &caller, &address, request, "released", |principal| {
        CommandBody::ReleaseQuarantine { principal }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    justification: Option<String>,
}

pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<RemoveRequest>,
) -> Result<Json<Value>, ApiError> {
    act_on(&app, &caller, &address, request, "removed", |principal| {
        CommandBody::RemovePrincipal { principal }
    })
    .await
}

/// Decides `body` for the principal at `address`; answers `{KEY: address, "effect",
/// "seq"}`.
async fn act_on(
    app: &AppState,
    caller: &Caller,
    address: &str,
    request: RemoveRequest,
    key: &str,
    body: impl FnOnce(colony_kernel::PrincipalId) -> CommandBody,
) -> Result<Json<Value>, ApiError> {
    let justification = require_justification(request.justification)?;
    let target = app.principal_at(address)?;
    let outcome = app.decide(caller.id, justification, body(target)).await?;
    Ok(Json(
        json!({ key: address, "effect": outcome.primary.effect, "seq": outcome.seq }),
    ))
}
