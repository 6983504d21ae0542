//! Edge gating: limits enforced by the node in memory on hot paths.
//!
//! `concurrent_api_requests` counts requests being served. On one node the node's
//! share is the whole limit, so the count is exact. Values are read from the kernel
//! state (so governance changes apply at once); usage is an atomic.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colony_kernel::{Gate, Limit, Priority, Reason};

use crate::api::AppState;
use crate::ApiError;

pub const CONCURRENT_API_REQUESTS: &str = "concurrent_api_requests";

/// Admits the request if the concurrency limit allows it; warns past soft.
pub async fn concurrency_gate(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let shared = &app.shared;
    shared.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let in_flight = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = InFlight(&shared.in_flight);
    let limit: Option<Limit> = shared
        .state
        .read()
        .expect("state lock")
        .limit(CONCURRENT_API_REQUESTS)
        .cloned();
    let mut warning = None;
    if let Some(mut limit) = limit {
        limit.usage = in_flight - 1;
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
                // Past soft, the room left below hard goes to the more urgent first.
                let priority = request_priority(&request);
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
    let mut response = next.run(request).await;
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

struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);

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

/// Counts every answer for the kernel's stability windows: 5xx answers are errors,
/// authentication failures are anomalies.
pub async fn health_counter(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let metrics = &app.shared.metrics;
    metrics.health_requests.fetch_add(1, Ordering::Relaxed);
    let status = response.status();
    if status.is_server_error() {
        metrics.health_errors.fetch_add(1, Ordering::Relaxed);
    } else if status == axum::http::StatusCode::UNAUTHORIZED {
        metrics.health_anomalies.fetch_add(1, Ordering::Relaxed);
    }
    response
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
