//! The task board over HTTP: `/v1/tasks...`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_kernel::tasks::{ChildDeathPolicy, NewTask, Task, TaskStatus};
use colony_kernel::{CommandBody, Effect, Priority, TaskUpdate};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{require_justification, AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

/// Dollars as a JSON number or a decimal string, to micro-dollars.
fn usd(field: &str, value: &Option<Value>) -> Result<Option<u64>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_body",
            format!("{field} is an amount of dollars like 1.50 or \"1.50\""),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => crate::genesis::parse_usd(text).map(Some).map_err(|_| bad()),
        Some(Value::Number(number)) => {
            let dollars = number
                .as_f64()
                .filter(|d| *d >= 0.0 && d.is_finite())
                .ok_or_else(bad)?;
            let micro = (dollars * 1_000_000.0).round();
            if micro > super::AMOUNT_MAX as f64 {
                return Err(bad());
            }
            Ok(Some(micro as u64))
        }
        Some(_) => Err(bad()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    budget_usd: Option<Value>,
    max_attempts: Option<u32>,
    justification: Option<String>,
}

impl TaskRequest {
    fn into_new_task(self) -> Result<(NewTask, Option<String>), ApiError> {
        let budget = usd("budget_usd", &self.budget_usd)?;
        let task = NewTask {
            title: self.title,
            description: self.description,
            priority: self.priority,
            capabilities: self.capabilities,
            depends_on: self.depends_on,
            budget_micro_usd: budget,
            max_attempts: self.max_attempts,
        };
        Ok((task, self.justification))
    }
}

pub async fn post(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<TaskRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (task, justification) = request.into_new_task()?;
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
    let state = app.shared.state.read().expect("state lock");
    let mut body = task_json(&state, state.task(address).expect("just posted"), true);
    body["warnings"] = json!(super::warnings_json(&outcome.primary.warnings));
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    #[serde(default)]
    capabilities: Vec<String>,
    lease_ms: Option<u64>,
    /// The worker session the claim is for (`POST /v1/workers`).
    worker: Option<u64>,
    justification: Option<String>,
}

pub async fn claim(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ClaimRequest>,
) -> Result<Response, ApiError> {
    let justification = request
        .justification
        .unwrap_or_else(|| format!("{} asks for work", caller.address));
    let body = CommandBody::ClaimTask {
        capabilities: request.capabilities,
        lease_ms: request.lease_ms,
        worker: request.worker,
    };
    let outcome = app.decide(caller.id, justification, body).await?;
    match &outcome.primary.effect {
        Effect::NothingToClaim => Ok(StatusCode::NO_CONTENT.into_response()),
        Effect::TaskClaimed {
            address,
            token,
            expires_at_ms,
        } => {
            let state = app.shared.state.read().expect("state lock");
            let task = task_json(&state, state.task(address).expect("claimed"), false);
            Ok(Json(json!({
                "task": task,
                "lease": {"token": token, "expires_at": colony_log::audit::format_time(*expires_at_ms), "expires_at_ms": expires_at_ms},
                "warnings": super::warnings_json(&outcome.primary.warnings),
            }))
            .into_response())
        }
        other => Err(ApiError::internal(format!("unexpected effect {other:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    lease_token: u64,
    /// Opaque JSON to resume from (`checkpoint`).
    checkpoint: Option<Value>,
    /// Any JSON (`complete`).
    result: Option<Value>,
    /// Why the attempt failed (`fail`).
    reason: Option<String>,
    /// Dollars to charge to the task's budget (`spend`).
    amount_usd: Option<Value>,
    justification: Option<String>,
}

/// `heartbeat`, `checkpoint`, `complete`, `fail`, `release`, `spend`.
pub async fn act(
    State(app): State<AppState>,
    caller: Caller,
    Segment((address, action)): Segment<(String, String)>,
    Body(request): Body<LeaseRequest>,
) -> Result<Json<Value>, ApiError> {
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
    let state = app.shared.state.read().expect("state lock");
    let mut body = task_json(&state, state.task(&address).expect("exists"), false);
    body["effect"] = serde_json::to_value(&outcome.primary.effect).unwrap_or(Value::Null);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecomposeRequest {
    lease_token: u64,
    subtasks: Vec<TaskRequest>,
    #[serde(default)]
    on_child_death: ChildDeathPolicy,
    justification: Option<String>,
}

pub async fn decompose(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<DecomposeRequest>,
) -> Result<Json<Value>, ApiError> {
    let justification = require_justification(request.justification)?;
    let subtasks = request
        .subtasks
        .into_iter()
        .map(|subtask| subtask.into_new_task().map(|(task, _)| task))
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
    let state = app.shared.state.read().expect("state lock");
    Ok(Json(task_json(
        &state,
        state.task(&address).expect("exists"),
        true,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueRequest {
    justification: Option<String>,
}

pub async fn requeue(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<RequeueRequest>,
) -> Result<Json<Value>, ApiError> {
    let justification = require_justification(request.justification)?;
    app.decide(
        caller.id,
        justification,
        CommandBody::RequeueTask {
            address: address.clone(),
        },
    )
    .await?;
    let state = app.shared.state.read().expect("state lock");
    Ok(Json(task_json(
        &state,
        state.task(&address).expect("exists"),
        false,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    capability: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// Most tasks one list returns.
pub const TASK_PAGE_MAX: usize = 1_000;

pub async fn list(
    State(app): State<AppState>,
    _caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match &query.status {
        None => None,
        Some(name) => Some(TaskStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("status `{name}` is not pending, blocked, claimed, in_progress, completed, failed or dead"))
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
) -> Value {
    let state = app.shared.state.read().expect("state lock");
    let tasks: Vec<Value> = state
        .tasks()
        .filter(|task| after.is_none_or(|after| task.address.as_str() > after))
        .filter(|task| status.is_none_or(|s| task.status == s))
        .filter(|task| capability.is_none_or(|c| task.capabilities.iter().any(|own| own == c)))
        .take(limit)
        .map(|task| task_json(&state, task, false))
        .collect();
    json!({ "tasks": tasks })
}

/// The dead-letter queue.
pub async fn dead(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(list_tasks(
        &app,
        Some(TaskStatus::Dead),
        None,
        None,
        TASK_PAGE_MAX,
    ))
}

pub async fn one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(address): Segment<String>,
) -> Result<Json<Value>, ApiError> {
    let state = app.shared.state.read().expect("state lock");
    let task = state.task(&address).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {address}"),
        )
        .with("task", address.clone())
    })?;
    Ok(Json(task_json(&state, task, true)))
}

/// JSON text stored by the kernel, back to JSON.
fn stored(text: &Option<String>) -> Value {
    text.as_deref().map_or(Value::Null, |t| {
        serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string()))
    })
}

/// A task as clients see it; `full` adds its history, attempts and children.
pub(crate) fn task_json(state: &colony_kernel::State, task: &Task, full: bool) -> Value {
    let time = colony_log::audit::format_time;
    let mut body = json!({
        "address": task.address,
        "parent": task.parent,
        "title": task.title,
        "description": task.description,
        "priority": task.priority,
        "effective_priority": state.effective_priority(task),
        "capabilities": task.capabilities,
        "depends_on": task.depends_on,
        "status": task.status.as_str(),
        "budget": task.budget.as_ref().map(|b| json!({
            "total_micro_usd": b.total_micro_usd,
            "spent_micro_usd": b.spent_micro_usd,
            "remaining_micro_usd": b.remaining_micro_usd,
        })),
        "max_attempts": task.max_attempts,
        "failures": task.failures,
        "attempts": task.attempts.len(),
        "lease": task.lease.as_ref().map(|l| json!({"holder": l.holder_address, "token": l.token, "expires_at": time(l.expires_at_ms)})),
        "not_before": (task.status == TaskStatus::Failed).then(|| time(task.not_before_ms)),
        "checkpoint": stored(&task.checkpoint),
        "result": stored(&task.result),
        "created_at": time(task.created_at_ms),
        "created_by": task.created_by,
        "dead_reasons": task.dead_reasons,
    });
    if full {
        body["children"] = json!(task
            .children
            .iter()
            .filter_map(|c| state.task(c))
            .map(|c| json!({"address": c.address, "title": c.title, "status": c.status.as_str()}))
            .collect::<Vec<_>>());
        body["attempts"] = json!(task
            .attempts
            .iter()
            .map(|a| json!({"number": a.number, "worker": a.worker, "token": a.token, "started_at": time(a.started_at_ms),
                "ended_at": a.ended_at_ms.map(time), "outcome": a.outcome, "reason": a.reason}))
            .collect::<Vec<_>>());
        body["history"] = json!(task
            .history
            .iter()
            .map(|t| json!({"at": time(t.at_ms), "from": t.from.map(|s| s.as_str()), "to": t.to.as_str(), "by": t.by, "justification": t.justification}))
            .collect::<Vec<_>>());
    }
    body
}
