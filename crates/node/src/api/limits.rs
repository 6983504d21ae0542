use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_kernel::Limit;
use serde_json::{json, Value};

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

fn to_json(limit: &Limit) -> Value {
    json!({
        "name": limit.spec.name,
        "unit": limit.spec.unit,
        "soft": limit.spec.soft,
        "hard": limit.spec.hard,
        "usage": limit.usage,
        "reserved": limit.reserved,
        "state": limit.state().as_str(),
        "on_soft": limit.spec.on_soft,
        "window_ms": limit.spec.window_ms,
        "queued": limit.queue.len(),
        "enforcement": limit.enforcement,
        "description": limit.spec.description,
        "set_by": limit.set_by,
        "set_at": colony_log::audit::format_time(limit.set_at_ms),
        "set_via": limit.set_via,
    })
}

pub async fn list(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    let limits: Vec<Value> = current(&app).iter().map(to_json).collect();
    Json(json!({ "limits": limits }))
}

pub async fn one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
) -> Result<Json<Value>, ApiError> {
    let canonical = colony_kernel::builtin_limit(&name).map_or(name.as_str(), |b| b.name);
    current(&app)
        .iter()
        .find(|limit| limit.spec.name == canonical)
        .map(|limit| Json(to_json(limit)))
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

fn hypernet_json(limit: &Limit) -> Value {
    json!({
        "name": hypernet_name(&limit.spec.name),
        "colony_name": limit.spec.name,
        "soft": limit.spec.soft,
        "hard": limit.spec.hard,
        "description": limit.spec.description,
        "adjustable": true,
    })
}

/// `GET /limits`: the old swarm's shape, keyed by the old names.
pub async fn hypernet_list(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    let limits: serde_json::Map<String, Value> = current(&app)
        .iter()
        .map(|limit| (hypernet_name(&limit.spec.name), hypernet_json(limit)))
        .collect();
    Json(json!({ "limits": limits }))
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

/// `GET /limits/{name}`.
pub async fn hypernet_one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(hypernet_json(&find(&app, &name)?)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    /// The count to check; the live usage when absent.
    current: Option<u64>,
}

/// `GET /limits/check/{name}?current=N`: blocked at or past hard, warned at or past
/// soft, as the old `limits.py` `check(name, current)` answered.
pub async fn hypernet_check(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
    super::Params(query): super::Params<CheckQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "name": hypernet_name(&limit.spec.name),
        "current": current,
        "soft": limit.spec.soft,
        "hard": limit.spec.hard,
        "allowed": !blocked,
        "warning": warning,
        "status": if blocked { "blocked" } else if warning { "warning" } else { "ok" },
        "message": message,
    })))
}
