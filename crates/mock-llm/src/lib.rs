//! A mock upstream that speaks the OpenAI chat API (`POST /v1/chat/completions`) and
//! Anthropic's messages API (`POST /v1/messages`) and returns usage, so that the
//! gateway is tested and benchmarked without network (`colony mock-llm`).
//!
//! Behaviour by API key (`Authorization: Bearer KEY`, or `x-api-key`):
//! - a key starting with `limited` gets `429` with `Retry-After: 30`;
//! - a key starting with `broken` gets `500`;
//! - any other key (or none) gets an answer.
//!
//! Answers are deterministic: `mock answer` and the request's last user message,
//! `prompt_tokens` = 10 per message, `completion_tokens` = min(max_tokens, 12).
//! With `stream: true` the answer comes as server-sent events, with a usage chunk
//! when `stream_options.include_usage` is set. Anthropic's shape counts the system
//! prompt as one more message and streams Anthropic's events, usage included.
//! `GET /mock/calls` counts calls per key; the `traceparent` of calls that carry
//! one is kept ([`MockState::traceparents`]).
//!
//! Its own crate, so that the node's library holds no test double: tests,
//! benchmarks and `colony mock-llm` serve [`router`] with the node's own listener
//! (`colony_node::listener::serve_router`, plain or TLS).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Calls received, by key.
#[derive(Clone, Default)]
pub struct MockState {
    pub calls: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The W3C `traceparent` of each call that carried one, in order.
    pub traceparents: Arc<Mutex<Vec<String>>>,
}

pub fn router(state: MockState) -> Router {
    // The model APIs answer a key as `check_key` says (and count the call) before
    // their handlers run.
    let apis = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), keyed));
    Router::new()
        .merge(apis)
        .route(
            "/v1/responses/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                Json(colony_gateway::response_object(&id, "mock", "kept", (1, 1)))
            })
            .delete(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                Json(json!({"id": id, "object": "response.deleted", "deleted": true}))
            }),
        )
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}]})) }))
        .route(
            "/mock/calls",
            get(|State(state): State<MockState>| async move { Json(json!(*state.calls.lock().expect("mock lock"))) }),
        )
        .with_state(state)
}

/// The model APIs' gate: the refusal the call's key earns, or the handler's answer.
async fn keyed(
    State(state): State<MockState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check_key(&state, request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// Counts the call; the refusal its key earns, if any.
fn check_key(state: &MockState, headers: &HeaderMap) -> Option<Response> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .unwrap_or("")
        .to_string();
    if let Some(parent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        state
            .traceparents
            .lock()
            .expect("mock lock")
            .push(parent.to_string());
    }
    *state
        .calls
        .lock()
        .expect("mock lock")
        .entry(key.clone())
        .or_default() += 1;
    if key.starts_with("limited") {
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "30")],
                Json(json!({"error": {"message": "Rate limit reached (mock)", "type": "requests", "code": "rate_limit_exceeded"}})),
            )
                .into_response(),
        );
    }
    if key.starts_with("broken") {
        return Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": "The server had an error (mock)", "type": "server_error"}})),
            )
                .into_response(),
        );
    }
    None
}

/// The mock's answer to a request.
struct Answer {
    /// The model the request named.
    model: String,
    text: String,
    input_tokens: u64,
    output_tokens: u64,
}

/// Answers the last user message of `body`; the input counts `extra_messages` more.
fn answer(body: &Value, extra_messages: u64, max_tokens: u64) -> Answer {
    let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| colony_gateway::scripted::content_text(&m["content"]))
        .unwrap_or_default();
    Answer {
        model: body["model"].as_str().unwrap_or("mock").to_string(),
        text: format!("mock answer: {}", last.chars().take(80).collect::<String>()),
        input_tokens: 10 * (messages.len() as u64 + extra_messages),
        output_tokens: max_tokens.min(12),
    }
}

/// The Responses API: the chat answer to the input, 10 input tokens per input item
/// (a string is one) and at most 12 output tokens, plain or as the event stream.
async fn responses(Json(body): Json<Value>) -> Response {
    let items = body["input"].as_array().map_or(1, Vec::len) as u64;
    let last = match &body["input"] {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find_map(|item| item["content"].as_str().map(str::to_string))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let model = body["model"].as_str().unwrap_or("mock").to_string();
    let output = body["max_output_tokens"].as_u64().unwrap_or(1_000).min(12);
    let tokens = (10 * items, output);
    // A tool-call turn: with tools offered and no tool result yet, ask for the first
    // tool (every required string argument "Paris"); with a result, answer with it.
    let result = body["input"].as_array().and_then(|items| {
        items
            .iter()
            .find(|item| item["type"] == "function_call_output")
            .map(|item| item["output"].as_str().unwrap_or("").to_string())
    });
    let tool = body["tools"]
        .as_array()
        .and_then(|tools| tools.first())
        .cloned();
    if let (Some(tool), None, false) = (&tool, &result, body["stream"] == json!(true)) {
        let mut arguments = serde_json::Map::new();
        for name in tool["parameters"]["required"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(name) = name.as_str() {
                arguments.insert(name.to_string(), json!("Paris"));
            }
        }
        let mut answer = colony_gateway::response_object("resp_mock", &model, "", tokens);
        answer["output"] = json!([{"type": "function_call", "id": "fc_mock", "call_id": "call_mock",
            "name": tool["name"], "arguments": Value::Object(arguments).to_string(), "status": "completed"}]);
        return Json(answer).into_response();
    }
    let said = result.map_or(last, |result| format!("the tool says {result}"));
    let text = format!("mock answer: {}", said.chars().take(80).collect::<String>());
    if body["stream"] == json!(true) {
        let events = colony_gateway::response_events("resp_mock", &model, &text, tokens);
        return ([("content-type", "text/event-stream")], events).into_response();
    }
    Json(colony_gateway::response_object(
        "resp_mock",
        &model,
        &text,
        tokens,
    ))
    .into_response()
}

/// Embeddings: the scripted provider's vectors under the upstream's model name, and
/// 5 input tokens per input.
async fn embeddings(Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("mock").to_string();
    let mut answer = colony_gateway::scripted::embeddings(&body, &model);
    let inputs = answer["data"].as_array().map_or(0, Vec::len) as u64;
    answer["usage"] = json!({"prompt_tokens": 5 * inputs, "total_tokens": 5 * inputs});
    Json(answer).into_response()
}

async fn messages(Json(body): Json<Value>) -> Response {
    let system = u64::from(body.get("system").is_some());
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(1_000);
    let Answer {
        model,
        text,
        input_tokens: input,
        output_tokens: output,
    } = answer(&body, system, max_tokens);
    if body["stream"] != json!(true) {
        return Json(json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output},
        }))
        .into_response();
    }
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant",
               "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": input, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for word in text.split_inclusive(' ') {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": output}}),
    );
    events.push(json!({"type": "message_stop"}));
    let mut out = String::new();
    for event in events {
        out.push_str(&format!(
            "event: {}\ndata: {event}\n\n",
            event["type"].as_str().unwrap_or("")
        ));
    }
    ([("content-type", "text/event-stream")], out).into_response()
}

async fn chat(Json(body): Json<Value>) -> Response {
    let max_tokens = body["max_tokens"]
        .as_u64()
        .or(body["max_completion_tokens"].as_u64())
        .unwrap_or(1_000);
    let Answer {
        model,
        text,
        input_tokens: prompt_tokens,
        output_tokens: completion_tokens,
    } = answer(&body, 0, max_tokens);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    if body["stream"] == json!(true) {
        let mut events = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        events.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        for word in text.split_inclusive(' ') {
            events.push(chunk(json!({"content": word}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
        if body["stream_options"]["include_usage"] == json!(true) {
            events.push(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}));
        }
        let mut text = String::new();
        for event in events {
            text.push_str(&format!("data: {event}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], text).into_response();
    }
    Json(json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage,
    }))
    .into_response()
}
