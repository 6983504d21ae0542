//! How a task is shown (`TaskView`), live or archived: finished trees leave the
//! kernel's live state by the retention rule and are read back from the task archive.

use axum::http::StatusCode;
use colony_api::tasks::{AttemptView, BudgetView, ChildView, LeaseView, TaskView, TransitionView};
use colony_kernel::tasks::{Task, TaskStatus};
use serde_json::Value;

use super::AppState;
use crate::ApiError;

fn no_task(address: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no task {address}"),
    )
    .with("task", address.to_string())
}

/// The task at `address` as it stands now, live or archived; `404` when there is
/// none. What a handler answers after its command: the command may have sent the
/// task's tree to the archive (or another command may have, meanwhile).
pub(crate) async fn view_now(
    app: &AppState,
    address: &str,
    full: bool,
) -> Result<TaskView, ApiError> {
    let seq = match archived_since(app, address, |state, task| task_view(state, task, full))? {
        Lookup::Live(view) => return Ok(view),
        Lookup::Archived(seq) => seq,
    };
    let (task, children) = read_archive(app, address, seq, |archive, address| {
        archive.get_with_children(address)
    })
    .await?
    .ok_or_else(|| no_task(address))?;
    let state = app.shared.state.read().expect("state lock");
    let mut view = view_with(&state, &task, full, |child| {
        children.iter().find(|task| task.address == child)
    });
    view.archived = true;
    Ok(view)
}

/// The task at `address`, owned, live or archived (`true`); `404` when there is none.
pub(crate) async fn task_now(app: &AppState, address: &str) -> Result<(Task, bool), ApiError> {
    let seq = match archived_since(app, address, |_, task| task.clone())? {
        Lookup::Live(task) => return Ok((task, false)),
        Lookup::Archived(seq) => seq,
    };
    read_archive(app, address, seq, |archive, address| archive.get(address))
        .await?
        .map(|task| (task, true))
        .ok_or_else(|| no_task(address))
}

/// A lookup in the state: what `live` made of the task, or the last command decided
/// when the task may be in the archive.
enum Lookup<T> {
    Live(T),
    Archived(u64),
}

fn archived_since<T>(
    app: &AppState,
    address: &str,
    live: impl FnOnce(&colony_kernel::State, &Task) -> T,
) -> Result<Lookup<T>, ApiError> {
    let state = app.shared.state.read().expect("state lock");
    if let Some(task) = state.task(address) {
        return Ok(Lookup::Live(live(&state, task)));
    }
    if !state.may_be_archived(address) {
        return Err(no_task(address));
    }
    Ok(Lookup::Archived(state.last_seq))
}

/// Reads the archive off the runtime's threads. A tree leaves the state when its
/// retirement is decided and reaches the archive before that command is durable:
/// the read waits for the commands decided before it looked.
async fn read_archive<T: Send + 'static>(
    app: &AppState,
    address: &str,
    seq: u64,
    read: impl FnOnce(&colony_log::TaskArchive, &str) -> Result<T, colony_log::Error> + Send + 'static,
) -> Result<T, ApiError> {
    app.shared.submitter.synced_through(seq).await;
    let archive = app.shared.archive.clone();
    let address = address.to_string();
    tokio::task::spawn_blocking(move || read(&archive, &address))
        .await
        .map_err(|_| ApiError::internal("the task archive's reader stopped"))?
        .map_err(|error| {
            tracing::error!("cannot read the task archive: {error}");
            ApiError::internal("the task archive cannot be read; the node's log says why")
        })
}

/// JSON text stored by the kernel, back to JSON.
fn stored(text: &Option<String>) -> Value {
    text.as_deref().map_or(Value::Null, |t| {
        serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string()))
    })
}

/// A live task as clients see it; `full` adds its children, attempts and history.
pub(crate) fn task_view(state: &colony_kernel::State, task: &Task, full: bool) -> TaskView {
    view_with(state, task, full, |child| state.task(child))
}

/// A task as clients see it, its children found by `child`.
fn view_with<'a>(
    state: &colony_kernel::State,
    task: &Task,
    full: bool,
    child: impl Fn(&str) -> Option<&'a Task>,
) -> TaskView {
    let time = colony_api::format_time;
    TaskView {
        address: task.address.clone(),
        parent: task.parent.clone(),
        title: task.title.clone(),
        description: task.description.clone(),
        priority: task.priority,
        effective_priority: state.effective_priority(task),
        capabilities: task.capabilities.clone(),
        depends_on: task.depends_on.clone(),
        status: task.status.as_str().to_string(),
        budget: task.budget.as_ref().map(|b| BudgetView {
            total_micro_usd: b.total_micro_usd,
            spent_micro_usd: b.spent_micro_usd,
            remaining_micro_usd: b.remaining_micro_usd,
        }),
        max_attempts: task.max_attempts,
        attempt_timeout_ms: task.attempt_timeout_ms,
        failures: task.failures,
        attempt_count: task.attempts.len(),
        lease: task.lease.as_ref().map(|l| LeaseView {
            holder: l.holder_address.clone(),
            token: l.token,
            expires_at: time(l.expires_at_ms),
            attempt_deadline: time(l.attempt_deadline_ms),
        }),
        not_before: (task.status == TaskStatus::Failed).then(|| time(task.not_before_ms)),
        checkpoint: stored(&task.checkpoint),
        result: stored(&task.result),
        created_at: time(task.created_at_ms),
        created_by: task.created_by.clone(),
        dead_reasons: task.dead_reasons.clone(),
        children: full.then(|| {
            task.children
                .iter()
                .filter_map(|c| child(c))
                .map(|c| ChildView {
                    address: c.address.clone(),
                    title: c.title.clone(),
                    status: c.status.as_str().to_string(),
                })
                .collect()
        }),
        attempts: full.then(|| {
            task.attempts
                .iter()
                .map(|a| AttemptView {
                    number: a.number,
                    worker: a.worker.clone(),
                    token: a.token,
                    started_at: time(a.started_at_ms),
                    ended_at: a.ended_at_ms.map(time),
                    outcome: a.outcome.clone(),
                    reason: a.reason.clone(),
                })
                .collect()
        }),
        history: full.then(|| {
            task.history
                .iter()
                .map(|t| TransitionView {
                    at: time(t.at_ms),
                    from: t.from.map(|s| s.as_str().to_string()),
                    to: t.to.as_str().to_string(),
                    by: t.by.clone(),
                    justification: t.justification.clone(),
                })
                .collect()
        }),
        archived: false,
        warnings: None,
        effect: None,
    }
}
