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
