//! `GET /v1/bus` (the WebSocket upgrade) and the streams API:
//! `POST /v1/streams`, `GET /v1/streams`, `GET /v1/streams/{name}`,
//! `DELETE /v1/streams/{name}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::streams::{
    CreateStream, Duration, StreamDefined, StreamDeleted, StreamList, StreamOne,
};
use colony_api::ErrorBody;
use colony_kernel::streams::StreamSpec;
use colony_kernel::CommandBody;
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{AppState, Body, Segment};
use crate::auth::{authenticate, Caller};
use crate::bus::session::{self, Peer, Socket};
use crate::bus::ws;
use crate::ApiError;

fn header_has_token(request: &Request, name: header::HeaderName, token: &str) -> bool {
    request.headers().get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

/// The subprotocol a browser names to carry its token: it offers
/// `Sec-WebSocket-Protocol: colony.bearer, <token>` and the node answers
/// `colony.bearer` (browsers cannot set headers on a WebSocket; this keeps the token
/// out of the URL).
const BEARER_PROTOCOL: &str = "colony.bearer";

/// The token offered as the subprotocol after [`BEARER_PROTOCOL`].
fn protocol_token(request: &Request) -> Option<String> {
    let offered = request.headers().get(header::SEC_WEBSOCKET_PROTOCOL)?;
    let mut protocols = offered.to_str().ok()?.split(',').map(str::trim);
    (protocols.next()? == BEARER_PROTOCOL)
        .then(|| protocols.next().map(str::to_string))
        .flatten()
}

/// The bearer token from the header, the subprotocol ([`BEARER_PROTOCOL`]), or
/// `?token=` (browsers cannot set headers on a WebSocket).
fn token_of(request: &Request) -> Option<String> {
    if let Some(token) = protocol_token(request) {
        return Some(token);
    }
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
    }
    request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token=").map(|token| token.to_string()))
    })
}

/// The agent bus: a WebSocket (docs/protocol.md). Browsers, which cannot set headers
/// on a WebSocket, offer the subprotocols `colony.bearer, <token>` (or send `?token=`).
#[utoipa::path(get, path = "/v1/bus", tag = "bus",
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 401, body = ErrorBody),
        (status = 426, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn upgrade(State(app): State<AppState>, mut request: Request) -> Response {
    let token = token_of(&request).ok_or_else(|| {
        ApiError::unauthenticated(
            "send your token as `Authorization: Bearer <token>` or as ?token=<token>",
        )
    });
    let caller = match token.and_then(|token| authenticate(&app.shared.state, &token)) {
        Ok(caller) => {
            crate::listener::mark_authenticated(request.extensions());
            caller
        }
        Err(error) => return error.into_response(),
    };
    if let Err(error) = caller.check_scope(
        app.shared.routes,
        request.method(),
        "/v1/bus",
        "/v1/bus",
        None,
    ) {
        return error.into_response();
    }
    let by_protocol = protocol_token(&request).is_some();
    let is_upgrade = request.method() == axum::http::Method::GET
        && header_has_token(&request, header::CONNECTION, "upgrade")
        && header_has_token(&request, header::UPGRADE, "websocket");
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let version_ok = request
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let (true, Some(key), true) = (is_upgrade, key, version_ok) else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /v1/bus is a WebSocket (version 13): send Connection: Upgrade, Upgrade: websocket, \
             Sec-WebSocket-Key and Sec-WebSocket-Version: 13 (docs/protocol.md)",
        )
        .into_response();
    };
    let bus = Arc::clone(&app.shared.bus);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let conn = match bus.connect(
        caller.id,
        &caller.address,
        caller.token,
        caller.expires_at_ms,
    ) {
        Ok(conn) => conn,
        Err(full) => return too_many_connections(full, &caller.address).into_response(),
    };
    let peer = Peer::new(&caller.roles, crate::scope::bus_subjects(&caller.scopes));
    // The session's future takes the upgrade's place in the task (an async block
    // would keep `bus`, `conn` and `peer` beside the session that holds them, for
    // the connection's whole life).
    tokio::spawn(on_upgrade.then(move |upgraded| match upgraded {
        Ok(upgraded) => {
            let (socket, read_ahead) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                // A plain connection: the session owns the socket itself (and can
                // wait for it without a task while the connection is idle).
                Ok(parts) => (Socket::Tcp(parts.io.into_inner()), parts.read_buf),
                // TLS: through the HTTP server's transport.
                Err(upgraded) => (
                    Socket::Other(Box::new(TokioIo::new(upgraded))),
                    Default::default(),
                ),
            };
            futures_util::future::Either::Left(session::run(bus, conn, peer, socket, &read_ahead))
        }
        Err(error) => {
            bus.disconnected(&conn);
            tracing::debug!("websocket upgrade failed: {error}");
            futures_util::future::Either::Right(std::future::ready(()))
        }
    }));
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&ws::accept_key(&key)).expect("base64 is a valid header value"),
    );
    if by_protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(BEARER_PROTOCOL),
        );
    }
    response
}

pub(crate) fn duration_ms(field: &str, value: &Duration) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid",
            format!("{field} is a duration like \"30s\" or \"24h\", or milliseconds"),
        )
        .with("field", field)
    };
    match value {
        Duration::Millis(ms) => Ok(*ms),
        Duration::Text(text) => crate::genesis::parse_duration_ms(text).map_err(|_| invalid()),
    }
}

/// Defines (201) or replaces (200) a durable stream (an admin's act).
#[utoipa::path(post, path = "/v1/streams", tag = "bus", request_body = CreateStream,
    responses((status = 201, body = StreamDefined), (status = 200, description = "replaced", body = StreamDefined), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create_stream(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateStream>,
) -> Result<(StatusCode, Json<StreamDefined>), ApiError> {
    let config = &app.shared.bus.config;
    let spec = StreamSpec {
        name: request.name,
        subjects: request.subjects,
        max_age_ms: request
            .max_age
            .as_ref()
            .map(|v| duration_ms("max_age", v))
            .transpose()?,
        max_bytes: request.max_bytes,
        max_msgs: request.max_msgs,
        ack_wait_ms: match &request.ack_wait {
            Some(value) => duration_ms("ack_wait", value)?,
            None => config.stream_ack_wait_ms,
        },
        max_deliver: request.max_deliver.unwrap_or(config.stream_max_deliver),
    };
    let justification = request
        .justification
        .unwrap_or_else(|| format!("{} defines stream {}", caller.address, spec.name));
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::DefineStream(Box::new(spec.clone())),
        )
        .await?;
    let stream = app
        .shared
        .bus
        .streams
        .define(spec)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    let replaced = matches!(
        outcome.primary.effect,
        colony_kernel::Effect::StreamDefined { replaced: true, .. }
    );
    Ok((
        if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(StreamDefined {
            stream: stream.info(),
            seq: outcome.seq,
            replaced,
        }),
    ))
}

/// Every stream with what it holds.
#[utoipa::path(get, path = "/v1/streams", tag = "bus", responses((status = 403, body = ErrorBody), (status = 200, body = StreamList)))]
pub async fn list_streams(State(app): State<AppState>, _caller: Caller) -> Json<StreamList> {
    let streams = app
        .shared
        .bus
        .streams
        .list()
        .iter()
        .map(|s| s.info())
        .collect();
    Json(StreamList { streams })
}

/// One stream.
#[utoipa::path(get, path = "/v1/streams/{name}", tag = "bus", params(("name" = String, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = StreamOne), (status = 404, body = ErrorBody)))]
pub async fn one_stream(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(name): Segment<String>,
) -> Result<Json<StreamOne>, ApiError> {
    let stream = app.shared.bus.streams.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream named {name:?}"),
        )
        .with("stream", name.as_str())
    })?;
    Ok(Json(StreamOne {
        stream: stream.info(),
    }))
}

/// Deletes a stream and its messages (an admin's act).
#[utoipa::path(delete, path = "/v1/streams/{name}", tag = "bus", params(("name" = String, Path)),
    responses((status = 200, body = StreamDeleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_stream(
    State(app): State<AppState>,
    caller: Caller,
    Segment(name): Segment<String>,
) -> Result<Json<StreamDeleted>, ApiError> {
    let outcome = app
        .decide(
            caller.id,
            format!("{} deletes stream {name}", caller.address),
            CommandBody::DeleteStream { name: name.clone() },
        )
        .await?;
    app.shared.bus.streams.delete(&name);
    Ok(Json(StreamDeleted {
        deleted: name,
        seq: outcome.seq,
    }))
}

/// `503` when the node holds all the connections it may (another node may have
/// room), `429` when the caller holds all its own (closing one makes room).
fn too_many_connections(full: colony_bus::Full, address: &str) -> ApiError {
    let mut error = match full {
        colony_bus::Full::Node { max } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "this node holds its maximum of {max} bus connections; retry shortly or use another node"
            ),
        )
        .with("max", max)
        .with("scope", "node"),
        colony_bus::Full::Principal { max } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "{address} holds its maximum of {max} bus connections on this node (connections_per_principal_max); close one first"
            ),
        )
        .with("max", max)
        .with("scope", "principal"),
    };
    error.retry_after_secs = Some(1);
    error
}
