//! `GET /v1/alerts` and `GET /v1/alerts/dead-letters`.

use axum::extract::State;
use axum::Json;
use colony_api::alerts::{
    AlertList, AlertQuery, AlertView, DeadLetterList, DeadLetterView, RaisedView,
};
use colony_api::ErrorBody;
use colony_kernel::alerts::AlertScope;

use super::{AppState, Params};
use crate::auth::Caller;
use crate::ApiError;

/// Alerts at most in one answer.
pub const ALERTS_PAGE_MAX: usize = 1_000;
/// Raised thresholds listed at most in one answer (`raised_total` counts them all).
pub const RAISED_SHOWN_MAX: usize = 1_000;

/// Proximity alerts as recorded (the latest, oldest first), and the thresholds
/// standing raised now.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(("after" = Option<u64>, Query, description = "only alerts with a greater id"),
        ("limit" = Option<usize>, Query, description = "1 to 1000 (100): the latest")),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    _caller: Caller,
    Params(query): Params<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=ALERTS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit is 1 to {ALERTS_PAGE_MAX}"),
        ));
    }
    let state = app.shared.state.read().expect("state lock");
    let after = query.after.unwrap_or(0);
    let mut alerts: Vec<_> = state
        .alerts()
        .rev()
        .take_while(|a| a.id > after)
        .take(limit)
        .map(view)
        .collect();
    alerts.reverse();
    let raised_total = state.raised_alerts().count();
    let raised = state
        .raised_alerts()
        .take(RAISED_SHOWN_MAX)
        .map(|(scope, threshold)| {
            let (figure, principal) = match scope {
                AlertScope::Limit { limit } => (limit.clone(), None),
                AlertScope::Quota {
                    principal,
                    resource,
                } => (
                    format!("quota.{resource}"),
                    state.principal(*principal).map(|p| p.address.clone()),
                ),
            };
            RaisedView {
                figure,
                principal,
                threshold: threshold.to_string(),
            }
        })
        .collect();
    let webhooks = &app.shared.alerts.webhooks;
    Ok(Json(AlertList {
        alerts,
        raised,
        raised_total,
        webhooks: app.shared.alerts.config.webhooks.len(),
        dead_letters: webhooks.dead_letters().len(),
    }))
}

/// Deliveries to webhooks that never arrived (the latest 256; all of them in
/// `<data>/alerts/dead-letters.jsonl`).
#[utoipa::path(get, path = "/v1/alerts/dead-letters", tag = "alerts",
    responses((status = 200, body = DeadLetterList), (status = 403, body = ErrorBody)))]
pub async fn dead_letters(State(app): State<AppState>, _caller: Caller) -> Json<DeadLetterList> {
    let dead_letters = app
        .shared
        .alerts
        .webhooks
        .dead_letters()
        .into_iter()
        .map(|d| DeadLetterView {
            delivery: d.delivery,
            webhook: d.webhook,
            attempts: d.attempts,
            error: d.error,
            at: colony_api::format_time(d.at_ms),
            body: d.body,
        })
        .collect();
    Json(DeadLetterList { dead_letters })
}

/// An alert as the API, the bus and the webhooks show it.
pub(crate) fn view(alert: &colony_kernel::alerts::Alert) -> AlertView {
    let r = &alert.report;
    let (limit, resource) = match &r.scope {
        AlertScope::Limit { limit } => (Some(limit.clone()), None),
        AlertScope::Quota { resource, .. } => (None, Some(resource.as_str().to_string())),
    };
    AlertView {
        id: alert.id,
        seq: alert.seq,
        at: colony_api::format_time(alert.at_ms),
        at_ms: alert.at_ms,
        kind: if r.raised { "raise" } else { "clear" }.into(),
        figure: alert.figure(),
        limit,
        principal: alert.principal.clone(),
        resource,
        threshold: r.threshold.to_string(),
        usage: r.usage,
        threshold_value: r.at,
        of: r.of,
        summary: alert.summary(),
    }
}
