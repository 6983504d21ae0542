//! Request bodies, read before their route (which then reads them from memory)
//! under three bounds, so that no client can have the node wait for, or hold, more
//! than its share:
//!
//! - the route's size (64 KiB, the gateway's 4 MiB, an artifact's 8 MiB): `413`;
//! - a deadline, `body_timeout_ms` from the request reaching its route, however
//!   slowly the body trickles in: `408 body_timeout`, and the connection is closed;
//! - memory: the bytes of the large bodies (on the routes that take more than the
//!   usual 64 KiB: the gateway's and the artifacts') being read or served are
//!   counted, node-wide against `body_bytes_in_flight_max` (`503 body_budget`,
//!   `scope: node`) and per principal against `body_bytes_in_flight_per_principal_max`
//!   (`429 body_budget`, `scope: principal`), as they arrive, until the request is
//!   answered. Other bodies are bounded by their size times the requests in flight
//!   (64 KiB x `requests_in_flight_per_principal_max` for a principal), and are not
//!   counted: the count is a lock every request would take.
//!
//! Only requests of a known principal get here ([`crate::fairness`]).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colony_kernel::PrincipalId;
use futures_util::StreamExt;

use crate::app::AppState;
use crate::gate_counts::Over;
use crate::ApiError;

/// One body's bytes, counted until dropped.
struct Hold {
    app: AppState,
    principal: PrincipalId,
    bytes: u64,
}

impl Hold {
    /// Counts `more` bytes, or says which bound they would pass.
    fn grow(&mut self, more: u64) -> Result<(), ApiError> {
        let config = self.app.shared.connections.config();
        let (node_max, principal_max) = (
            config.body_bytes_in_flight_max,
            config.body_bytes_in_flight_per_principal_max,
        );
        let refusal = self
            .app
            .shared
            .body_bytes
            .add(self.principal, more, node_max, principal_max);
        let refusal = match refusal {
            Ok(()) => None,
            Err(Over::Node) => Some((
                StatusCode::SERVICE_UNAVAILABLE,
                "node",
                node_max,
                "the node holds",
            )),
            Err(Over::Principal) => Some((
                StatusCode::TOO_MANY_REQUESTS,
                "principal",
                principal_max,
                "your requests hold",
            )),
        };
        if let Some((status, scope, max, who)) = refusal {
            let mut error = ApiError::new(
                status,
                "body_budget",
                format!(
                    "{who} as many bytes of request bodies being read or served as they may ({max}); retry when some are answered"
                ),
            )
            .with("scope", scope)
            .with("max_bytes", max);
            error.retry_after_secs = Some(1);
            return Err(error);
        }
        self.bytes += more;
        Ok(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.app
            .shared
            .body_bytes
            .release(self.principal, self.bytes);
    }
}

/// Reads `principal`'s request body under its bounds (at most `limit` bytes, its
/// route's), then passes the request on with the body in memory (counted until the
/// request is answered).
pub(crate) async fn with_body(
    app: &AppState,
    principal: PrincipalId,
    request: Request,
    limit: usize,
    next: Next,
) -> Response {
    if axum::body::HttpBody::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let deadline = Duration::from_millis(app.shared.connections.config().body_timeout_ms);
    let mut hold = (limit > crate::edge::REQUEST_BODY_BYTES_MAX).then(|| Hold {
        app: app.clone(),
        principal,
        bytes: 0,
    });
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(deadline, read(body, limit, &mut hold)).await;
    let refusal = match read {
        Ok(Ok(bytes)) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            drop(hold);
            return response;
        }
        Ok(Err(error)) => error,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms; send it at once",
                deadline.as_millis()
            ),
        )
        .with("timeout_ms", deadline.as_millis() as u64),
    };
    let mut response = refusal.into_response();
    // The rest of the body may still come: the connection is not reused.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}

/// The whole body, or why not: past `limit` bytes or the memory budget, or the
/// client broke off. A body that comes in one piece (most do) is not copied.
async fn read(body: Body, limit: usize, hold: &mut Option<Hold>) -> Result<Bytes, ApiError> {
    let mut grow = |bytes: usize| match hold {
        Some(hold) => hold.grow(bytes as u64),
        None => Ok(()),
    };
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
    grow(first.len())?;
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
        grow(chunk.len())?;
        out.extend_from_slice(&chunk);
        next = stream.next().await;
    }
    Ok(Bytes::from(out))
}
