use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::limits::{
    CheckQuery, HypernetCheck, HypernetLimit, HypernetLimits, LimitList, LimitView,
};
use colony_api::ErrorBody;
use colony_kernel::Limit;

use super::{AppState, Segment};
use crate::auth::Caller;
use crate::edge::CONCURRENT_API_REQUESTS;
use crate::sequencer::now_ms;
use crate::ApiError;

/// A limit as it stands now, with edge usage filled in.
pub(crate) fn current(app: &AppState) -> Vec<Limit> {
    let now = now_ms();
    let state = app.shared.state.read().expect("state lock");
    state
        .limits()
        .filter_map(|limit| {
            let mut limit = state.limit_at(&limit.spec.name, now)?;
            if limit.spec.name == CONCURRENT_API_REQUESTS {
                limit.usage = app.shared.in_flight.load(Ordering::Relaxed);
            }
            Some(limit)
        })
        .collect()
}

pub(crate) fn view(limit: &Limit) -> LimitView {
    LimitView {
        name: limit.spec.name.clone(),
        unit: limit.spec.unit.clone(),
        soft: limit.spec.soft,
        hard: limit.spec.hard,
        usage: limit.usage,
        reserved: limit.reserved,
        state: limit.state().as_str().to_string(),
        on_soft: limit.spec.on_soft,
        window_ms: limit.spec.window_ms,
        queued: limit.queue.len(),
        enforcement: limit.enforcement,
        description: limit.spec.description.clone(),
        set_by: limit.set_by.clone(),
        set_at: colony_api::format_time(limit.set_at_ms),
        set_via: limit.set_via.clone(),
    }
}

/// Every system-wide limit with its usage and state.
#[utoipa::path(get, path = "/v1/limits", tag = "limits", responses((status = 403, body = ErrorBody), (status = 200, body = LimitList)))]
pub async fn list(State(app): State<AppState>, _caller: Caller) -> Json<LimitList> {
    let limits = current(&app).iter().map(view).collect();
    Json(LimitList { limits })
}

/// One limit, by its name (or its Hypernet name).
#[utoipa::path(get, path = "/v1/limits/{name}", tag = "limits", params(("name" = String, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = LimitView), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
) -> Result<Json<LimitView>, ApiError> {
    let canonical = colony_kernel::builtin_limit(&name).map_or(name.as_str(), |b| b.name);
    current(&app)
        .iter()
        .find(|limit| limit.spec.name == canonical)
        .map(|limit| Json(view(limit)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_limit",
                format!("no limit `{name}`; `GET /v1/limits` lists them"),
            )
            .with("limit", name.clone())
        })
}

/// The name the Hypernet swarm used for a limit, if it had one.
fn hypernet_name(name: &str) -> String {
    colony_kernel::builtin_limit(name)
        .and_then(|builtin| {
            builtin
                .compat
                .iter()
                .find(|c| c.starts_with("max_") || **c == name)
                .copied()
        })
        .unwrap_or(name)
        .to_string()
}

fn hypernet_view(limit: &Limit) -> HypernetLimit {
    HypernetLimit {
        name: hypernet_name(&limit.spec.name),
        colony_name: limit.spec.name.clone(),
        soft: limit.spec.soft,
        hard: limit.spec.hard,
        description: limit.spec.description.clone(),
        adjustable: true,
    }
}

/// The old swarm's shape, keyed by the old names.
#[utoipa::path(get, path = "/limits", tag = "hypernet", responses((status = 403, body = ErrorBody), (status = 200, body = HypernetLimits)))]
pub async fn hypernet_list(State(app): State<AppState>, _caller: Caller) -> Json<HypernetLimits> {
    let limits = current(&app)
        .iter()
        .map(|limit| (hypernet_name(&limit.spec.name), hypernet_view(limit)))
        .collect();
    Json(HypernetLimits { limits })
}

fn find(app: &AppState, name: &str) -> Result<Limit, ApiError> {
    let canonical = colony_kernel::builtin_limit(name).map_or(name, |b| b.name);
    current(app)
        .into_iter()
        .find(|limit| limit.spec.name == canonical)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_limit",
                format!("no limit `{name}`"),
            )
            .with("limit", name)
        })
}

/// One limit in the old swarm's shape.
#[utoipa::path(get, path = "/limits/{name}", tag = "hypernet", params(("name" = String, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = HypernetLimit), (status = 404, body = ErrorBody)))]
pub async fn hypernet_one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
) -> Result<Json<HypernetLimit>, ApiError> {
    Ok(Json(hypernet_view(&find(&app, &name)?)))
}

/// Blocked at or past hard, warned at or past soft, as the old `limits.py`
/// `check(name, current)` answered.
#[utoipa::path(get, path = "/limits/check/{name}", tag = "hypernet", params(("name" = String, Path), ("current" = Option<u64>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = HypernetCheck), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn hypernet_check(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
    super::Params(query): super::Params<CheckQuery>,
) -> Result<Json<HypernetCheck>, ApiError> {
    let limit = find(&app, &name)?;
    let current = query
        .current
        .unwrap_or_else(|| limit.committed_and_reserved());
    let blocked = limit.spec.hard.is_some_and(|hard| current >= hard);
    let warning = !blocked && limit.spec.soft.is_some_and(|soft| current >= soft);
    let message = if blocked {
        format!(
            "{} is at its hard limit ({current} of {})",
            hypernet_name(&limit.spec.name),
            limit.spec.hard.unwrap_or(0)
        )
    } else if warning {
        format!(
            "{} is past its soft limit ({current}, soft {})",
            hypernet_name(&limit.spec.name),
            limit.spec.soft.unwrap_or(0)
        )
    } else {
        "ok".to_string()
    };
    Ok(Json(HypernetCheck {
        name: hypernet_name(&limit.spec.name),
        current,
        soft: limit.spec.soft,
        hard: limit.spec.hard,
        allowed: !blocked,
        warning,
        status: if blocked {
            "blocked"
        } else if warning {
            "warning"
        } else {
            "ok"
        }
        .to_string(),
        message,
    }))
}
