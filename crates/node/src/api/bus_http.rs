//! The bus for HTTP clients (and MCP tools): publishing one message
//! (`POST /v1/bus/publish`) with the authorization, edge gating and stream capture of
//! a WebSocket publish, and reading a durable stream from a sequence number
//! (`GET /v1/streams/{name}/messages`) with a subscription's authorization.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::streams::{PublishRequest, Published, StreamMessages, StreamReadQuery};
use colony_api::ErrorBody;
use colony_bus::inside::{Inside, Refused};
use serde_json::Value;

use super::{AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

/// Most messages one read returns.
pub const STREAM_READ_MAX: usize = 1_000;

/// Whether the token's bus scope reaches `pattern` (a subject is a pattern too).
pub(crate) fn token_reaches(caller: &Caller, pattern: &str) -> Result<(), ApiError> {
    match crate::scope::bus_subjects(&caller.scopes) {
        None => Ok(()),
        Some(allowed)
            if allowed
                .iter()
                .any(|a| colony_kernel::subject::covers(a, pattern)) =>
        {
            Ok(())
        }
        Some(allowed) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "scope",
            format!(
                "this token's bus scope reaches {} only, not `{pattern}`",
                allowed.join(", ")
            ),
        )
        .with("scope", "bus")
        .with("subject", pattern)),
    }
}

fn refusal(refused: Refused) -> ApiError {
    match refused {
        Refused::Invalid(message) => ApiError::bad_request("invalid", message),
        Refused::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        Refused::Denied(reason) => ApiError::from_denial(&reason, crate::sequencer::now_ms()),
        Refused::LeaseSpent {
            what,
            retry_after_ms,
        } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "lease_spent",
            Refused::lease_spent_message(what, retry_after_ms),
        )
        .with("resource", what)
        .with("retry_after_ms", retry_after_ms),
        Refused::Backpressure(message) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backpressure", message)
        }
        Refused::Full(full) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("{full:?}"),
        ),
    }
}

/// Publishes one message, as a WebSocket client's publish is: the subject authorized
/// by the principal's roles and the token's bus scope, `io_ops` and
/// `data_creation_bytes` taken at the edge, stored by the stream that captures it.
#[utoipa::path(post, path = "/v1/bus/publish", tag = "bus", request_body = PublishRequest,
    responses((status = 200, body = Published), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn publish(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<PublishRequest>,
) -> Result<Json<Published>, ApiError> {
    token_reaches(&caller, &request.subject)?;
    let bus = &app.shared.bus;
    let data = request.data.to_string();
    let inside = Inside::new(bus, caller.id, &caller.address, caller.roles.clone());
    let delivered = inside
        .publish(bus, &request.subject, &data)
        .map_err(refusal)?;
    Ok(Json(Published {
        subject: request.subject,
        delivered,
    }))
}

/// Reads a durable stream from a sequence number: the messages a subscription to the
/// stream's subjects (or to `subject`) would be given, oldest first.
#[utoipa::path(get, path = "/v1/streams/{name}/messages", tag = "bus",
    params(("name" = String, Path), ("from_seq" = Option<u64>, Query), ("limit" = Option<usize>, Query, description = "1 to 1000"), ("subject" = Option<String>, Query)),
    responses((status = 200, body = StreamMessages), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(app): State<AppState>,
    caller: Caller,
    Segment(name): Segment<String>,
    Params(query): Params<StreamReadQuery>,
) -> Result<Json<StreamMessages>, ApiError> {
    let bus = &app.shared.bus;
    let stream = bus.streams.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream named {name:?}"),
        )
        .with("stream", name.as_str())
    })?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > STREAM_READ_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {STREAM_READ_MAX}"),
        ));
    }
    // What is read is what a subscription would be allowed to receive.
    let patterns = match &query.subject {
        Some(pattern) => {
            colony_kernel::subject::check_pattern(pattern)
                .map_err(|e| ApiError::bad_request("invalid_query", format!("subject: {e}")))?;
            vec![pattern.clone()]
        }
        None => stream.spec().subjects,
    };
    for pattern in &patterns {
        token_reaches(&caller, pattern)?;
        colony_bus::policy::may_subscribe(&bus.config, &caller.address, &caller.roles, pattern)
            .map_err(|message| ApiError::new(StatusCode::FORBIDDEN, "forbidden", message))?;
    }
    let (messages, seq) = read_from(&stream, query.from_seq, query.subject.as_deref(), limit);
    Ok(Json(StreamMessages {
        stream: name,
        messages,
        next_seq: seq,
    }))
}

/// Up to `limit` stored messages of `stream` from `from_seq` (1 when absent) whose
/// subject matches `filter`, oldest first, each as stored; and where to read on.
pub(crate) fn read_from(
    stream: &colony_bus::streams::Stream,
    from_seq: Option<u64>,
    filter: Option<&str>,
    limit: usize,
) -> (Vec<Value>, u64) {
    let now_ms = crate::sequencer::now_ms();
    let mut seq = from_seq.unwrap_or(1).max(1);
    let mut messages = Vec::new();
    while messages.len() < limit {
        match stream.next(seq, filter, now_ms) {
            colony_bus::streams::Next::Msg(stored) => {
                seq = stored.msg.seq + 1;
                messages.push(serde_json::from_str::<Value>(&stored.record).unwrap_or(Value::Null));
            }
            colony_bus::streams::Next::Caught(next) => {
                if next <= seq {
                    break;
                }
                seq = next;
            }
        }
    }
    (messages, seq)
}
