use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_kernel::{CommandBody, Effect, ReservationState, Resource, ResourceKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_amount, parse_resource, require_justification, warnings_json, AppState, Body};
use crate::auth::Caller;
use crate::sequencer::now_ms;
use crate::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    resource: String,
    amount: u64,
    justification: Option<String>,
    /// How long the reservation lives before it is released, in milliseconds.
    ttl_ms: Option<u64>,
}

pub async fn reserve(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ReserveRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let justification = require_justification(request.justification)?;
    let resource = parse_resource(&request.resource)?;
    let amount = check_amount("amount", request.amount)?;
    let body = CommandBody::Reserve {
        resource,
        amount,
        ttl_ms: request.ttl_ms,
    };
    let outcome = app.decide(caller.id, justification, body).await?;
    let Effect::Reserved {
        reservation,
        resource,
        amount,
        expires_at_ms,
    } = &outcome.primary.effect
    else {
        return Err(ApiError::internal("a reservation without its effect"));
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "reservation": reservation,
            "resource": resource,
            "amount": amount,
            "unit": resource.unit(),
            "expires_at": colony_log::audit::format_time(*expires_at_ms),
            "expires_at_ms": expires_at_ms,
            "warnings": warnings_json(&outcome.primary.warnings),
            "seq": outcome.seq,
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    reservation: u64,
    actual: u64,
    justification: Option<String>,
}

pub async fn commit(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<CommitRequest>,
) -> Result<Json<Value>, ApiError> {
    let actual = check_amount("actual", request.actual)?;
    let justification = request
        .justification
        .unwrap_or_else(|| format!("actual use of reservation {}", request.reservation));
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::Commit {
                reservation: request.reservation,
                actual,
            },
        )
        .await?;
    let Effect::Committed {
        reservation,
        resource,
        reserved,
        actual,
        charged,
        refunded,
        shortfall,
    } = &outcome.primary.effect
    else {
        return Err(ApiError::internal("a commit without its effect"));
    };
    Ok(Json(json!({
        "reservation": reservation,
        "resource": resource,
        "reserved": reserved,
        "actual": actual,
        "charged": charged,
        "refunded": refunded,
        "shortfall": shortfall,
        "seq": outcome.seq,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    reservation: u64,
    justification: Option<String>,
}

pub async fn release(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ReleaseRequest>,
) -> Result<Json<Value>, ApiError> {
    let justification = request
        .justification
        .unwrap_or_else(|| format!("reservation {} not needed", request.reservation));
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::Release {
                reservation: request.reservation,
            },
        )
        .await?;
    Ok(Json(
        json!({ "released": request.reservation, "effect": outcome.primary.effect, "seq": outcome.seq }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Address of the child principal.
    to: String,
    resource: String,
    amount: u64,
    justification: Option<String>,
}

pub async fn grant(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<GrantRequest>,
) -> Result<Json<Value>, ApiError> {
    let justification = require_justification(request.justification)?;
    let resource = parse_resource(&request.resource)?;
    let amount = check_amount("amount", request.amount)?;
    let to = app.principal_at(&request.to)?;
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::Grant {
                to,
                resource,
                amount,
            },
        )
        .await?;
    Ok(Json(
        json!({ "granted": outcome.primary.effect, "seq": outcome.seq }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeRequest {
    resource: String,
    amount: u64,
    justification: Option<String>,
}

pub async fn free(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<FreeRequest>,
) -> Result<Json<Value>, ApiError> {
    let justification = require_justification(request.justification)?;
    let resource = parse_resource(&request.resource)?;
    let amount = check_amount("amount", request.amount)?;
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::Free { resource, amount },
        )
        .await?;
    Ok(Json(
        json!({ "freed": outcome.primary.effect, "seq": outcome.seq }),
    ))
}

/// The caller's balances and open reservations.
pub async fn me(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    let now = now_ms();
    let state = app.shared.state.read().expect("state lock");
    let window_of = |resource: Resource| state.quota_config().map(|q| q.window_ms(resource));
    let mut balances = serde_json::Map::new();
    for (resource, balance) in state.balances_at(caller.id, now) {
        let flow = resource.kind() == ResourceKind::Flow;
        let window_ms = if flow { window_of(resource) } else { None };
        balances.insert(
            resource.as_str().to_string(),
            json!({
                "kind": resource.kind(),
                "unit": resource.unit(),
                "quota": balance.quota,
                "used": balance.used,
                "reserved": balance.reserved,
                "available": balance.quota.map(|_| balance.available()),
                "shortfall": balance.shortfall,
                "window_ms": window_ms,
                "refill_at": window_ms.map(|w| colony_log::audit::format_time(balance.window_start_ms + w)),
            }),
        );
    }
    let reservations: Vec<Value> = state
        .reservations_of(caller.id)
        .map(|r| {
            json!({
                "reservation": r.id,
                "resource": r.resource,
                "amount": r.amount,
                "state": match r.state { ReservationState::Reserved => "reserved", ReservationState::Held { .. } => "held" },
                "held": match r.state { ReservationState::Held { actual } => Some(actual), ReservationState::Reserved => None },
                "expires_at": matches!(r.state, ReservationState::Reserved).then(|| colony_log::audit::format_time(r.expires_at_ms)),
            })
        })
        .collect();
    Json(json!({ "principal": caller.address, "balances": balances, "reservations": reservations }))
}
