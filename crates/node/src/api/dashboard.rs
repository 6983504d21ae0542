//! The dashboard: its page at `/` (files from `colony-dashboard`), its overview at
//! `GET /v1/dashboard`, and the sampler that keeps each limit's recent usage.
//!
//! The page's files hold no data and need no token; everything it shows comes from
//! the API with the token the operator gave it (kept in the browser's session
//! storage, sent in the `Authorization` header, never in a URL).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::dashboard::{
    ClusterHealth, LimitHistory, Overview, OverviewQuery, PrincipalCounts, TaskCounts, WorkerCounts,
};
use colony_api::ErrorBody;
use colony_dashboard::SAMPLE_INTERVAL_MS;
use colony_kernel::governance::ProposalState;
use colony_kernel::tasks::TaskStatus;
use colony_kernel::workers::WorkerState;
use colony_kernel::PrincipalKind;

use super::{AppState, Params};
use crate::app::Shared;
use crate::auth::Caller;
use crate::sequencer::now_ms;

/// What the page may do in a browser: its own files and the node's API and bus,
/// nothing inline, no framing (a vote is a click: no other site may overlay it).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /` and `GET /dashboard/{file}`: the page's files.
pub(crate) async fn page(uri: Uri) -> Response {
    let Some(asset) = colony_dashboard::asset(uri.path()) else {
        return crate::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file of the dashboard",
        )
        .into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The colony at a glance: every limit with its recent usage, tasks by status,
/// workers, principals and proposals, in one answer (the dashboard's overview).
#[utoipa::path(get, path = "/v1/dashboard", tag = "dashboard", params(("since_ms" = Option<u64>, Query, description = "only history points taken after this time (Unix milliseconds)")),
    responses((status = 200, body = Overview), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn overview(
    State(app): State<AppState>,
    _caller: Caller,
    Params(query): Params<OverviewQuery>,
) -> Json<Overview> {
    let at_ms = now_ms();
    let limits = super::limits::current(&app);
    let history = {
        let history = app.shared.history.lock().expect("history lock");
        history
            .series()
            .map(|(name, points)| LimitHistory {
                name: name.to_string(),
                points: points
                    .iter()
                    .filter(|p| query.since_ms.is_none_or(|since| p.at_ms > since))
                    .map(|p| [p.at_ms, p.usage])
                    .collect(),
            })
            .collect()
    };
    let state = app.shared.state.read().expect("state lock");
    // Counted from the board's status index, without walking the tasks.
    let count = |status| state.task_count(status) as u64;
    let tasks = TaskCounts {
        pending: count(TaskStatus::Pending),
        blocked: count(TaskStatus::Blocked),
        claimed: count(TaskStatus::Claimed),
        in_progress: count(TaskStatus::InProgress),
        completed: count(TaskStatus::Completed),
        failed: count(TaskStatus::Failed),
        dead: count(TaskStatus::Dead),
        cancelled: count(TaskStatus::Cancelled),
        archived: state.retired_tasks(),
    };
    let mut workers = WorkerCounts::default();
    for worker in state.workers() {
        *match worker.state {
            WorkerState::Active => &mut workers.active,
            WorkerState::Lost => &mut workers.lost,
            WorkerState::Left => &mut workers.left,
        } += 1;
    }
    let mut principals = PrincipalCounts::default();
    for principal in state.principals().filter(|p| p.standing) {
        *match principal.kind {
            PrincipalKind::Human => &mut principals.human,
            PrincipalKind::Ai => &mut principals.ai,
            PrincipalKind::Artifact => &mut principals.artifact,
            PrincipalKind::Node | PrincipalKind::System => &mut principals.system,
        } += 1;
        if state.quarantine_of(principal.id).is_some() {
            principals.quarantined += 1;
        }
    }
    let overview = Overview {
        at: colony_api::format_time(at_ms),
        at_ms,
        seq: state.last_seq,
        limits: limits.iter().map(super::limits::view).collect(),
        sample_interval_ms: SAMPLE_INTERVAL_MS,
        history,
        queue_depth: tasks.pending,
        tasks,
        workers,
        principals,
        proposals_in_review: state
            .proposals()
            .filter(|p| p.state == ProposalState::Review)
            .count() as u64,
        artifacts: state.artifacts().count() as u64,
        mcp: app.shared.mcp.activity(&state),
        cluster: app.shared.cluster.as_ref().map(|cluster| {
            let (divergences, divergence) = cluster.divergence();
            let applied = cluster.applied_seq();
            ClusterHealth {
                node: cluster.node_name().to_string(),
                connected: cluster.connected(),
                lag: cluster.stream_last_seq().saturating_sub(applied),
                live_nodes: cluster.live_nodes(),
                divergences,
                divergence,
            }
        }),
    };
    Json(overview)
}

/// Samples every limit's usage into the history, every [`SAMPLE_INTERVAL_MS`],
/// until the node stops (the task is aborted).
pub(crate) async fn sample(shared: Arc<Shared>) {
    let app = AppState { shared };
    let mut every = tokio::time::interval(Duration::from_millis(SAMPLE_INTERVAL_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let limits = super::limits::current(&app);
        let at_ms = now_ms();
        app.shared.history.lock().expect("history lock").record(
            at_ms,
            limits.iter().map(|l| (l.spec.name.as_str(), l.usage)),
        );
    }
}
