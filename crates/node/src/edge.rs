//! The edge: what every request of the API passes before its route, in one layer
//! per lane (`api::router`), so that a request pays for one middleware, not six.
//!
//! In this order: a failed node answers nothing but its failure; a body declared
//! larger than its route takes is answered `413`; the governance and gated lanes
//! count the request in `concurrent_api_requests` (the gated lane sheds it past the
//! limit, [`admit_gated`]); the principal's share and the body's bounds
//! (`fairness.rs`, `body.rs`); the route; then the answer is counted for the
//! kernel's stability windows and, in a cluster that has lost NATS, marked stale.
//!
//! `concurrent_api_requests` counts requests being served. On one node the node's
//! share is the whole limit, so the count is exact; in a cluster each node takes its
//! share of soft and hard (divided by the live nodes, at least 1 each), so that the
//! cluster together stays within the limit. Values are read from the kernel state
//! (so governance changes apply at once); usage is an atomic.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colony_kernel::{Gate, Limit, Priority, Reason};

use crate::app::AppState;
use crate::route::Lane;
use crate::ApiError;

pub use crate::route::REQUEST_BODY_BYTES_MAX;

pub const CONCURRENT_API_REQUESTS: &str = "concurrent_api_requests";

/// The layer of the open lane's routes.
pub(crate) async fn open_lane(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    edge(&app, Lane::Open, request, next).await
}

/// The layer of the governance lane's routes: counted in `concurrent_api_requests`
/// usage like any request, never refused or shed by it.
pub(crate) async fn governance_lane(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    edge(&app, Lane::Governance, request, next).await
}

/// The layer of the gated lane's routes.
pub(crate) async fn gated_lane(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    edge(&app, Lane::Gated, request, next).await
}

/// One request through the edge, as the module says.
async fn edge(app: &AppState, lane: Lane, request: Request, next: Next) -> Response {
    if let Some(failed) = failed(app, &request) {
        return mark_stale(app, failed);
    }
    let limit = body_limit(app, &request);
    let response = match declared_over(&request, limit) {
        Some(declared) => refuse_oversized(request, limit, declared).await,
        None => match lane {
            Lane::Open => next.run(bounded(request, limit)).await,
            Lane::Governance => {
                let _guard = InFlight::enter(&app.shared);
                crate::fairness::admit(app, Lane::Governance, request, limit, next).await
            }
            Lane::Gated => admit_gated(app, request, limit, next).await,
        },
    };
    count(app, &response);
    mark_stale(app, response)
}

/// `request` with its body bounded to `limit` bytes, for a route that reads it
/// itself (a request not read by the edge: no known principal, or the open lane).
/// Past the bound the route answers `413`.
pub(crate) fn bounded(request: Request, limit: usize) -> Request {
    request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)))
}

/// An answer given without a route (no such route, no such method), as the edge
/// gives every answer: a failed node's failure instead, counted, marked stale.
pub(crate) fn unrouted(app: &AppState, request: &Request, answer: ApiError) -> Response {
    if let Some(failed) = failed(app, request) {
        return mark_stale(app, failed);
    }
    let response = answer.into_response();
    count(app, &response);
    mark_stale(app, response)
}

/// A failed node answers nothing but its failure (`/healthz` says it too). An
/// atomic load on every request; the reason is read only once failed.
fn failed(app: &AppState, request: &Request) -> Option<Response> {
    let reason = app
        .shared
        .fatal
        .is_failed()
        .then(|| app.shared.fatal.reason())
        .flatten()?;
    (request.uri().path() != "/healthz").then(|| ApiError::node_failed(&reason).into_response())
}

/// Counts every answer for the kernel's stability windows: 5xx answers are errors,
/// authentication failures are anomalies.
fn count(app: &AppState, response: &Response) {
    let metrics = &app.shared.metrics;
    metrics.health_requests.fetch_add(1, Ordering::Relaxed);
    let status = response.status();
    if status.is_server_error() {
        metrics.health_errors.fetch_add(1, Ordering::Relaxed);
    } else if status == axum::http::StatusCode::UNAUTHORIZED {
        metrics.health_anomalies.fetch_add(1, Ordering::Relaxed);
    }
}

/// In a cluster, while this node has lost NATS, every answer says that what it read
/// may be behind the others (`X-Colony-Stale: true`); writes are refused meanwhile.
fn mark_stale(app: &AppState, mut response: Response) -> Response {
    if app
        .shared
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.connected())
    {
        response
            .headers_mut()
            .insert("x-colony-stale", HeaderValue::from_static("true"));
    }
    response
}

/// Admits a request of the gated lane if the concurrency limit allows it (warns
/// past soft), then hands it to the principal's share (`fairness.rs`).
async fn admit_gated(app: &AppState, request: Request, limit_bytes: usize, next: Next) -> Response {
    let shared = &app.shared;
    let (in_flight, _guard) = InFlight::enter(shared);
    let nodes = shared.cluster.as_ref().map(|cluster| cluster.live_nodes());
    // This node's share of soft and hard (the whole of them on one node).
    let share = |value: u64| nodes.map_or(value, |nodes| (value / nodes).max(1));
    let limit: Option<Limit> = {
        let state = shared.state.read().expect("state lock");
        state
            .limit_named(colony_kernel::LimitName::ConcurrentApiRequests)
            // Under soft and hard, as nearly every request is, nothing more is
            // needed; the limit is copied (its names, for the reason) only past one.
            .filter(|limit| {
                let after = limit.reserved.saturating_add(in_flight);
                let within = |bound: Option<u64>| bound.is_none_or(|bound| after <= share(bound));
                !(within(limit.spec.soft) && within(limit.spec.hard))
            })
            .cloned()
    };
    let mut warning = None;
    if let Some(mut limit) = limit {
        limit.usage = in_flight - 1;
        limit.spec.soft = limit.spec.soft.map(share);
        limit.spec.hard = limit.spec.hard.map(share);
        match limit.gate(1) {
            Gate::Allow => {}
            Gate::Deny(reason) => {
                shared.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
                let mut error = ApiError::from_denial(&reason, crate::sequencer::now_ms());
                error.status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
                error.retry_after_secs = Some(1);
                return error.into_response();
            }
            Gate::Warn(reason) | Gate::Queue(reason) => {
                // Past soft, the room left below hard goes to the more urgent first;
                // what a request may claim is bounded by who makes it.
                let declared = request_priority(&request);
                let allowed = priority_ceiling(app, &request);
                let priority = declared.min(allowed);
                if priority < declared {
                    shared
                        .metrics
                        .http_priority_capped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        declared = declared.as_str(),
                        allowed = allowed.as_str(),
                        "a request declared more priority than its caller may claim; capped"
                    );
                }
                let usage = in_flight - 1;
                if let (Some(soft), Some(hard)) = (limit.spec.soft, limit.spec.hard) {
                    if usage >= admission_ceiling(priority, soft, hard) {
                        shared.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
                        let mut error = ApiError::new(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "shed",
                            format!(
                                "the node is past its soft concurrency limit ({usage} requests in flight, soft {soft}, hard {hard}); \
                                 {} requests are shed first: retry shortly",
                                priority.as_str()
                            ),
                        )
                        .with("limit", CONCURRENT_API_REQUESTS)
                        .with("priority", priority.as_str());
                        error.retry_after_secs = Some(1);
                        return error.into_response();
                    }
                }
                warning = Some(reason);
            }
        }
    }
    let mut response = crate::fairness::admit(app, Lane::Gated, request, limit_bytes, next).await;
    if let Some(Reason::SoftLimit {
        limit, usage, soft, ..
    }) = warning
    {
        if let Ok(value) =
            HeaderValue::from_str(&format!("soft_limit {limit} usage={usage} soft={soft}"))
        {
            response.headers_mut().insert("colony-warning", value);
        }
    }
    response
}

/// Most bytes of an oversized body read (and dropped) before answering 413.
pub const OVERSIZED_DRAIN_BYTES_MAX: u64 = 16 << 20;
/// Longest time spent reading an oversized body before answering 413.
const OVERSIZED_DRAIN_MS: u64 = 2_000;

/// The length a request declares, when it is more than `limit` bytes.
fn declared_over(request: &Request, limit: usize) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|declared| *declared > limit as u64)
}

/// Answers a body declared larger than its route accepts with 413, after reading
/// what the client sends (up to `OVERSIZED_DRAIN_BYTES_MAX`): a client that sends its
/// whole body before reading (Python's urllib, most SDKs) would otherwise see the
/// connection reset instead of the answer. A client that waits for `100-continue`
/// (curl) is answered at once, before it sends anything.
async fn refuse_oversized(request: Request, limit: usize, declared: u64) -> Response {
    let expects_continue = request
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue && declared <= OVERSIZED_DRAIN_BYTES_MAX {
        use futures_util::StreamExt;
        let mut body = request.into_body().into_data_stream();
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(OVERSIZED_DRAIN_MS),
            async { while let Some(Ok(_)) = body.next().await {} },
        )
        .await;
    }
    let mut response = ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("this route takes bodies of at most {limit} bytes; this one is {declared}"),
    )
    .with("limit_bytes", limit)
    .with("declared_bytes", declared)
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}

/// The largest body the route `request` was matched to takes, in bytes (as the
/// route table says; the small bound for a request no route matched).
pub(crate) fn body_limit(app: &AppState, request: &Request) -> usize {
    let bound = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|matched| app.shared.routes.find(request.method(), matched.as_str()))
        .map(|route| route.body);
    bound
        .unwrap_or(crate::route::BodyBound::Small)
        .bytes(app.shared.gateway.config.request_bytes_max)
}

struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);

impl InFlight<'_> {
    /// Counts a request and holds its place in flight until dropped; the requests in
    /// flight now, this one included.
    fn enter(shared: &crate::app::Shared) -> (u64, InFlight<'_>) {
        shared.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
        let in_flight = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        (in_flight, InFlight(&shared.in_flight))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The priority a request declares in `X-Colony-Priority` (default normal).
fn request_priority(request: &Request) -> Priority {
    match request
        .headers()
        .get("x-colony-priority")
        .and_then(|v| v.to_str().ok())
    {
        Some("low") => Priority::Low,
        Some("high") => Priority::High,
        Some("critical") => Priority::Critical,
        _ => Priority::Normal,
    }
}

/// The highest priority a request may claim: an admin's may be critical, a
/// member's high, anyone else's (observers, artifacts, no valid token) normal; a
/// request made for a task its caller holds (`X-Colony-Task`) may claim the task's
/// priority.
fn priority_ceiling(app: &AppState, request: &Request) -> Priority {
    let headers = request.headers();
    let token = crate::auth::bearer_token(headers)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(caller) =
        token.and_then(|token| crate::auth::authenticate(&app.shared.state, token).ok())
    else {
        return Priority::Normal;
    };
    let by_role = if caller.is_admin() {
        Priority::Critical
    } else if caller.roles.contains(&colony_kernel::Role::Member) {
        Priority::High
    } else {
        Priority::Normal
    };
    let by_task = headers
        .get("x-colony-task")
        .and_then(|v| v.to_str().ok())
        .and_then(|address| {
            let state = app.shared.state.read().expect("state lock");
            state
                .task(address)
                .filter(|task| task.lease.as_ref().is_some_and(|l| l.holder == caller.id))
                .map(|task| task.priority)
        })
        .unwrap_or(Priority::Low);
    by_role.max(by_task)
}

/// Requests in flight at which a priority stops being admitted, between soft and hard:
/// low at soft, normal halfway, high a tenth short of hard, critical at hard.
pub fn admission_ceiling(priority: Priority, soft: u64, hard: u64) -> u64 {
    let room = hard.saturating_sub(soft);
    match priority {
        Priority::Low => soft,
        Priority::Normal => soft + room / 2,
        Priority::High => hard.saturating_sub((room / 10).max(1)).max(soft),
        Priority::Critical => hard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_by_priority() {
        let check = |priority, expected| {
            assert_eq!(
                admission_ceiling(priority, 100, 200),
                expected,
                "{priority:?}"
            )
        };
        check(Priority::Low, 100);
        check(Priority::Normal, 150);
        check(Priority::High, 190);
        check(Priority::Critical, 200);
        assert_eq!(admission_ceiling(Priority::High, 5, 5), 5);
    }
}
