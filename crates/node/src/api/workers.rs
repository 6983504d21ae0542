//! Worker sessions over HTTP: `POST /v1/workers`, `POST /v1/workers/{id}/heartbeat`,
//! `DELETE /v1/workers/{id}`, `GET /v1/workers`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::workers::{
    RegisterRequest, SupervisorView, WorkerHeartbeat, WorkerLeft, WorkerList, WorkerQueued,
    WorkerRegistered, WorkerView,
};
use colony_api::{ErrorBody, Explained};
use colony_kernel::workers::{NewWorker, WorkerState};
use colony_kernel::{CommandBody, Effect};

use super::{AppState, Body, Segment};
use crate::auth::Caller;
use crate::sequencer::now_ms;
use crate::ApiError;

/// Starts a worker session (counted by `active_workers`).
#[utoipa::path(post, path = "/v1/workers", tag = "workers", request_body = RegisterRequest,
    responses((status = 201, body = WorkerRegistered), (status = 202, description = "queued past a soft limit", body = WorkerQueued),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn register(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<RegisterRequest>,
) -> Result<Response, ApiError> {
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
                Json(WorkerQueued {
                    status: "queued".into(),
                    ticket,
                    worker: ticket,
                    position,
                    message: "active_workers is past its soft limit; the session starts, with this id, when a place frees up (GET /v1/workers/{id})".into(),
                    warnings: vec![Explained::of(&outcome.primary.reason)],
                }),
            )
                .into_response())
        }
        _ => return Err(ApiError::internal("a registration without its session")),
    };
    let state = app.shared.state.read().expect("state lock");
    let config = state.task_config();
    Ok((
        StatusCode::CREATED,
        Json(WorkerRegistered {
            worker,
            heartbeat_ms: config.worker_heartbeat_ms,
            timeout_ms: config.worker_timeout_ms,
            lease_ms: config.lease_ms,
            warnings: Explained::all(&outcome.primary.warnings),
        }),
    )
        .into_response())
}

/// Keeps a session alive until the returned deadline.
#[utoipa::path(post, path = "/v1/workers/{id}/heartbeat", tag = "workers", params(("id" = u64, Path)),
    responses((status = 200, body = WorkerHeartbeat), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<WorkerHeartbeat>, ApiError> {
    // Heard in memory (nothing logged) unless the node is one of a cluster.
    let deadline_ms = match &app.shared.bus.liveness {
        Some(liveness) => liveness
            .heard(caller.id, id)
            .map_err(|reason| ApiError::from_denial(&reason, now_ms()))?,
        None => {
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
            deadline_ms
        }
    };
    Ok(Json(WorkerHeartbeat {
        worker: id,
        state: "active".into(),
        deadline: colony_api::format_time(deadline_ms),
    }))
}

/// Ends a session gracefully (its leases go back on the board), or takes a session
/// still waiting for a place out of the `active_workers` queue (`withdrawn`).
#[utoipa::path(delete, path = "/v1/workers/{id}", tag = "workers", params(("id" = u64, Path)),
    responses((status = 200, body = WorkerLeft), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn leave(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<WorkerLeft>, ApiError> {
    let outcome = app
        .decide(
            caller.id,
            format!("worker {id} leaves"),
            CommandBody::LeaveWorker { worker: id },
        )
        .await?;
    let state = match outcome.primary.effect {
        Effect::WorkerWithdrawn { .. } => "withdrawn",
        _ => "left",
    };
    Ok(Json(WorkerLeft {
        worker: id,
        state: state.into(),
        effect: outcome.primary.effect.clone(),
    }))
}

/// Every worker session.
#[utoipa::path(get, path = "/v1/workers", tag = "workers", responses((status = 403, body = ErrorBody), (status = 200, body = WorkerList)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<WorkerList>, ApiError> {
    app.check_read(&caller, "workers", app.shared.read.workers)?;
    let state = app.shared.state.read().expect("state lock");
    let liveness = app.shared.bus.liveness.as_deref();
    let workers = state
        .workers()
        .map(|w| worker_view(&state, w, liveness))
        .collect();
    Ok(Json(WorkerList { workers }))
}

/// One session; 404 until a queued registration is admitted.
#[utoipa::path(get, path = "/v1/workers/{id}", tag = "workers", params(("id" = u64, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = WorkerView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<WorkerView>, ApiError> {
    app.check_read(&caller, "workers", app.shared.read.workers)?;
    let state = app.shared.state.read().expect("state lock");
    let worker = state.worker(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no worker session {id} (a queued registration appears once admitted)"),
        )
    })?;
    Ok(Json(worker_view(
        &state,
        worker,
        app.shared.bus.liveness.as_deref(),
    )))
}

/// A session as the API shows it; with soft liveness its last heartbeat is what the
/// node heard, and its deadline that plus the timeout (the log keeps only renewals).
fn worker_view(
    state: &colony_kernel::State,
    w: &colony_kernel::workers::WorkerSession,
    liveness: Option<&colony_bus::liveness::Liveness>,
) -> WorkerView {
    let heartbeat_ms = state.task_config().worker_heartbeat_ms;
    let timeout_ms = state.task_config().worker_timeout_ms;
    let (last_heartbeat_ms, deadline_ms) = match liveness {
        Some(liveness) => {
            let last = liveness
                .last_heard(w.id)
                .map_or(w.last_heartbeat_ms, |heard| heard.max(w.last_heartbeat_ms));
            (last, last.saturating_add(timeout_ms))
        }
        None => (w.last_heartbeat_ms, w.deadline_ms),
    };
    let time = colony_api::format_time;
    let health = match w.state {
        WorkerState::Active if now_ms().saturating_sub(last_heartbeat_ms) > heartbeat_ms => "late",
        WorkerState::Active => "healthy",
        other => other.as_str(),
    };
    WorkerView {
        worker: w.id,
        principal: w.address.clone(),
        capabilities: w.capabilities.clone(),
        model: w.model.clone(),
        profile: w.profile.clone(),
        state: w.state.as_str().to_string(),
        health: health.to_string(),
        registered_at: time(w.registered_at_ms),
        last_heartbeat: time(last_heartbeat_ms),
        deadline: (w.state == WorkerState::Active).then(|| time(deadline_ms)),
        tasks: state.worker_tasks(w.id),
        evidence: w.evidence.clone(),
    }
}

/// The supervisor's profiles: processes running, desired count, crashes.
#[utoipa::path(get, path = "/v1/supervisor", tag = "workers", responses((status = 403, body = ErrorBody), (status = 200, body = SupervisorView)))]
pub async fn supervisor(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<SupervisorView>, ApiError> {
    app.check_read(&caller, "supervisor", app.shared.read.supervisor)?;
    let profiles = app.shared.supervisor.lock().expect("status lock").clone();
    Ok(Json(SupervisorView { profiles }))
}
