use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::ledger::{
    BalanceView, CommitRequest, Committed, FreeRequest, Freed, Granted, LedgerView,
    QuotaGrantRequest, ReleaseRequest, Released, ReservationView, ReserveRequest, Reserved,
};
use colony_api::{ErrorBody, Explained};
use colony_kernel::{CommandBody, Effect, ReservationState, ResourceKind};

use super::{check_amount, parse_resource, require_justification, AppState, Body};
use crate::auth::Caller;
use crate::sequencer::now_ms;
use crate::ApiError;

/// Holds an amount of a resource for the caller before the action that uses it.
#[utoipa::path(post, path = "/v1/ledger/reserve", tag = "ledger", request_body = ReserveRequest,
    responses((status = 201, body = Reserved), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn reserve(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ReserveRequest>,
) -> Result<(StatusCode, Json<Reserved>), ApiError> {
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
        Json(Reserved {
            reservation: *reservation,
            resource: resource.as_str().to_string(),
            amount: *amount,
            unit: resource.unit().to_string(),
            expires_at: colony_api::format_time(*expires_at_ms),
            expires_at_ms: *expires_at_ms,
            warnings: Explained::all(&outcome.primary.warnings),
            seq: outcome.seq,
        }),
    ))
}

/// Charges the actual use of a reservation and gives back the rest.
#[utoipa::path(post, path = "/v1/ledger/commit", tag = "ledger", request_body = CommitRequest,
    responses((status = 200, body = Committed), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn commit(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<CommitRequest>,
) -> Result<Json<Committed>, ApiError> {
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
    Ok(Json(Committed {
        reservation: *reservation,
        resource: resource.as_str().to_string(),
        reserved: *reserved,
        actual: *actual,
        charged: *charged,
        refunded: *refunded,
        shortfall: *shortfall,
        seq: outcome.seq,
    }))
}

/// Gives a reservation back unused.
#[utoipa::path(post, path = "/v1/ledger/release", tag = "ledger", request_body = ReleaseRequest,
    responses((status = 200, body = Released), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn release(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ReleaseRequest>,
) -> Result<Json<Released>, ApiError> {
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
    Ok(Json(Released {
        released: request.reservation,
        effect: outcome.primary.effect.clone(),
        seq: outcome.seq,
    }))
}

/// Gives part of the caller's quota to a principal under it.
#[utoipa::path(post, path = "/v1/ledger/grant", tag = "ledger", request_body = QuotaGrantRequest,
    responses((status = 200, body = Granted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn grant(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<QuotaGrantRequest>,
) -> Result<Json<Granted>, ApiError> {
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
    Ok(Json(Granted {
        granted: outcome.primary.effect.clone(),
        seq: outcome.seq,
    }))
}

/// Gives back usage of a stock resource (disk, memory) no longer held.
#[utoipa::path(post, path = "/v1/ledger/free", tag = "ledger", request_body = FreeRequest,
    responses((status = 200, body = Freed), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn free(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<FreeRequest>,
) -> Result<Json<Freed>, ApiError> {
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
    Ok(Json(Freed {
        freed: outcome.primary.effect.clone(),
        seq: outcome.seq,
    }))
}

/// A principal's balances by resource, as they stand at `now`.
pub(crate) fn balances_of(
    state: &colony_kernel::State,
    principal: colony_kernel::PrincipalId,
    now: u64,
) -> std::collections::BTreeMap<String, BalanceView> {
    state
        .balances_at(principal, now)
        .into_iter()
        .map(|(resource, balance)| {
            let flow = resource.kind() == ResourceKind::Flow;
            let window_ms = flow.then(|| state.quota_config().window_ms(resource));
            let view = BalanceView {
                kind: if flow { "flow" } else { "stock" }.to_string(),
                unit: resource.unit().to_string(),
                quota: balance.quota,
                used: balance.used,
                reserved: balance.reserved,
                available: balance.quota.map(|_| balance.available()),
                shortfall: balance.shortfall,
                window_ms,
                refill_at: window_ms.map(|w| colony_api::format_time(balance.window_start_ms + w)),
            };
            (resource.as_str().to_string(), view)
        })
        .collect()
}

/// The caller's balances and open reservations.
#[utoipa::path(get, path = "/v1/ledger/me", tag = "ledger", responses((status = 403, body = ErrorBody), (status = 200, body = LedgerView)))]
pub async fn me(State(app): State<AppState>, caller: Caller) -> Json<LedgerView> {
    let now = now_ms();
    let state = app.shared.state.read().expect("state lock");
    let balances = balances_of(&state, caller.id, now);
    let reservations = state
        .reservations_of(caller.id)
        .map(|r| ReservationView {
            reservation: r.id,
            resource: r.resource.as_str().to_string(),
            amount: r.amount,
            state: match r.state {
                ReservationState::Reserved => "reserved",
                ReservationState::Held { .. } => "held",
            }
            .to_string(),
            held: match r.state {
                ReservationState::Held { actual } => Some(actual),
                ReservationState::Reserved => None,
            },
            expires_at: matches!(r.state, ReservationState::Reserved)
                .then(|| colony_api::format_time(r.expires_at_ms)),
        })
        .collect();
    Json(LedgerView {
        principal: caller.address.clone(),
        balances,
        reservations,
    })
}
