//! `GET /v1/inbox`: what others sent to the caller (`agents.<address>.inbox`), read
//! from the durable `inbox` stream that the first start defines. An agent without a
//! subscription (an MCP client, a script) reads its messages here, from a sequence
//! number on; an agent with a WebSocket gets them live as well. (Answers to a live
//! request, on `agents.<address>.inbox.<id>`, are not kept: only its requester
//! waits for them.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::streams::{InboxPage, InboxQuery};
use colony_api::ErrorBody;

use super::bus_http::{read_from, token_reaches, STREAM_READ_MAX};
use super::{AppState, Params};
use crate::auth::Caller;
use crate::first_start::INBOX_STREAM;
use crate::ApiError;

/// Reads the caller's inbox from `from_seq` on, oldest first.
#[utoipa::path(get, path = "/v1/inbox", tag = "bus",
    params(("from_seq" = Option<u64>, Query, description = "the first sequence number to read (the previous read's next_seq)"), ("limit" = Option<usize>, Query, description = "1 to 1000 (100 by default)")),
    responses((status = 200, body = InboxPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<InboxQuery>,
) -> Result<Json<InboxPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > STREAM_READ_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {STREAM_READ_MAX}"),
        ));
    }
    let subject = format!("agents.{}.inbox", caller.address);
    token_reaches(&caller, &subject)?;
    let stream = app.shared.bus.streams.get(INBOX_STREAM).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "this colony keeps no `{INBOX_STREAM}` stream (its data directory predates \
                 inboxes, or an admin deleted it): an admin defines it with \
                 `colony bus stream-add {INBOX_STREAM} --subjects 'agents.*.*.inbox' \
                 --max-age 7d --max-msgs 100000`"
            ),
        )
        .with("stream", INBOX_STREAM)
    })?;
    let (messages, next_seq) = read_from(&stream, query.from_seq, Some(&subject), limit);
    Ok(Json(InboxPage {
        subject,
        messages,
        next_seq,
        last_seq: stream.info().last_seq,
    }))
}
