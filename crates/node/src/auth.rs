//! Bearer tokens: how they are made, stored (hashed) and checked.

use std::sync::RwLock;

use colony_kernel::{PrincipalId, PrincipalKind, Role, State, TokenHash};
use sha2::{Digest, Sha256};

use crate::route::Routes;
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

/// The authenticated principal making a request, and the token it presented.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id: PrincipalId,
    pub address: String,
    pub kind: PrincipalKind,
    pub roles: Vec<Role>,
    /// The token's id and scopes, and when it stops working.
    pub token: u64,
    pub scopes: Vec<String>,
    pub expires_at_ms: Option<u64>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
}

impl Caller {
    /// Whether the token's scopes give what `route` needs: `403 scope` naming it
    /// otherwise.
    pub fn check_scope(
        &self,
        routes: &Routes,
        method: &axum::http::Method,
        route: &str,
        path: &str,
        task: Option<&str>,
    ) -> Result<(), ApiError> {
        // A route the table does not have is never served (the router is built from
        // the table), so nothing is needed for one.
        let Some(need) = routes.find(method, route).and_then(|r| r.scope) else {
            return Ok(());
        };
        if crate::scope::allows(&self.scopes, need, path, task) {
            return Ok(());
        }
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "scope",
            format!(
                "this token (id {}) lacks the `{need}` scope this route needs; its scopes are {}",
                self.token,
                self.scopes.join(", ")
            ),
        )
        .with("scope", need)
        .with("token", self.token))
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

/// The principal a token belongs to, if the token is live and the principal has
/// standing; a revoked or expired token is `401` saying which.
pub fn authenticate(state: &RwLock<State>, token: &str) -> Result<Caller, ApiError> {
    let hash = hash_token(token);
    let now = crate::sequencer::now_ms();
    let state = state.read().expect("state lock");
    let (token, principal) = state
        .token_by_hash(&hash)
        .ok_or_else(|| ApiError::unauthenticated("this token is not valid (no such token)"))?;
    if let Some((at_ms, by)) = &token.revoked {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "token_revoked",
            format!(
                "this token (id {}) was revoked at {} by {by}",
                token.id,
                colony_api::format_time(*at_ms)
            ),
        )
        .with("token", token.id)
        .with("revoked_at", colony_api::format_time(*at_ms)));
    }
    if let Some(at_ms) = token.expires_at_ms.filter(|at| now >= *at) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "token_expired",
            format!(
                "this token (id {}) expired at {}",
                token.id,
                colony_api::format_time(at_ms)
            ),
        )
        .with("token", token.id)
        .with("expired_at", colony_api::format_time(at_ms)));
    }
    if !principal.standing {
        return Err(ApiError::unauthenticated(
            "this token's principal was removed",
        ));
    }
    Ok(Caller {
        id: principal.id,
        address: principal.address.clone(),
        kind: principal.kind,
        roles: principal.roles.clone(),
        token: token.id,
        scopes: token.scopes.clone(),
        expires_at_ms: token.expires_at_ms,
    })
}
