//! Errors: structured API errors, and what can stop a node from starting.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use colony_kernel::Reason;
use serde_json::{json, Map, Value};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::genesis::ConfigError),
    #[error(transparent)]
    Store(#[from] colony_log::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// An error answered to an HTTP client as `{"error":{"code","message",...}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.details.insert(key.to_string(), value.into());
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn overloaded() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the node's command queue is full; retry shortly",
        );
        error.retry_after_secs = Some(1);
        error
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        )
    }

    /// The node cannot go on (see [`crate::fatal`]); its process is exiting.
    pub fn node_failed(reason: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_failed",
            format!("the node cannot go on and is stopping: {reason}"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The error for a kernel denial: the reason's fields, a status, and a message
    /// that explains the decision to a person.
    pub fn from_denial(reason: &Reason, now_ms: u64) -> ApiError {
        let (status, retry_at_ms) = match reason {
            Reason::HardLimit { .. }
            | Reason::QueueFull { .. }
            | Reason::TooManyProposals { .. }
            | Reason::QueueShare { .. }
            | Reason::TooManyReservations { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
            Reason::BrakeRate { retry_at_ms, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, Some(*retry_at_ms))
            }
            Reason::InsufficientResource { refill_at_ms, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, *refill_at_ms)
            }
            Reason::Forbidden { .. } | Reason::NoStanding { .. } | Reason::Quarantined { .. } => {
                (StatusCode::FORBIDDEN, None)
            }
            Reason::NotFound { .. } => (StatusCode::NOT_FOUND, None),
            Reason::StaleLease { .. } | Reason::NotClaimable { .. } => (StatusCode::CONFLICT, None),
            Reason::WorkerGone { .. } => (StatusCode::GONE, None),
            _ => (StatusCode::BAD_REQUEST, None),
        };
        let mut details = match serde_json::to_value(reason) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let code = details
            .remove("code")
            .and_then(|c| c.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut error = ApiError {
            status,
            code,
            message: explain(reason),
            details,
            retry_after_secs: None,
        };
        if let Some(at_ms) = retry_at_ms {
            error.retry_after_secs = Some(at_ms.saturating_sub(now_ms).div_ceil(1_000).max(1));
        }
        error
    }
}

/// One sentence (or two) that a person can act on.
pub fn explain(reason: &Reason) -> String {
    match reason {
        Reason::Ok => "allowed".into(),
        Reason::SoftLimit { limit, usage, requested, soft, .. } => format!(
            "{limit} is past its soft limit: {usage} in use, {requested} more requested, soft limit {soft}"
        ),
        Reason::HardLimit { limit, usage, requested, hard, set_by, set_at_ms, set_via } => format!(
            "{limit} is at its hard limit: {usage} in use and {requested} more requested, but the hard limit is {hard}. \
             It was set by {set_by} at {} via {set_via}. To change it, propose a new value through governance \
             (any human or AI with standing may propose; `colony limits` shows every limit).",
            colony_log::audit::format_time(*set_at_ms)
        ),
        Reason::QueueFull { limit, queue_max } => {
            format!("{limit} is past its soft limit and its admission queue is full ({queue_max} waiting); retry later")
        }
        Reason::InsufficientResource { resource, requested, available, principal, refill_at_ms } => {
            let refill = refill_at_ms
                .map(|at| format!("; it refills at {}", colony_log::audit::format_time(at)))
                .unwrap_or_default();
            format!("not enough {resource} at {principal}: {requested} requested, {available} available{refill}")
        }
        Reason::Forbidden { message } => message.clone(),
        Reason::NoStanding { actor } => format!("principal {actor} has no standing"),
        Reason::NotFound { what, id } => format!("no {what} {id}"),
        Reason::Invalid { message } => message.clone(),
        Reason::ReservationExpired { .. } => "the reservation expired".into(),
        Reason::LimitAllows { limit, .. } => format!("admitted: {limit} now allows it"),
        Reason::TooManyReservations { max } => {
            format!("you hold {max} open reservations, the most allowed; commit or release some first")
        }
        Reason::ConsensusReached { .. } => "both sides reached their quorum and approval threshold".into(),
        Reason::ConsensusNotReached { .. } => "a side missed its quorum or approval threshold".into(),
        Reason::Vetoed { by } => format!("vetoed by {by}"),
        Reason::BrakeFloor { limit, floor, requested } => format!(
            "a brake cannot take {limit} below its floor of {floor} ({requested} was asked); \
             a lower value is a proposal for a vote"
        ),
        Reason::BrakeRate { max, window_ms, retry_at_ms } => format!(
            "you applied {max} brakes in the last {} minutes, the most allowed; the next is possible at {}",
            window_ms / 60_000,
            colony_log::audit::format_time(*retry_at_ms)
        ),
        Reason::QueueShare { limit, held, share } => format!(
            "{limit} is past its soft limit and you already wait in its queue {held} times, your fair share of {share} places; retry when one is admitted"
        ),
        Reason::TooManyProposals { max } => format!(
            "you have {max} proposals in review, the most allowed; wait for one to be decided"
        ),
        Reason::BrakeExpired { proposal, ttl_ms, .. } => format!(
            "brake {proposal} was not confirmed by the other side within {} s: the earlier values are back",
            ttl_ms / 1_000
        ),
        Reason::Anomalous { evidence } => format!(
            "quarantined: {} {} in the window starting {}, past {} ({}; its baseline is {:.1} a window); a human member or admin releases it",
            evidence.count,
            evidence.signal.as_str(),
            colony_log::audit::format_time(evidence.window_start_ms),
            evidence.threshold,
            match evidence.rule {
                colony_kernel::anomaly::EvidenceRule::Ceiling => "the fixed ceiling",
                colony_kernel::anomaly::EvidenceRule::Baseline => "far outside its own baseline",
            },
            evidence.baseline_sixteenths as f64 / colony_kernel::anomaly::BASELINE_SCALE as f64
        ),
        Reason::Quarantined { since_ms, evidence } => format!(
            "you are quarantined since {} ({} {} in a window, past {}): you may only read until a human member or admin releases you",
            colony_log::audit::format_time(*since_ms),
            evidence.count,
            evidence.signal.as_str(),
            evidence.threshold
        ),
        Reason::BrakeConfirmed { proposal, by } => {
            format!("brake {proposal} was confirmed by {by}: it holds until changed")
        }
        Reason::WorkerGone { worker, state } => format!(
            "worker session {worker} is {state}; register again (its old leases are revoked)"
        ),
        Reason::WorkerDisconnected { worker, disconnected_at_ms, grace_ms, revoked } => format!(
            "worker {worker}'s bus connection dropped at {} without a graceful leave and it did not come back within {grace_ms} ms; {} task(s) went back on the board",
            colony_log::audit::format_time(*disconnected_at_ms),
            revoked.len()
        ),
        Reason::WorkerSilent { worker, last_heartbeat_ms, timeout_ms, revoked } => format!(
            "worker session {worker} sent no heartbeat since {} (timeout {timeout_ms} ms); {} task(s) went back on the board",
            colony_log::audit::format_time(*last_heartbeat_ms),
            revoked.len()
        ),
        Reason::NotClaimable { task, status, holder } => format!(
            "{task} is {status}{}; it cannot be claimed now",
            holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default()
        ),
        Reason::StaleLease { task, presented, current, status } => format!(
            "your claim on {task} is no longer valid (token {presented}; the task is {status}{}): its lease expired \
             or it was reassigned. Claim work again.",
            current.map(|c| format!(", held under token {c}")).unwrap_or_default()
        ),
        Reason::Stable { .. } => "the stability window met every threshold".into(),
        Reason::StabilityDegraded { breaches, .. } => format!("stability degraded: {}", breaches.join("; ")),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = self.details;
        error.insert("code".into(), Value::String(self.code));
        error.insert("message".into(), Value::String(self.message));
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// A command the pipeline did not decide: 503, with `Retry-After` when it was only
/// full.
impl From<colony_pipeline::SubmitError> for ApiError {
    fn from(error: colony_pipeline::SubmitError) -> ApiError {
        let mut api = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.code, error.message);
        if error.code == "overloaded" {
            api.retry_after_secs = Some(1);
        }
        api
    }
}
