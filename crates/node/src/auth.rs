//! Bearer tokens: how they are made, stored (hashed) and checked.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use colony_kernel::{PrincipalId, PrincipalKind, Role, TokenHash};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::ApiError;

/// A new random token: `colony_` and 64 hex digits (256 bits from the OS).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("colony_{}", hex::encode(bytes))
}

/// What the kernel stores instead of the token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The authenticated principal making a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id: PrincipalId,
    pub address: String,
    pub kind: PrincipalKind,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Caller, ApiError> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Err(ApiError::unauthenticated(
                "send your token as `Authorization: Bearer <token>`",
            ));
        }
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
        let caller = authenticate(app, token)?;
        crate::listener::mark_authenticated(&parts.extensions);
        Ok(caller)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// The principal a token belongs to, if it has standing.
pub fn authenticate(app: &AppState, token: &str) -> Result<Caller, ApiError> {
    let hash = hash_token(token);
    let state = app.shared.state.read().expect("state lock");
    let principal = state
        .principal_by_token(&hash)
        .filter(|principal| principal.standing)
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "this token is not valid (unknown, or its principal was removed)",
            )
        })?;
    Ok(Caller {
        id: principal.id,
        address: principal.address.clone(),
        kind: principal.kind,
        roles: principal.roles.clone(),
    })
}
