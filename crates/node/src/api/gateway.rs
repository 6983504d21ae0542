//! The LLM gateway's routes: `POST /v1/chat/completions` (plain and streaming),
//! `GET /v1/models`, `POST /v1/messages` (Anthropic's shape). The call itself
//! (routing, reservation, the fallback loop, settlement) is the gateway crate's
//! ([`colony_gateway`]); here a request is read, handed to it, and its [`Answer`]
//! written back as a response in the caller's dialect.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::gateway::{
    AnthropicError, ChatRequest, Completion, EmbeddingsRequest, MessagesRequest, ModelEntry,
    ModelExtras, ModelList, OpenAiError, ResponsesRequest,
};
use colony_api::ErrorBody;
use colony_gateway::{
    invalid, scripted, Answer, CallRequest, Caller as GatewayCaller, Dialect, Refusal, UpstreamKind,
};
use serde_json::{json, Value};

use super::{AppState, Segment};
use crate::auth::{authenticate, Caller};
use crate::gateway::Gateway;

fn refusal_response(refusal: &Refusal, dialect: Dialect) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = match dialect {
        Dialect::OpenAi => (status, Json(refusal.openai_body())).into_response(),
        Dialect::Anthropic => (status, Json(refusal.anthropic_body())).into_response(),
    };
    if let Some(secs) = refusal.retry_after_secs {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

/// The request's JSON, or why not.
fn json_body(bytes: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(bytes)
        .map_err(|error| invalid(format!("the body is not valid JSON: {error}")))
}

fn cost_headers(response: &mut Response, model: &str, reserved: u64, actual: Option<u64>) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(model) {
        headers.insert("x-colony-model", value);
    }
    headers.insert("x-colony-reserved-micro-usd", HeaderValue::from(reserved));
    if let Some(actual) = actual {
        headers.insert("x-colony-cost-micro-usd", HeaderValue::from(actual));
    }
}

/// An event stream: its cost is in the headers only when it is already known.
fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// A call's answer as an HTTP response, in the caller's dialect.
fn respond(answer: Answer, dialect: Dialect) -> Response {
    match answer {
        Answer::Whole {
            body,
            event_stream: true,
            model,
            reserved,
            cost,
        } => {
            let mut response = event_stream(Body::from(body));
            cost_headers(&mut response, &model, reserved, Some(cost));
            response
        }
        Answer::Whole {
            body,
            model,
            reserved,
            cost,
            ..
        } => {
            let mut response =
                (StatusCode::OK, [("content-type", "application/json")], body).into_response();
            cost_headers(&mut response, &model, reserved, Some(cost));
            response
        }
        Answer::Stream {
            relay,
            model,
            reserved,
        } => {
            let mut response = event_stream(Body::from_stream(relay));
            cost_headers(&mut response, &model, reserved, None);
            response
        }
        Answer::Relayed { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        Answer::Refused(refusal) => refusal_response(&refusal, dialect),
    }
}

/// The task a call is made for (`X-Colony-Task`).
fn task_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-colony-task").and_then(|v| v.to_str().ok())
}

/// Serves `call` within its span (a child of the request's `traceparent`) when the
/// node exports traces, and ends the span with the answer (a stream's ends with the
/// stream); just serves it otherwise.
async fn traced(
    app: &AppState,
    headers: &HeaderMap,
    operation: &'static str,
    requested: Option<String>,
    principal: &str,
    call: impl std::future::Future<Output = Answer>,
) -> Answer {
    use opentelemetry::trace::FutureExt as _;
    let gateway = &app.shared.gateway;
    if !gateway.tracing() {
        return call.await;
    }
    let parent = crate::telemetry::parent_from(headers);
    let context = gateway.trace_call(
        &parent,
        operation,
        requested.as_deref(),
        principal,
        task_header(headers),
    );
    let answer = call.with_context(context.clone()).await;
    colony_gateway::traced_answer(&context, &answer);
    answer
}

/// The model a request asks for, when its call is traced.
fn requested(app: &AppState, body: &Value) -> Option<String> {
    app.shared
        .gateway
        .tracing()
        .then(|| body["model"].as_str().map(str::to_string))
        .flatten()
}

/// What the OpenAI-dialect calls share: the body read as JSON (refused in OpenAI's
/// shape when it is not), `call` made by the caller for the task it names
/// (`X-Colony-Task`) within the call's span, and the answer in OpenAI's dialect.
async fn openai_call<'a, F, Fut>(
    app: &'a AppState,
    caller: &'a Caller,
    headers: &'a HeaderMap,
    body: &Bytes,
    operation: &'static str,
    call: F,
) -> Response
where
    F: FnOnce(&'a Arc<Gateway>, GatewayCaller<'a>, Option<&'a str>, Value) -> Fut,
    Fut: std::future::Future<Output = Answer> + 'a,
{
    let body = match json_body(body) {
        Ok(body) => body,
        Err(refusal) => return refusal_response(&refusal, Dialect::OpenAi),
    };
    let who = GatewayCaller {
        id: caller.id,
        address: &caller.address,
    };
    let model = requested(app, &body);
    let call = call(&app.shared.gateway, who, task_header(headers), body);
    let answer = traced(app, headers, operation, model, &caller.address, call).await;
    respond(answer, Dialect::OpenAi)
}

/// An OpenAI chat completion through the gateway: the caller's `llm_budget_usd` is
/// reserved for the worst case before the call and charged the actual cost after.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", request_body = ChatRequest,
    responses((status = 200, body = Completion, description = "OpenAI's chat completion, or a text/event-stream"),
        (status = 400, body = OpenAiError), (status = 401, body = ErrorBody), (status = 403, body = OpenAiError), (status = 404, body = OpenAiError), (status = 413, body = ErrorBody),
        (status = 429, body = OpenAiError), (status = 502, body = OpenAiError), (status = 503, body = OpenAiError), (status = 504, body = OpenAiError)))]
pub async fn chat_completions(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    openai_call(
        &app,
        &caller,
        &headers,
        &body,
        "chat",
        |gateway, who, task, body| async move {
            let stream = body["stream"] == json!(true);
            let prepared = match gateway.prepare(who, task, &body).await {
                Ok(prepared) => prepared,
                Err(refusal) => return Answer::Refused(refusal),
            };
            let request = CallRequest {
                dialect: Dialect::OpenAi,
                stream,
                chat: body,
                anthropic: None,
                anthropic_version: None,
            };
            gateway.call(prepared, request).await
        },
    )
    .await
}

/// OpenAI embeddings through the gateway: reserved for the worst case of the input
/// before the call, charged the input tokens the upstream reports after.
#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway", request_body = EmbeddingsRequest,
    responses((status = 200, body = Completion, description = "OpenAI's embeddings list"),
        (status = 400, body = OpenAiError), (status = 401, body = ErrorBody), (status = 403, body = OpenAiError), (status = 404, body = OpenAiError), (status = 413, body = ErrorBody),
        (status = 429, body = OpenAiError), (status = 502, body = OpenAiError), (status = 503, body = OpenAiError)))]
pub async fn embeddings(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    openai_call(
        &app,
        &caller,
        &headers,
        &body,
        "embeddings",
        |gateway, who, task, body| async move {
            match gateway.prepare_embeddings(who, task, &body).await {
                Ok(prepared) => gateway.embed(prepared, body).await,
                Err(refusal) => Answer::Refused(refusal),
            }
        },
    )
    .await
}

/// OpenAI's Responses API through the gateway (plain, or its event stream): the
/// worst case reserved before, the answer's (or `response.completed`'s) usage charged
/// after.
#[utoipa::path(post, path = "/v1/responses", tag = "gateway", request_body = ResponsesRequest,
    responses((status = 200, body = Completion, description = "OpenAI's response object, or its text/event-stream"),
        (status = 400, body = OpenAiError), (status = 401, body = ErrorBody), (status = 403, body = OpenAiError), (status = 404, body = OpenAiError), (status = 413, body = ErrorBody),
        (status = 429, body = OpenAiError), (status = 502, body = OpenAiError), (status = 503, body = OpenAiError)))]
pub async fn responses(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    openai_call(
        &app,
        &caller,
        &headers,
        &body,
        "chat",
        |gateway, who, task, body| async move {
            let stream = body["stream"] == json!(true);
            match gateway.prepare_responses(who, task, &body).await {
                Ok(prepared) => gateway.respond(prepared, body, stream).await,
                Err(refusal) => Answer::Refused(refusal),
            }
        },
    )
    .await
}

/// A response this node served to the caller, as its upstream keeps it.
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "gateway", params(("id" = String, Path)),
    responses((status = 200, body = Completion, description = "the upstream's response object"), (status = 403, body = ErrorBody), (status = 404, body = OpenAiError), (status = 502, body = OpenAiError)))]
pub async fn response_get(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<String>,
) -> Response {
    let answer = app
        .shared
        .gateway
        .stored_response(caller.id, &id, axum::http::Method::GET)
        .await;
    respond(answer, Dialect::OpenAi)
}

/// Deletes, at its upstream, a response this node served to the caller.
#[utoipa::path(delete, path = "/v1/responses/{id}", tag = "gateway", params(("id" = String, Path)),
    responses((status = 200, body = Completion, description = "the upstream's answer"), (status = 403, body = ErrorBody), (status = 404, body = OpenAiError), (status = 502, body = OpenAiError)))]
pub async fn response_delete(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<String>,
) -> Response {
    let answer = app
        .shared
        .gateway
        .stored_response(caller.id, &id, axum::http::Method::DELETE)
        .await;
    respond(answer, Dialect::OpenAi)
}

/// The models, aliases and router Colony serves, in OpenAI's shape.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", responses((status = 403, body = ErrorBody), (status = 200, body = ModelList)))]
pub async fn models(State(app): State<AppState>, _caller: Caller) -> Json<ModelList> {
    let config = &app.shared.gateway.config;
    let entry = |id: &str, owned_by: &str, colony: ModelExtras| ModelEntry {
        id: id.to_string(),
        object: "model".into(),
        created: 0,
        owned_by: owned_by.to_string(),
        colony,
    };
    let mut data: Vec<ModelEntry> = config
        .models
        .values()
        .map(|m| {
            let extras = ModelExtras {
                input_usd_per_million: Some(m.input_micro_usd_per_million as f64 / 1e6),
                output_usd_per_million: Some(m.output_micro_usd_per_million as f64 / 1e6),
                fallback: Some(m.fallback.clone()),
                scripted: Some(config.upstreams[&m.upstream].kind == UpstreamKind::Scripted),
                ..ModelExtras::default()
            };
            entry(&m.name, &m.upstream, extras)
        })
        .collect();
    for (alias, target) in &config.aliases {
        let extras = ModelExtras {
            alias_of: Some(target.clone()),
            ..ModelExtras::default()
        };
        data.push(entry(alias, "alias", extras));
    }
    let router = ModelExtras {
        default: Some(config.default_model.clone()),
        ..ModelExtras::default()
    };
    data.push(entry("auto", "router", router));
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

/// Anthropic's messages API through the gateway, key in `x-api-key` (or a bearer).
/// Errors are in Anthropic's shape (`{"type":"error","error":{"type","message"}}`).
#[utoipa::path(post, path = "/v1/messages", tag = "gateway", request_body = MessagesRequest,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Completion, description = "Anthropic's message, or a text/event-stream"),
        (status = 400, body = AnthropicError), (status = 401, body = AnthropicError), (status = 403, body = AnthropicError), (status = 404, body = AnthropicError), (status = 413, body = AnthropicError),
        (status = 429, body = AnthropicError), (status = 502, body = AnthropicError), (status = 503, body = AnthropicError), (status = 504, body = AnthropicError)))]
pub async fn messages(
    State(app): State<AppState>,
    connection: Option<axum::Extension<crate::listener::ConnectionTag>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    let caller = match token.as_deref().map(|t| authenticate(&app.shared.state, t)) {
        Some(Ok(caller)) => {
            if let Some(axum::Extension(connection)) = connection {
                connection.mark_authenticated();
            }
            let task = task_header(&headers);
            if let Err(error) = caller.check_scope(
                app.shared.routes,
                &axum::http::Method::POST,
                "/v1/messages",
                "/v1/messages",
                task,
            ) {
                let refusal = Refusal::new(403, "permission_error", "scope", error.message);
                return refusal_response(&refusal, Dialect::Anthropic);
            }
            caller
        }
        _ => {
            let refusal = Refusal::new(
                401,
                "authentication_error",
                "unauthenticated",
                "send your Colony token as x-api-key",
            );
            return refusal_response(&refusal, Dialect::Anthropic);
        }
    };
    let request = match json_body(&body) {
        Ok(body) => body,
        Err(refusal) => return refusal_response(&refusal, Dialect::Anthropic),
    };
    let stream = request["stream"] == json!(true);
    // The same call in OpenAI's shape, for budgets and for non-Anthropic upstreams.
    let mut messages = Vec::new();
    if let Some(system) = request.get("system") {
        messages.push(json!({"role": "system", "content": scripted::content_text(system)}));
    }
    for message in request["messages"].as_array().into_iter().flatten() {
        messages.push(json!({"role": message["role"], "content": scripted::content_text(&message["content"])}));
    }
    let chat = json!({"model": request["model"], "messages": messages, "max_tokens": request["max_tokens"]});
    let gateway = &app.shared.gateway;
    let who = GatewayCaller {
        id: caller.id,
        address: &caller.address,
    };
    let anthropic_version = headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (model, task) = (requested(&app, &request), task_header(&headers));
    let call = async move {
        let prepared = match gateway.prepare(who, task, &chat).await {
            Ok(prepared) => prepared,
            Err(refusal) => return Answer::Refused(refusal),
        };
        let call = CallRequest {
            dialect: Dialect::Anthropic,
            stream,
            chat,
            anthropic: Some(request),
            anthropic_version,
        };
        gateway.call(prepared, call).await
    };
    let answer = traced(&app, &headers, "chat", model, &caller.address, call).await;
    respond(answer, Dialect::Anthropic)
}
