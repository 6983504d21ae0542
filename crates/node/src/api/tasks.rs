//! The task board over HTTP: `/v1/tasks...`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::tasks::{
    ClaimRequest, Claimed, DecomposeRequest, LeaseGranted, LeaseRequest, ListQuery,
    PriorityRequest, TaskList, TaskRequest, TaskView, Usd, CLAIM_WAIT_MS_MAX,
};
use colony_api::{ErrorBody, Explained, Justified};
use colony_kernel::tasks::{NewTask, Task, TaskStatus};
use colony_kernel::{CommandBody, Effect, TaskAddress, TaskUpdate};
use serde_json::Value;

use super::task_view::{task_view, view_now};
use super::{require_justification, AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

/// Dollars as a JSON number or a decimal string, to micro-dollars.
fn usd(field: &str, value: &Option<Usd>) -> Result<Option<u64>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_body",
            format!("{field} is an amount of dollars like 1.50 or \"1.50\""),
        )
    };
    match value {
        None => Ok(None),
        Some(Usd::Text(text)) => crate::genesis::parse_usd(text).map(Some).map_err(|_| bad()),
        Some(Usd::Number(dollars)) => {
            let dollars = Some(*dollars)
                .filter(|d| *d >= 0.0 && d.is_finite())
                .ok_or_else(bad)?;
            let micro = (dollars * 1_000_000.0).round();
            if micro > super::AMOUNT_MAX as f64 {
                return Err(bad());
            }
            Ok(Some(micro as u64))
        }
    }
}

fn into_new_task(request: TaskRequest) -> Result<(NewTask, Option<String>), ApiError> {
    let budget = usd("budget_usd", &request.budget_usd)?;
    let attempt_timeout_ms = request
        .attempt_timeout
        .as_ref()
        .map(|timeout| super::bus::duration_ms("attempt_timeout", timeout))
        .transpose()?;
    let task = NewTask {
        title: request.title,
        description: request.description,
        priority: request.priority,
        capabilities: request.capabilities,
        depends_on: request.depends_on,
        budget_micro_usd: budget,
        max_attempts: request.max_attempts,
        attempt_timeout_ms,
    };
    Ok((task, request.justification))
}

/// Posts a task to the board.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = TaskRequest,
    responses((status = 201, body = TaskView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn post(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<TaskRequest>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let (task, justification) = into_new_task(request)?;
    let justification = require_justification(justification)?;
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::PostTask(Box::new(task)),
        )
        .await?;
    let Effect::TaskChanged { address, .. } = &outcome.primary.effect else {
        return Err(ApiError::internal("a posted task without its address"));
    };
    let mut body = view_now(&app, address, true).await?;
    body.warnings = Some(Explained::all(&outcome.primary.warnings));
    Ok((StatusCode::CREATED, Json(body)))
}

/// Claims the best claimable task matching the capabilities (`204`: none). With
/// `wait_ms`, a claim that finds nothing waits up to that long for a matching task
/// to become claimable (a long poll, see `claim_wait.rs`).
#[utoipa::path(post, path = "/v1/tasks/claim", tag = "tasks", request_body = ClaimRequest,
    responses((status = 200, body = Claimed), (status = 204, description = "nothing to claim (within wait_ms)"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 410, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn claim(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ClaimRequest>,
) -> Result<Response, ApiError> {
    let wait_ms = request.wait_ms.unwrap_or(0);
    if wait_ms > CLAIM_WAIT_MS_MAX {
        return Err(ApiError::bad_request(
            "invalid",
            format!("wait_ms is at most {CLAIM_WAIT_MS_MAX} (30 s); claim again after it"),
        )
        .with("field", "wait_ms"));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut charged = false;
    loop {
        let waiting = waiting_claim(&app, &caller, &request, deadline);
        // A poll that finds nothing is answered from the board as it stands, without
        // a command and a record (an idle worker polling every second wrote ~50 MB of
        // log a day): it still spends the io_op the command would have, through the
        // edge meter (once, however long it waits); a refusal, or any doubt, goes
        // through the kernel and says why.
        let nothing = app
            .shared
            .state
            .read()
            .expect("state lock")
            .finds_nothing_to_claim(
                caller.id,
                &request.capabilities,
                request.lease_ms,
                request.worker,
            );
        if nothing == Some(true) {
            let meters = &app.shared.bus.meters;
            if charged
                || meters
                    .take(&meters.meter(caller.id), &caller.address, 0)
                    .is_ok()
            {
                charged = true;
                match waiting {
                    Some(waiting) => {
                        wait_for_work(&app, &caller, &waiting, deadline).await;
                        continue;
                    }
                    None => return Ok(StatusCode::NO_CONTENT.into_response()),
                }
            }
        }
        let body = CommandBody::ClaimTask {
            capabilities: request.capabilities.clone(),
            lease_ms: request.lease_ms,
            worker: request.worker,
        };
        let justification = request
            .justification
            .clone()
            .unwrap_or_else(|| format!("{} asks for work", caller.address));
        let outcome = app.decide(caller.id, justification, body).await?;
        match &outcome.primary.effect {
            Effect::NothingToClaim => match waiting {
                // Taken by another claim between the look and the command: wait for
                // the next offer (not straight back to the kernel).
                Some(waiting) => wait_for_work(&app, &caller, &waiting, deadline).await,
                None => return Ok(StatusCode::NO_CONTENT.into_response()),
            },
            Effect::TaskClaimed {
                address,
                token,
                expires_at_ms,
            } => return claimed(&app, address, *token, *expires_at_ms, &outcome).await,
            other => return Err(ApiError::internal(format!("unexpected effect {other:?}"))),
        }
    }
}

/// The claim registered to wait, if it may still wait (time left, and room among
/// its principal's waiting claims and the node's). Registered before the board is
/// looked at, so that a task made claimable in between wakes it.
fn waiting_claim(
    app: &AppState,
    caller: &Caller,
    request: &ClaimRequest,
    deadline: tokio::time::Instant,
) -> Option<crate::claim_wait::Waiting> {
    if tokio::time::Instant::now() >= deadline {
        return None;
    }
    let capabilities = app
        .shared
        .state
        .read()
        .expect("state lock")
        .capabilities_offered(&request.capabilities, request.worker)
        .into_iter()
        .collect();
    let per_principal_max = app
        .shared
        .connections
        .config()
        .requests_in_flight_per_principal_max;
    app.shared
        .claim_waiters
        .register(caller.id, capabilities, per_principal_max)
}

/// Waits, not counted among the requests being served, until a matching task became
/// claimable, the deadline, or the node stopping.
async fn wait_for_work(
    app: &AppState,
    caller: &Caller,
    waiting: &crate::claim_wait::Waiting,
    deadline: tokio::time::Instant,
) {
    let _aside = crate::fairness::step_aside(app, caller);
    tokio::select! {
        () = waiting.woken() => {}
        () = tokio::time::sleep_until(deadline) => {}
    }
}

/// The `200` of a claim that took a task.
async fn claimed(
    app: &AppState,
    address: &str,
    token: u64,
    expires_at_ms: u64,
    outcome: &colony_pipeline::Outcome,
) -> Result<Response, ApiError> {
    // A later command may have ended the lease already (or even sent the task's tree
    // to the archive): its deadline is then the claim's end.
    let attempt_deadline_ms = app
        .shared
        .state
        .read()
        .expect("state lock")
        .task(address)
        .and_then(|claimed| claimed.lease.as_ref())
        .map_or(expires_at_ms, |lease| lease.attempt_deadline_ms);
    let task = view_now(app, address, false).await?;
    Ok(Json(Claimed {
        task,
        lease: LeaseGranted {
            token,
            expires_at: colony_api::format_time(expires_at_ms),
            expires_at_ms,
            attempt_deadline_ms,
        },
        warnings: Explained::all(&outcome.primary.warnings),
    })
    .into_response())
}

/// `heartbeat`, `checkpoint`, `complete`, `fail`, `release`, `spend`: the holder of a
/// lease acts on its task, presenting the lease's token.
#[utoipa::path(post, path = "/v1/tasks/{address}/{action}", tag = "tasks",
    params(("address" = String, Path), ("action" = String, Path, description = "heartbeat, checkpoint, complete, fail, release or spend")),
    request_body = LeaseRequest,
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn act(
    State(app): State<AppState>,
    caller: Caller,
    Segment((address, action)): Segment<(TaskAddress, String)>,
    Body(request): Body<LeaseRequest>,
) -> Result<Json<TaskView>, ApiError> {
    if action == "heartbeat" {
        if let Some(answer) = soft_heartbeat(&app, &caller, &address, request.lease_token).await {
            return answer;
        }
    }
    let update = match action.as_str() {
        "heartbeat" => TaskUpdate::Heartbeat,
        "checkpoint" => TaskUpdate::Checkpoint(
            request.checkpoint.as_ref().map(Value::to_string).ok_or_else(|| ApiError::bad_request("invalid_body", "a checkpoint needs `checkpoint`"))?,
        ),
        "complete" => TaskUpdate::Complete(request.result.as_ref().map_or_else(|| "null".to_string(), Value::to_string)),
        "fail" => TaskUpdate::Fail(request.reason.clone().filter(|r| !r.trim().is_empty()).ok_or_else(|| {
            ApiError::bad_request("invalid_body", "a failure needs its `reason`")
        })?),
        "release" => TaskUpdate::Release,
        "spend" => TaskUpdate::Spend(
            usd("amount_usd", &request.amount_usd)?.ok_or_else(|| ApiError::bad_request("invalid_body", "spending needs `amount_usd`"))?,
        ),
        other => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no task action `{other}`; use heartbeat, checkpoint, complete, fail, release, spend, decompose or requeue")))
        }
    };
    let justification = request
        .justification
        .filter(|j| !j.trim().is_empty())
        .unwrap_or_else(|| format!("{action} {address}"));
    let command = CommandBody::UpdateTask {
        address: address.clone(),
        token: request.lease_token,
        update,
    };
    let outcome = app.decide(caller.id, justification, command).await?;
    let mut body = view_now(&app, &address, false).await?;
    body.effect = Some(outcome.primary.effect.clone());
    Ok(Json(body))
}

/// A heartbeat on a task in progress, answered from memory (soft liveness,
/// `colony_bus::liveness`): renewed later in a batch with others, without a command
/// and a record of its own. It spends the io_op the command would have, through the
/// edge meter. `None`: the heartbeat goes through the kernel.
async fn soft_heartbeat(
    app: &AppState,
    caller: &Caller,
    address: &TaskAddress,
    token: u64,
) -> Option<Result<Json<TaskView>, ApiError>> {
    let liveness = app.shared.bus.liveness.as_ref()?;
    let expires_at_ms = liveness.lease_heard(caller.id, address, token)?;
    let meters = &app.shared.bus.meters;
    let meter = meters.meter(caller.id);
    if meters.take(&meter, &caller.address, 0).is_err() {
        // Out of io_ops: the kernel refuses the heartbeat and says why.
        liveness.forget_lease(address, token);
        return None;
    }
    let mut body = match view_now(app, address, false).await {
        Ok(body) => body,
        Err(error) => return Some(Err(error)),
    };
    if let Some(lease) = body.lease.as_mut() {
        lease.expires_at = colony_api::format_time(expires_at_ms);
    }
    body.effect = Some(Effect::TaskClaimed {
        address: address.clone(),
        token,
        expires_at_ms,
    });
    Some(Ok(Json(body)))
}

/// Splits a held task into subtasks, admitted whole or not at all.
#[utoipa::path(post, path = "/v1/tasks/{address}/decompose", tag = "tasks", params(("address" = String, Path)), request_body = DecomposeRequest,
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn decompose(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<TaskAddress>,
    Body(request): Body<DecomposeRequest>,
) -> Result<Json<TaskView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let subtasks = request
        .subtasks
        .into_iter()
        .map(|subtask| into_new_task(subtask).map(|(task, _)| task))
        .collect::<Result<Vec<_>, _>>()?;
    let update = TaskUpdate::Decompose {
        subtasks,
        on_child_death: request.on_child_death,
    };
    let command = CommandBody::UpdateTask {
        address: address.clone(),
        token: request.lease_token,
        update,
    };
    app.decide(caller.id, justification, command).await?;
    Ok(Json(view_now(&app, &address, true).await?))
}

/// Cancels a task and its open subtasks (its poster, the poster of a task above it,
/// an ancestor of one of them, or an admin): leases end (their holders' next calls
/// answer `409 cancelled`), what is left of the budgets goes back.
#[utoipa::path(post, path = "/v1/tasks/{address}/cancel", tag = "tasks", params(("address" = String, Path)), request_body = Justified,
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<TaskAddress>,
    Body(request): Body<Justified>,
) -> Result<Json<TaskView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let command = CommandBody::CancelTask {
        address: address.clone(),
    };
    let outcome = app.decide(caller.id, justification, command).await?;
    let mut body = view_now(&app, &address, true).await?;
    body.effect = Some(outcome.primary.effect.clone());
    Ok(Json(body))
}

/// Changes an open task's base priority (who may cancel it may).
#[utoipa::path(post, path = "/v1/tasks/{address}/priority", tag = "tasks", params(("address" = String, Path)), request_body = PriorityRequest,
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn priority(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<TaskAddress>,
    Body(request): Body<PriorityRequest>,
) -> Result<Json<TaskView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let command = CommandBody::SetTaskPriority {
        address: address.clone(),
        priority: request.priority,
    };
    let outcome = app.decide(caller.id, justification, command).await?;
    let mut body = view_now(&app, &address, false).await?;
    body.effect = Some(outcome.primary.effect.clone());
    Ok(Json(body))
}

/// Puts a dead task back on the board (a human member's or an admin's act).
#[utoipa::path(post, path = "/v1/tasks/{address}/requeue", tag = "tasks", params(("address" = String, Path)), request_body = Justified,
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn requeue(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<TaskAddress>,
    Body(request): Body<Justified>,
) -> Result<Json<TaskView>, ApiError> {
    let justification = require_justification(request.justification)?;
    app.decide(
        caller.id,
        justification,
        CommandBody::RequeueTask {
            address: address.clone(),
        },
    )
    .await?;
    Ok(Json(view_now(&app, &address, false).await?))
}

/// Most tasks one list returns.
pub const TASK_PAGE_MAX: usize = 1_000;

/// Tasks, in address order, filtered.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    params(("status" = Option<String>, Query), ("capability" = Option<String>, Query), ("limit" = Option<usize>, Query, description = "1 to 1000"), ("after" = Option<String>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = TaskList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    app.check_read(&caller, "tasks", app.shared.read.tasks)?;
    let status = match &query.status {
        None => None,
        Some(name) => Some(TaskStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("status `{name}` is not pending, blocked, claimed, in_progress, completed, failed, dead or cancelled"))
        })?),
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > TASK_PAGE_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {TASK_PAGE_MAX}"),
        ));
    }
    Ok(Json(list_tasks(
        &app,
        status,
        query.capability.as_deref(),
        query.after.as_deref(),
        limit,
    )))
}

fn list_tasks(
    app: &AppState,
    status: Option<TaskStatus>,
    capability: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> TaskList {
    let state = app.shared.state.read().expect("state lock");
    // A status walks only the tasks that have it.
    let tasks: Box<dyn Iterator<Item = &Task>> = match status {
        Some(status) => Box::new(state.tasks_with_status_after(status, after)),
        None => Box::new(state.tasks_after(after)),
    };
    let tasks = tasks
        .filter(|task| capability.is_none_or(|c| task.capabilities.iter().any(|own| own == c)))
        .take(limit)
        .map(|task| task_view(&state, task, false))
        .collect();
    TaskList { tasks }
}

/// The dead-letter queue.
#[utoipa::path(get, path = "/v1/tasks/dead", tag = "tasks", responses((status = 403, body = ErrorBody), (status = 200, body = TaskList)))]
pub async fn dead(State(app): State<AppState>, caller: Caller) -> Result<Json<TaskList>, ApiError> {
    app.check_read(&caller, "tasks", app.shared.read.tasks)?;
    Ok(Json(list_tasks(
        &app,
        Some(TaskStatus::Dead),
        None,
        None,
        TASK_PAGE_MAX,
    )))
}

/// One task, with its children, attempts and history.
#[utoipa::path(get, path = "/v1/tasks/{address}", tag = "tasks", params(("address" = String, Path)),
    responses((status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<TaskAddress>,
) -> Result<Json<TaskView>, ApiError> {
    app.check_read(&caller, "tasks", app.shared.read.tasks)?;
    Ok(Json(view_now(&app, &address, true).await?))
}
