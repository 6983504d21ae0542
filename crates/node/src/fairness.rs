//! One principal's share of the node's HTTP requests, so that no agent can hold the
//! request slots every principal shares (`concurrent_api_requests`) with many slow or
//! endless requests:
//!
//! - at most `requests_in_flight_per_principal_max` of a principal's requests are
//!   served at once; past it, `429 too_many_requests` at once (the governance lane is
//!   not counted: a brake or a vote always gets through; nor are admins, who may
//!   change every limit anyway);
//! - a request's body must have arrived within `body_timeout_ms` of the request
//!   reaching its route (`408 body_timeout`), however slowly it trickles in.
//!
//! Both run inside the concurrency gate, on the gated lane; the body deadline on
//! the governance lane too. The request's principal is found once here and handed
//! to the `Caller` extractor in the request's extensions; a request without a valid
//! token is passed on as it came, to be answered `401` before its body is read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colony_kernel::PrincipalId;
use futures_util::StreamExt;

use crate::app::AppState;
use crate::auth::{authenticate, bearer_token};
use crate::ApiError;

/// Requests of each principal being served now.
#[derive(Default)]
pub(crate) struct PrincipalSlots {
    held: Mutex<HashMap<PrincipalId, usize>>,
}

/// One request's place among its principal's, until dropped.
struct Slot {
    app: AppState,
    principal: PrincipalId,
}

impl PrincipalSlots {
    fn take(&self, app: &AppState, principal: PrincipalId, max: usize) -> Option<Slot> {
        let mut held = self.held.lock().expect("slots lock");
        let count = held.entry(principal).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            app: app.clone(),
            principal,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.app.shared.slots.held.lock().expect("slots lock");
        if let Some(count) = held.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.principal);
            }
        }
    }
}

/// The gated lane: counts the request among its principal's, refuses it past the
/// bound, then reads its body within the deadline.
pub async fn gated(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(caller) = identify(&app, &request) else {
        return next.run(request).await;
    };
    let mut _slot = None;
    if !caller.is_admin() {
        let max = app
            .shared
            .connections
            .config()
            .requests_in_flight_per_principal_max;
        match app.shared.slots.take(&app, caller.id, max) {
            Some(slot) => _slot = Some(slot),
            None => return too_many_requests(&app, &caller.address, max),
        }
    }
    request.extensions_mut().insert(caller);
    with_body(&app, request, next).await
}

/// The governance lane: reads the request's body within the deadline.
pub async fn body_deadline(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(caller) = identify(&app, &request) else {
        return next.run(request).await;
    };
    request.extensions_mut().insert(caller);
    with_body(&app, request, next).await
}

/// The principal whose bearer token the request carries, if the token is valid. A
/// request without one goes on untouched: the `Caller` extractor answers it `401`
/// before its body is read, so that nobody unknown has the node hold a body.
fn identify(app: &AppState, request: &Request) -> Option<crate::auth::Caller> {
    bearer_token(request.headers()).and_then(|token| authenticate(app, token).ok())
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

/// Reads the request's body before its route does, giving up after
/// `body_timeout_ms`; the route then reads it from memory.
async fn with_body(app: &AppState, request: Request, next: Next) -> Response {
    if axum::body::HttpBody::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let limit = crate::edge::body_limit(app, request.uri().path());
    let deadline = Duration::from_millis(app.shared.connections.config().body_timeout_ms);
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(deadline, read(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(error)) => error.into_response(),
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms; send it at once",
                    deadline.as_millis()
                ),
            )
            .with("timeout_ms", deadline.as_millis() as u64)
            .into_response();
            // The rest of the body may still come: the connection is not reused.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// The whole body, or why not: past `limit` bytes, or the client broke off. A body
/// that comes in one piece (most do) is not copied.
async fn read(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("this route takes bodies of at most {limit} bytes"),
        )
        .with("limit_bytes", limit)
    };
    let broken = |error: axum::Error| {
        ApiError::bad_request(
            "invalid_body",
            format!("the request body could not be read: {error}"),
        )
    };
    let mut stream = body.into_data_stream();
    let Some(first) = stream.next().await else {
        return Ok(Bytes::new());
    };
    let first = first.map_err(broken)?;
    if first.len() > limit {
        return Err(too_large());
    }
    let Some(second) = stream.next().await else {
        return Ok(first);
    };
    let mut out = first.to_vec();
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(broken)?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
        next = stream.next().await;
    }
    Ok(Bytes::from(out))
}
