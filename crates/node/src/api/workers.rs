//! Worker sessions over HTTP: `POST /v1/workers`, `POST /v1/workers/{id}/heartbeat`,
//! `DELETE /v1/workers/{id}`, `GET /v1/workers`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_kernel::workers::{NewWorker, WorkerState};
use colony_kernel::{CommandBody, Effect};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AppState, Body, Segment};
use crate::auth::Caller;
use crate::sequencer::now_ms;
use crate::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default)]
    capabilities: Vec<String>,
    model: Option<String>,
    profile: Option<String>,
    justification: Option<String>,
}

pub async fn register(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let justification = request
        .justification
        .unwrap_or_else(|| format!("{} starts a worker session", caller.address));
    let new = NewWorker {
        capabilities: request.capabilities,
        model: request.model,
        profile: request.profile,
    };
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::RegisterWorker(Box::new(new)),
        )
        .await?;
    let worker = match outcome.primary.effect {
        Effect::WorkerRegistered { worker, .. } => worker,
        Effect::WorkerQueued { ticket, position } => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "status": "queued",
                    "ticket": ticket,
                    "worker": ticket,
                    "position": position,
                    "message": "active_workers is past its soft limit; the session starts, with this id, when a place frees up (GET /v1/workers/{id})",
                    "warnings": super::warnings_json(std::slice::from_ref(&outcome.primary.reason)),
                })),
            ))
        }
        _ => return Err(ApiError::internal("a registration without its session")),
    };
    let state = app.shared.state.read().expect("state lock");
    let config = state.task_config().expect("genesis applied");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "worker": worker,
            "heartbeat_ms": config.worker_heartbeat_ms,
            "timeout_ms": config.worker_timeout_ms,
            "lease_ms": config.lease_ms,
            "warnings": super::warnings_json(&outcome.primary.warnings),
        })),
    ))
}

pub async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<Value>, ApiError> {
    let outcome = app
        .decide(
            caller.id,
            format!("worker {id} is alive"),
            CommandBody::WorkerHeartbeat { worker: id },
        )
        .await?;
    let Effect::WorkerRegistered { deadline_ms, .. } = outcome.primary.effect else {
        return Err(ApiError::internal("a heartbeat without its deadline"));
    };
    Ok(Json(
        json!({ "worker": id, "state": "active", "deadline": colony_log::audit::format_time(deadline_ms) }),
    ))
}

pub async fn leave(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<Value>, ApiError> {
    let outcome = app
        .decide(
            caller.id,
            format!("worker {id} leaves"),
            CommandBody::LeaveWorker { worker: id },
        )
        .await?;
    Ok(Json(
        json!({ "worker": id, "state": "left", "effect": outcome.primary.effect }),
    ))
}

pub async fn list(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    let state = app.shared.state.read().expect("state lock");
    let workers: Vec<Value> = state.workers().map(|w| worker_json(&state, w)).collect();
    Json(json!({ "workers": workers }))
}

/// One session; 404 until a queued registration is admitted.
pub async fn one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<Value>, ApiError> {
    let state = app.shared.state.read().expect("state lock");
    let worker = state.worker(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no worker session {id} (a queued registration appears once admitted)"),
        )
    })?;
    Ok(Json(worker_json(&state, worker)))
}

fn worker_json(state: &colony_kernel::State, w: &colony_kernel::workers::WorkerSession) -> Value {
    let heartbeat_ms = state.task_config().map_or(0, |c| c.worker_heartbeat_ms);
    let time = colony_log::audit::format_time;
    let health = match w.state {
        WorkerState::Active if now_ms().saturating_sub(w.last_heartbeat_ms) > heartbeat_ms => {
            "late"
        }
        WorkerState::Active => "healthy",
        other => other.as_str(),
    };
    json!({
        "worker": w.id,
        "principal": w.address,
        "capabilities": w.capabilities,
        "model": w.model,
        "profile": w.profile,
        "state": w.state.as_str(),
        "health": health,
        "registered_at": time(w.registered_at_ms),
        "last_heartbeat": time(w.last_heartbeat_ms),
        "deadline": (w.state == WorkerState::Active).then(|| time(w.deadline_ms)),
        "tasks": state.worker_tasks(w.id),
        "evidence": w.evidence,
    })
}

/// The supervisor's profiles: processes running, desired count, crashes.
pub async fn supervisor(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    let profiles = app.shared.supervisor.lock().expect("status lock").clone();
    Json(json!({ "profiles": profiles }))
}
