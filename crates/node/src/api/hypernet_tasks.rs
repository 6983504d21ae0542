//! The Hypernet swarm's task routes (HYPERNET.md), in their old shapes, over the
//! Colony board: `POST /tasks`, `GET /tasks`, `POST /tasks/{address}/claim|start|
//! progress|complete|fail`, `GET /tasks/mine/{assignee}`. A lost claim answers 409.
//! The old API had no lease tokens: the node uses the caller's current lease, so the
//! caller's identity is the fence.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::hypernet::{OldActionRequest, OldListQuery, OldTask, OldTaskList, OldTaskRequest};
use colony_api::ErrorBody;
use colony_kernel::tasks::{NewTask, Task, TaskStatus};
use colony_kernel::{CommandBody, TaskAddress, TaskUpdate};
use serde_json::{json, Value};

use super::{AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

fn time_of(task: &Task, status: TaskStatus) -> Option<String> {
    task.history
        .iter()
        .rev()
        .find(|t| t.to == status)
        .map(|t| colony_api::format_time(t.at_ms))
}

/// A task in the old swarm's shape.
pub(crate) fn old_shape(task: &Task) -> OldTask {
    let checkpoint: Value = task
        .checkpoint
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null);
    let ended = |outcome: &str| {
        task.attempts
            .iter()
            .rev()
            .find(|a| a.outcome.as_deref() == Some(outcome))
    };
    let failed = ended("failed");
    OldTask {
        address: task.address.to_string(),
        title: task.title.clone(),
        description: task.description.clone(),
        status: match task.status {
            TaskStatus::Dead => "failed",
            other => other.as_str(),
        }
        .to_string(),
        priority: task.priority,
        created_by: task.created_by.clone(),
        assigned_to: task.lease.as_ref().map(|l| l.holder_address.clone()),
        tags: task.capabilities.clone(),
        progress: checkpoint.get("progress").cloned().unwrap_or(Value::Null),
        result: task.result.as_deref().map_or(Value::Null, |r| {
            serde_json::from_str::<Value>(r).unwrap_or_else(|_| Value::String(r.to_string()))
        }),
        started_at: time_of(task, TaskStatus::InProgress),
        completed_at: time_of(task, TaskStatus::Completed),
        failed_at: failed
            .and_then(|a| a.ended_at_ms)
            .map(colony_api::format_time),
        failure_reason: failed.and_then(|a| a.reason.clone()),
        released_at: ended("released")
            .and_then(|a| a.ended_at_ms)
            .map(colony_api::format_time),
        depends_on: task.depends_on.iter().map(ToString::to_string).collect(),
        colony_status: task.status.as_str().to_string(),
    }
}

/// FastAPI clients read `detail`; Colony clients read `error`.
fn with_detail(error: ApiError) -> ApiError {
    let message = error.message.clone();
    error.with("detail", message)
}

/// Posts a task in the old shape.
#[utoipa::path(post, path = "/tasks", tag = "hypernet", request_body = OldTaskRequest,
    responses((status = 200, body = OldTask), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn post(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<OldTaskRequest>,
) -> Result<Json<OldTask>, ApiError> {
    let justification = format!(
        "posted through the Hypernet route by {}{}",
        caller.address,
        request
            .created_by
            .as_ref()
            .map(|c| format!(" for {c}"))
            .unwrap_or_default()
    );
    let task = NewTask {
        title: request.title,
        description: request.description,
        priority: request.priority,
        capabilities: request.tags,
        depends_on: request.depends_on,
        budget_micro_usd: None,
        max_attempts: None,
        attempt_timeout_ms: None,
    };
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::PostTask(Box::new(task)),
        )
        .await
        .map_err(with_detail)?;
    let colony_kernel::Effect::TaskChanged { address, .. } = &outcome.primary.effect else {
        return Err(ApiError::internal("a posted task without its address"));
    };
    let (task, _) = super::task_view::task_now(&app, address)
        .await
        .map_err(with_detail)?;
    Ok(Json(old_shape(&task)))
}

/// Tasks in the old shape.
#[utoipa::path(get, path = "/tasks", tag = "hypernet",
    params(("tag" = Option<String>, Query), ("priority" = Option<String>, Query), ("status" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = OldTaskList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<OldListQuery>,
) -> Result<Json<OldTaskList>, ApiError> {
    app.check_read(&caller, "tasks", app.shared.read.tasks)?;
    let limit = query.limit.unwrap_or(100).min(super::tasks::TASK_PAGE_MAX);
    let state = app.shared.state.read().expect("state lock");
    let wanted = |t: &&colony_kernel::tasks::Task| {
        query
            .tag
            .as_ref()
            .is_none_or(|tag| t.capabilities.contains(tag))
            && query.priority.is_none_or(|p| t.priority == p)
    };
    let tasks: Vec<OldTask> = match &query.status {
        None => state
            .tasks()
            .filter(wanted)
            .take(limit)
            .map(old_shape)
            .collect(),
        // A status is read from the board's index, not by walking every live task:
        // the old `failed` is Colony's failed and dead; any other name is Colony's.
        Some(status) => {
            let mut found: Vec<&colony_kernel::tasks::Task> = TaskStatus::ALL
                .into_iter()
                .filter(|s| s.as_str() == status || (status == "failed" && *s == TaskStatus::Dead))
                .flat_map(|s| {
                    state
                        .tasks_with_status_after(s, None)
                        .filter(wanted)
                        .take(limit)
                })
                .collect();
            // Each status's list is in address order: their first `limit` merged.
            found.sort_by(|a, b| a.address.cmp(&b.address));
            found.into_iter().take(limit).map(old_shape).collect()
        }
    };
    let count = tasks.len();
    Ok(Json(OldTaskList { tasks, count }))
}

/// The tasks an assignee holds, in the old shape.
#[utoipa::path(get, path = "/tasks/mine/{assignee}", tag = "hypernet", params(("assignee" = String, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = OldTaskList)))]
pub async fn mine(
    State(app): State<AppState>,
    caller: Caller,
    Segment(assignee): Segment<String>,
) -> Result<Json<OldTaskList>, ApiError> {
    app.check_read(&caller, "tasks", app.shared.read.tasks)?;
    let state = app.shared.state.read().expect("state lock");
    // Only claimed and in-progress tasks hold leases.
    let tasks: Vec<OldTask> = state
        .tasks_with_status_after(TaskStatus::Claimed, None)
        .chain(state.tasks_with_status_after(TaskStatus::InProgress, None))
        .filter(|t| {
            t.lease
                .as_ref()
                .is_some_and(|l| l.holder_address == assignee)
        })
        .map(old_shape)
        .collect();
    let count = tasks.len();
    Ok(Json(OldTaskList { tasks, count }))
}

/// `claim`, `start`, `progress`, `complete`, `fail`, in the old shape; a lost claim
/// is 409.
#[utoipa::path(post, path = "/tasks/{address}/{action}", tag = "hypernet",
    params(("address" = String, Path), ("action" = String, Path, description = "claim, start, progress, complete or fail")),
    request_body(content = OldActionRequest, description = "may be empty"),
    responses((status = 200, body = OldTask), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn act(
    State(app): State<AppState>,
    caller: Caller,
    Segment((address, action)): Segment<(TaskAddress, String)>,
    body: axum::body::Bytes,
) -> Result<Json<OldTask>, ApiError> {
    // The old clients sometimes send no body at all.
    let request: OldActionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        OldActionRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            with_detail(ApiError::bad_request("invalid_body", error.to_string()))
        })?
    };
    let justification = format!("{action} through the Hypernet route by {}", caller.address);
    if action == "claim" {
        let command = CommandBody::ClaimSpecificTask {
            address: address.clone(),
            lease_ms: None,
        };
        app.decide(caller.id, justification, command)
            .await
            .map_err(with_detail)?;
    } else {
        let update = match action.as_str() {
            "start" => TaskUpdate::Heartbeat,
            "progress" => {
                TaskUpdate::Checkpoint(json!({ "progress": request.progress }).to_string())
            }
            "complete" => TaskUpdate::Complete(
                request
                    .result
                    .map_or_else(|| "null".into(), |r| r.to_string()),
            ),
            "fail" => TaskUpdate::Fail(
                request
                    .reason
                    .unwrap_or_else(|| "failed (no reason given)".into()),
            ),
            other => {
                return Err(with_detail(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no task action `{other}`"),
                )))
            }
        };
        // The caller's own lease, if it holds one; otherwise the claim was lost.
        let token = {
            let state = app.shared.state.read().expect("state lock");
            let task = state.task(&address).ok_or_else(|| {
                with_detail(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no task {address}"),
                ))
            })?;
            match &task.lease {
                Some(lease) if lease.holder == caller.id => lease.token,
                _ => {
                    return Err(with_detail(
                        ApiError::new(
                            StatusCode::CONFLICT,
                            "claim_lost",
                            format!(
                                "{} does not hold {address}: the claim was lost",
                                caller.address
                            ),
                        )
                        .with("status", task.status.as_str()),
                    ))
                }
            }
        };
        let command = CommandBody::UpdateTask {
            address: address.clone(),
            token,
            update,
        };
        app.decide(caller.id, justification, command)
            .await
            .map_err(with_detail)?;
    }
    let (task, _) = super::task_view::task_now(&app, &address)
        .await
        .map_err(with_detail)?;
    Ok(Json(old_shape(&task)))
}
