//! A principal's tokens: `POST /v1/principals/{address}/tokens` (made, the secret
//! shown once), `GET` (listed without secrets), `DELETE .../{id}` (revoked at once,
//! and the bus connections using it closed).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::tokens::{
    CreateToken, RevokeQuery, TokenCreated, TokenList, TokenRevoked, TokenView,
};
use colony_api::ErrorBody;
use colony_kernel::{CommandBody, Effect, NewToken, PrincipalId};

use super::{require_justification, AppState, Body, Params, Segment};
use crate::auth::{hash_token, new_token, Caller};
use crate::ApiError;

/// Only the principal itself or an admin sees or manages its tokens.
fn check_owner(caller: &Caller, target: PrincipalId, address: &str) -> Result<(), ApiError> {
    if caller.id == target || caller.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("only {address} itself or an admin manages its tokens"),
    ))
}

/// Makes a token for the principal (its own, or anyone's as an admin), with scopes
/// no wider than those of the token making it.
#[utoipa::path(post, path = "/v1/principals/{address}/tokens", tag = "principals", params(("address" = String, Path)),
    request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let justification = require_justification(request.justification)?;
    let principal = app.principal_at(&address)?;
    check_owner(&caller, principal, &address)?;
    if !crate::scope::within(&caller.scopes, &request.scopes) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "scope",
            format!(
                "a token makes no token wider than itself: this one's scopes are {}",
                caller.scopes.join(", ")
            ),
        )
        .with("scopes", caller.scopes.clone()));
    }
    let ttl_ms = request
        .ttl
        .as_ref()
        .map(|ttl| super::bus::duration_ms("ttl", ttl))
        .transpose()?;
    let secret = new_token();
    let new = NewToken {
        principal,
        name: request.name.clone(),
        scopes: request.scopes.clone(),
        ttl_ms,
        hash: hash_token(&secret),
    };
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::CreateToken(Box::new(new)),
        )
        .await?;
    let Effect::TokenCreated {
        token,
        expires_at_ms,
        ..
    } = &outcome.primary.effect
    else {
        return Err(ApiError::internal("a token without its effect"));
    };
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: *token,
            token: secret,
            name: request.name,
            scopes: request.scopes,
            expires_at: expires_at_ms.map(colony_api::format_time),
            expires_at_ms: *expires_at_ms,
            seq: outcome.seq,
        }),
    ))
}

/// The principal's tokens, without their secrets.
#[utoipa::path(get, path = "/v1/principals/{address}/tokens", tag = "principals", params(("address" = String, Path)),
    responses((status = 200, body = TokenList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
) -> Result<Json<TokenList>, ApiError> {
    let principal = app.principal_at(&address)?;
    check_owner(&caller, principal, &address)?;
    let now = crate::sequencer::now_ms();
    let state = app.shared.state.read().expect("state lock");
    let time = colony_api::format_time;
    let tokens = state
        .tokens_of(principal)
        .map(|token| TokenView {
            id: token.id,
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            state: match (&token.revoked, token.is_live(now)) {
                (Some(_), _) => "revoked",
                (None, false) => "expired",
                (None, true) => "live",
            }
            .to_string(),
            created_at: time(token.created_at_ms),
            created_by: token.created_by.clone(),
            expires_at: token.expires_at_ms.map(time),
            expires_at_ms: token.expires_at_ms,
            revoked_at: token.revoked.as_ref().map(|(at, _)| time(*at)),
            revoked_by: token.revoked.as_ref().map(|(_, by)| by.clone()),
        })
        .collect();
    Ok(Json(TokenList {
        principal: address,
        tokens,
    }))
}

/// Revokes a token at once; bus connections opened with it are closed.
#[utoipa::path(delete, path = "/v1/principals/{address}/tokens/{id}", tag = "principals",
    params(("address" = String, Path), ("id" = u64, Path), ("justification" = Option<String>, Query)),
    responses((status = 200, body = TokenRevoked), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Segment((address, id)): Segment<(String, u64)>,
    Params(query): Params<RevokeQuery>,
) -> Result<Json<TokenRevoked>, ApiError> {
    let principal = app.principal_at(&address)?;
    check_owner(&caller, principal, &address)?;
    let justification = query
        .justification
        .filter(|j| !j.trim().is_empty())
        .unwrap_or_else(|| format!("{} revokes token {id} of {address}", caller.address));
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::RevokeToken {
                principal,
                token: id,
            },
        )
        .await?;
    let closed_connections = app.shared.bus.close_token(id);
    Ok(Json(TokenRevoked {
        principal: address,
        token: id,
        closed_connections,
        seq: outcome.seq,
    }))
}
