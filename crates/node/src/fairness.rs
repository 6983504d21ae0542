//! One principal's share of the node's HTTP requests, so that no agent can hold the
//! request slots every principal shares (`concurrent_api_requests`) with many slow or
//! endless requests:
//!
//! - at most `requests_in_flight_per_principal_max` of a principal's requests are
//!   served at once; past it, `429 too_many_requests` at once (the governance lane is
//!   not counted: a brake or a vote always gets through; nor are admins, who may
//!   change every limit anyway);
//! - its body is read before its route within a deadline and a memory budget
//!   ([`crate::body`]).
//!
//! [`admit`] does both, called by the edge (`edge.rs`): on the gated lane inside the
//! concurrency gate; on the governance lane it only reads the body. The request's
//! principal is found once here and handed to the `Caller` extractor in the
//! request's extensions; a request without a valid token is passed on with its body
//! bounded at its route's size, to be answered `401` before its body is read.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colony_kernel::PrincipalId;

use crate::app::AppState;
use crate::auth::{authenticate, bearer_token};
use crate::route::Lane;
use crate::ApiError;

/// One request's place among its principal's, until dropped.
struct Slot {
    app: AppState,
    principal: PrincipalId,
}

impl Slot {
    /// One of `principal`'s places, if fewer than `max` are held.
    fn take(app: &AppState, principal: PrincipalId, max: usize) -> Option<Slot> {
        app.shared.slots.try_take(principal, max).then(|| Slot {
            app: app.clone(),
            principal,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.app.shared.slots.give_back(self.principal);
    }
}

/// A request that waits without being served (a long-polling claim) steps aside
/// while it waits: it leaves the requests in flight (`concurrent_api_requests`) and
/// its principal's count, and takes its places back when this is dropped.
pub(crate) struct Aside {
    app: AppState,
    principal: Option<PrincipalId>,
}

pub(crate) fn step_aside(app: &AppState, caller: &crate::auth::Caller) -> Aside {
    app.shared
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    // Admins hold no slot (see `gated`).
    let principal = (!caller.is_admin()).then_some(caller.id);
    if let Some(principal) = principal {
        app.shared.slots.give_back(principal);
    }
    Aside {
        app: app.clone(),
        principal,
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        self.app
            .shared
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(principal) = self.principal {
            self.app.shared.slots.take_back(principal);
        }
    }
}

/// Reads the request's body (at most `limit` bytes) within the deadline; on the
/// gated lane first counts the request among its principal's and refuses it past the
/// bound (the governance lane is not counted).
pub(crate) async fn admit(
    app: &AppState,
    lane: Lane,
    mut request: Request,
    limit: usize,
    next: Next,
) -> Response {
    let Some(caller) = identify(app, &request) else {
        return next.run(crate::edge::bounded(request, limit)).await;
    };
    let mut _slot = None;
    if lane == Lane::Gated && !caller.is_admin() {
        let max = app
            .shared
            .connections
            .config()
            .requests_in_flight_per_principal_max;
        match Slot::take(app, caller.id, max) {
            Some(slot) => _slot = Some(slot),
            None => return too_many_requests(app, &caller.address, max),
        }
    }
    let principal = caller.id;
    request.extensions_mut().insert(caller);
    crate::body::with_body(app, principal, request, limit, next).await
}

/// The principal whose bearer token the request carries, if the token is valid. A
/// request without one goes on untouched: the `Caller` extractor answers it `401`
/// before its body is read, so that nobody unknown has the node hold a body.
fn identify(app: &AppState, request: &Request) -> Option<crate::auth::Caller> {
    bearer_token(request.headers()).and_then(|token| authenticate(&app.shared.state, token).ok())
}

fn too_many_requests(app: &AppState, address: &str, max: usize) -> Response {
    app.shared
        .metrics
        .http_refused_per_principal
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        format!(
            "{address} has {max} requests being served on this node, the most one principal may; wait for one to finish"
        ),
    )
    .with("max", max);
    error.retry_after_secs = Some(1);
    error.into_response()
}
