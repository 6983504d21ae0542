//! The LLM gateway's routes: `POST /v1/chat/completions` (plain and streaming),
//! `GET /v1/models`, `POST /v1/messages` (Anthropic's shape). See
//! [`crate::gateway`] for what a call does.
//!
//! Why one file of ~980 lines: the call life cycle (prepare, reserve, try the chain,
//! settle) for both dialects and for streams; it moves, with one fallback loop for all
//! of them, into the gateway crate (the architecture issue), not done yet.

use colony_api::gateway::{
    AnthropicError, ChatRequest, Completion, MessagesRequest, ModelEntry, ModelExtras, ModelList,
    OpenAiError,
};
use colony_api::ErrorBody;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_kernel::{CommandBody, Effect, PrincipalId, Reason, Resource};
use futures_util::Stream;
use serde_json::{json, Value};

use super::AppState;
use crate::auth::{authenticate, Caller};
use crate::gateway::sse::{Data, ToAnthropic, Watch};
use crate::gateway::{
    cost_micro_usd, input_token_bound, scripted, Admission, Attempt, Model, Refusal, UpstreamKind,
};

/// Which shape errors and answers take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

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

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(400, "invalid_request_error", "invalid", message)
}

/// A kernel denial of the reservation, as OpenAI clients surface it.
fn denial(reason: &Reason, now_ms: u64) -> Refusal {
    let api = crate::ApiError::from_denial(reason, now_ms);
    let (status, kind) = match reason {
        Reason::InsufficientResource { .. } | Reason::HardLimit { .. } => {
            (429, "insufficient_quota")
        }
        Reason::TooManyReservations { .. } => (429, "rate_limit_exceeded"),
        Reason::Forbidden { .. } | Reason::NoStanding { .. } => (403, "permission_error"),
        _ => (400, "invalid_request_error"),
    };
    let mut refusal = Refusal::new(status, kind, reason.code(), api.message);
    refusal.details = api.details;
    if let Some(secs) = api.retry_after_secs {
        refusal.retry_after_secs = Some(secs);
        refusal.details.insert("retry_after".into(), secs.into());
    }
    refusal
}

/// Everything decided before the upstream is called.
struct Prepared {
    chain: Vec<Model>,
    input_bound: u64,
    max_tokens: u64,
    reserved: u64,
    settlement: Settlement,
}

impl Prepared {
    /// Settles the call at `tokens` on `model` (before answering when it is for a
    /// task) and marks `response` with the model, the reservation and the cost.
    async fn answer(
        &mut self,
        model: &Model,
        tokens: (u64, u64),
        how: &str,
        mut response: Response,
    ) -> Response {
        let actual = cost_micro_usd(model, tokens.0, tokens.1);
        self.settlement
            .settle_answered(&model.name, tokens, actual, how)
            .await;
        cost_headers(&mut response, &model.name, self.reserved, Some(actual));
        response
    }
}

/// Settles a call once: commits the actual cost (refunding the rest of the
/// reservation), charges the task, and frees the principal's admission.
struct Settlement {
    app: AppState,
    caller: PrincipalId,
    reservation: u64,
    /// `(address, lease token)` when the call is for a task.
    task: Option<(String, u64)>,
    admission: Option<Admission>,
    done: bool,
    note: String,
}

impl Settlement {
    /// Commits `actual` micro-dollars for `tokens` (input, output) on `model`. The
    /// returned task finishes once the commit (and the task's charge) are decided:
    /// a call made for a task waits for it, so that the charge lands while the
    /// caller still holds the lease.
    fn settle(
        &mut self,
        model: &str,
        tokens: (u64, u64),
        actual: u64,
        how: &str,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        if let Some(admission) = self.admission.take() {
            admission.record_tokens(tokens.0 + tokens.1);
        }
        let submitter = self.app.shared.submitter.clone();
        let (caller, reservation, task) = (self.caller, self.reservation, self.task.clone());
        let justification = format!(
            "llm call to {model}: {} input + {} output tokens = {actual} micro-USD ({how}){}",
            tokens.0,
            tokens.1,
            task.as_ref()
                .map(|(a, _)| format!(", for task {a}"))
                .unwrap_or_default()
        );
        // One decision: the commit and the task's charge land together.
        Some(tokio::spawn(async move {
            let _ = submitter
                .submit_decided(
                    caller,
                    justification,
                    CommandBody::Settle {
                        reservation,
                        actual,
                        task,
                    },
                )
                .await;
        }))
    }

    /// Settles before the answer goes out when the call is charged to a task (so
    /// that the charge lands while the caller holds the lease), in the background
    /// otherwise.
    async fn settle_answered(&mut self, model: &str, tokens: (u64, u64), actual: u64, how: &str) {
        let settled = self.settle(model, tokens, actual, how);
        if self.task.is_some() {
            if let Some(settled) = settled {
                let _ = settled.await;
            }
        }
    }

    /// Gives the whole reservation back (the call never happened).
    fn release(&mut self, why: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.admission.take();
        let submitter = self.app.shared.submitter.clone();
        let (caller, reservation) = (self.caller, self.reservation);
        let justification = format!("llm call not made: {why}");
        tokio::spawn(async move {
            let _ = submitter
                .submit_decided(caller, justification, CommandBody::Release { reservation })
                .await;
        });
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if !self.done {
            tracing::warn!(
                reservation = self.reservation,
                "an LLM call ended without settling: {}",
                self.note
            );
            self.release("the call ended before it settled");
        }
    }
}

/// Checks the request, routes the model, admits the call and reserves its cost.
async fn prepare(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &mut Value,
) -> Result<Prepared, Refusal> {
    let gateway = &app.shared.gateway;
    let config = &gateway.config;
    if !body.is_object() {
        return Err(invalid("the body must be a JSON object"));
    }
    let requested = body["model"]
        .as_str()
        .ok_or_else(|| invalid("`model` is required (GET /v1/models lists them)"))?
        .to_string();
    if !body["messages"].is_array() {
        return Err(invalid("`messages` must be an array"));
    }
    // The task this call is for: the caller must hold its lease.
    let task = match headers.get("x-colony-task").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(address) => {
            let state = app.shared.state.read().expect("state lock");
            let task = state.task(address).ok_or_else(|| {
                Refusal::new(
                    404,
                    "invalid_request_error",
                    "not_found",
                    format!("no task {address}"),
                )
            })?;
            let lease = task
                .lease
                .as_ref()
                .filter(|lease| lease.holder == caller.id)
                .ok_or_else(|| {
                    Refusal::new(
                        403,
                        "permission_error",
                        "forbidden",
                        format!(
                            "{} does not hold the lease of task {address}: claim it first",
                            caller.address
                        ),
                    )
                })?;
            Some((
                address.to_string(),
                lease.token,
                task.capabilities.clone(),
                task.priority,
                task.budget.as_ref().map(|b| b.remaining_micro_usd),
            ))
        }
    };
    let model_name = if requested == "auto" {
        match &task {
            Some((_, _, tags, priority, _)) => config.route(tags, *priority).to_string(),
            None => config.default_model.clone(),
        }
    } else {
        requested.clone()
    };
    let model = config.resolve(&model_name).cloned().ok_or_else(|| {
        Refusal::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!("no model {requested:?} here; GET /v1/models lists them"),
        )
    })?;
    let max_tokens = body["max_tokens"]
        .as_u64()
        .or(body["max_completion_tokens"].as_u64())
        .unwrap_or(model.max_output_tokens);
    let input_bound = input_token_bound(body);
    let chain = gateway.chain(&model);
    let reserved = chain
        .iter()
        .map(|m| cost_micro_usd(m, input_bound, max_tokens))
        .max()
        .unwrap_or(0)
        .max(1);
    if let Some((address, _, _, _, Some(remaining))) = &task {
        if *remaining < reserved {
            return Err(Refusal::new(
                429,
                "insufficient_quota",
                "insufficient_resource",
                format!(
                    "task {address} has {remaining} micro-USD of budget left; this call may cost up to {reserved} \
                     ({input_bound} input tokens at most + {max_tokens} output tokens on {})",
                    model.name
                ),
            )
            .with("resource", "task_budget")
            .with("task", address.as_str())
            .with("requested", reserved)
            .with("available", *remaining));
        }
    }
    let now_ms = crate::sequencer::now_ms();
    let admission = gateway.admit(caller.id, input_bound + max_tokens, now_ms)?;
    let mut justification = format!(
        "llm call to {}: at most {input_bound} input + {max_tokens} output tokens{}",
        model.name,
        task.as_ref()
            .map(|t| format!(", for task {}", t.0))
            .unwrap_or_default()
    );
    if config.log_prompts {
        let prompt = body["messages"].to_string();
        let room = colony_kernel::JUSTIFICATION_BYTES_MAX.saturating_sub(justification.len() + 16);
        let mut end = prompt.len().min(room);
        while !prompt.is_char_boundary(end) {
            end -= 1;
        }
        justification.push_str(&format!("; prompt: {}", &prompt[..end]));
    }
    let outcome = app
        .shared
        .submitter
        .submit_decided(
            caller.id,
            justification,
            CommandBody::Reserve {
                resource: Resource::LlmBudgetUsd,
                amount: reserved,
                ttl_ms: Some(config.timeout_ms * 2 + 60_000),
            },
        )
        .await
        .map_err(|error| Refusal::new(503, "api_error", error.code, error.message))?;
    let reservation = match (&outcome.primary.decision, &outcome.primary.effect) {
        (decision, Effect::Reserved { reservation, .. }) if decision.is_allowed() => *reservation,
        _ => return Err(denial(&outcome.primary.reason, outcome.at_ms)),
    };
    Ok(Prepared {
        chain,
        input_bound,
        max_tokens,
        reserved,
        settlement: Settlement {
            app: app.clone(),
            caller: caller.id,
            reservation,
            // Only a task with a budget is charged (subtasks of a decomposition have none
            // of their own unless their poster gave them one).
            task: task
                .filter(|t| t.4.is_some())
                .map(|(address, token, ..)| (address, token)),
            admission: Some(admission),
            done: false,
            note: format!("{} for {}", model.name, caller.address),
        },
    })
}

fn usage_of(value: &Value) -> Option<(u64, u64)> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let input = usage["prompt_tokens"]
        .as_u64()
        .or(usage["input_tokens"].as_u64())?;
    let output = usage["completion_tokens"]
        .as_u64()
        .or(usage["output_tokens"].as_u64())?;
    Some((input, output))
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

static SCRIPTED_IDS: AtomicU64 = AtomicU64::new(1);

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
    let mut body = match json_body(&body) {
        Ok(body) => body,
        Err(refusal) => return refusal_response(&refusal, Dialect::OpenAi),
    };
    let stream = body["stream"] == json!(true);
    let mut prepared = match prepare(&app, &caller, &headers, &mut body).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal_response(&refusal, Dialect::OpenAi),
    };
    let gateway = Arc::clone(&app.shared.gateway);
    let mut failures = Vec::new();
    let mut rate_limited = None;
    for model in prepared.chain.clone() {
        let upstream = &gateway.config.upstreams[&model.upstream];
        if upstream.kind == UpstreamKind::Scripted {
            let id = SCRIPTED_IDS.fetch_add(1, Ordering::Relaxed);
            if stream {
                let events = scripted::stream_events(&body, &model.name, prepared.max_tokens, id);
                let text: String = events.concat();
                let tokens = sse_tokens(text.as_bytes(), prepared.input_bound);
                let response = ([("content-type", "text/event-stream")], text).into_response();
                return prepared
                    .answer(&model, tokens, "scripted, streamed", response)
                    .await;
            }
            let answer = scripted::completion(&body, &model.name, prepared.max_tokens, id);
            let tokens = usage_of(&answer).expect("scripted answers carry usage");
            return prepared
                .answer(&model, tokens, "scripted", Json(answer).into_response())
                .await;
        }
        if upstream.kind == UpstreamKind::Anthropic {
            failures.push(format!(
                "{}: an Anthropic upstream serves /v1/messages, not chat completions",
                model.name
            ));
            continue;
        }
        // The caller's body goes on as it is, but for the model's name upstream (and
        // the usage chunk on a stream); no copy on the hot path.
        body["model"] = json!(model.upstream_model);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        match gateway
            .attempt(&model, "/chat/completions", &body, None)
            .await
        {
            Attempt::Response(response) => {
                let status = response.status();
                if !status.is_success() {
                    // The caller's mistake as the upstream saw it: relay it, charge nothing.
                    prepared
                        .settlement
                        .release(&format!("{} answered {status}", model.name));
                    let bytes = response.bytes().await.unwrap_or_default();
                    let mut relayed = (
                        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                        bytes,
                    )
                        .into_response();
                    relayed
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    return relayed;
                }
                if stream {
                    let reserved = prepared.reserved;
                    let relay = Relay::new(response, None, model.clone(), prepared);
                    return sse_response(Body::from_stream(relay), &model.name, reserved);
                }
                let bytes = match response.bytes().await {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        failures.push(format!("{}: the answer broke off: {error}", model.name));
                        continue;
                    }
                };
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (tokens, how) = match usage_of(&answer) {
                    Some(tokens) => (tokens, "usage from the upstream"),
                    // No usage: charge the bound (never less than what was used).
                    None => (
                        (prepared.input_bound, prepared.max_tokens),
                        "no usage reported: charged the bound",
                    ),
                };
                let response = (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    bytes,
                )
                    .into_response();
                return prepared.answer(&model, tokens, how, response).await;
            }
            Attempt::RateLimited { retry_after_secs } => {
                failures.push(format!("{}: every key is rate-limited", model.name));
                rate_limited = Some(retry_after_secs);
            }
            Attempt::Failed(why) => failures.push(format!("{}: {why}", model.name)),
        }
    }
    prepared.settlement.release("every upstream failed");
    let refusal = match rate_limited {
        Some(secs)
            if failures.len() == 1 || failures.iter().all(|f| f.contains("rate-limited")) =>
        {
            let mut refusal = Refusal::new(
                429,
                "rate_limit_exceeded",
                "rate_limited",
                format!(
                    "the upstream rate-limited every key: {}",
                    failures.join("; ")
                ),
            )
            .with("retry_after", secs);
            refusal.retry_after_secs = Some(secs);
            refusal
        }
        _ => Refusal::new(
            502,
            "api_error",
            "upstream_failed",
            format!("no upstream answered: {}", failures.join("; ")),
        )
        .with("tried", failures),
    };
    refusal_response(&refusal, Dialect::OpenAi)
}

/// Follows a whole SSE text (scripted streams): the tokens to charge.
fn sse_tokens(text: &[u8], input_bound: u64) -> (u64, u64) {
    let mut watch = Watch::default();
    watch.feed(text);
    watch.tokens(input_bound)
}

/// The same scripted stream in Anthropic's events: the body and the tokens charged.
fn scripted_anthropic_stream(
    events: &[String],
    model: &Model,
    input_bound: u64,
) -> (String, (u64, u64)) {
    let mut watch = Watch::default();
    let mut to = ToAnthropic::new(&model.name);
    let mut out = String::new();
    for event in events {
        for data in watch.feed(event.as_bytes()) {
            match data {
                Data::Json(chunk) => to.chunk(&chunk, &mut out),
                Data::Done => to.finish(watch.tokens(input_bound), &mut out),
            }
        }
    }
    let tokens = watch.tokens(input_bound);
    to.finish(tokens, &mut out);
    (out, tokens)
}

/// Relays an upstream's SSE stream to the caller (as it comes, or turned into
/// Anthropic's events), watching for the usage; settles when the stream ends, breaks
/// off, or the caller goes away. A call made for a task holds back the stream's last
/// event (`[DONE]`, `message_stop`) until the task's charge is decided, so that the
/// charge lands while the caller still holds the lease.
struct Relay {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    watch: Watch,
    /// Set when OpenAI chunks are relayed as Anthropic events.
    translate: Option<ToAnthropic>,
    model: Model,
    input_bound: u64,
    settlement: Option<Settlement>,
    /// A task's charge being decided, and the bytes held back until it is.
    settling: Option<(tokio::task::JoinHandle<()>, Bytes)>,
    ended: bool,
}

impl Relay {
    fn new(
        response: reqwest::Response,
        translate: Option<ToAnthropic>,
        model: Model,
        prepared: Prepared,
    ) -> Relay {
        Relay {
            inner: Box::pin(response.bytes_stream()),
            watch: Watch::default(),
            translate,
            model,
            input_bound: prepared.input_bound,
            settlement: Some(prepared.settlement),
            settling: None,
            ended: false,
        }
    }

    /// Settles once; for a call made for a task, the settlement to wait for.
    fn finish(&mut self, how: &str) -> Option<tokio::task::JoinHandle<()>> {
        let mut settlement = self.settlement.take()?;
        let for_task = settlement.task.is_some();
        {
            let tokens = self.watch.tokens(self.input_bound);
            let actual = cost_micro_usd(&self.model, tokens.0, tokens.1);
            let how = if self.watch.usage_reported() {
                how.to_string()
            } else {
                format!("{how}; no usage reported: input bound and output bytes charged")
            };
            let settled = settlement.settle(&self.model.name, tokens, actual, &how);
            settled.filter(|_| for_task)
        }
    }

    /// What goes to the caller for a piece of the upstream's stream, and whether it
    /// holds the stream's last event.
    fn relay(&mut self, bytes: Bytes) -> (Bytes, bool) {
        let data = self.watch.feed(&bytes);
        let last = data.iter().any(|d| match d {
            Data::Done => true,
            Data::Json(event) => event["type"] == "message_stop",
        });
        let Some(to) = self.translate.as_mut() else {
            return (bytes, last);
        };
        let mut out = String::new();
        for data in data {
            match data {
                Data::Json(chunk) => to.chunk(&chunk, &mut out),
                Data::Done => to.finish(self.watch.tokens(self.input_bound), &mut out),
            }
        }
        (Bytes::from(out), last)
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some((settled, _)) = self.settling.as_mut() {
                if Pin::new(settled).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let (_, held) = self.settling.take().expect("checked");
                if !held.is_empty() {
                    return Poll::Ready(Some(Ok(held)));
                }
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match self.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    let (out, last) = self.relay(bytes);
                    if last {
                        if let Some(settled) = self.finish("streamed; usage from the upstream") {
                            self.settling = Some((settled, out));
                            continue;
                        }
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    let _ = self.finish("the upstream stream broke off");
                    self.ended = true;
                    return Poll::Ready(Some(Err(std::io::Error::other(error))));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    let tokens = self.watch.tokens(self.input_bound);
                    let mut tail = String::new();
                    if let Some(to) = self.translate.as_mut() {
                        to.finish(tokens, &mut tail);
                    }
                    let tail = Bytes::from(tail);
                    if let Some(settled) = self.finish("streamed; usage from the upstream") {
                        self.settling = Some((settled, tail));
                        continue;
                    }
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(tail)));
                    }
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.finish("the caller left mid-stream");
    }
}

/// A relayed event stream: its cost is known only once it ends.
fn sse_response(body: Body, model: &str, reserved: u64) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    cost_headers(&mut response, model, reserved, None);
    response
}

/// The models, aliases and router Colony serves, in OpenAI's shape.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", responses((status = 200, body = ModelList)))]
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
    let caller = match token.as_deref().map(|t| authenticate(&app, t)) {
        Some(Ok(caller)) => {
            if let Some(axum::Extension(connection)) = connection {
                connection.mark_authenticated();
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
    for message in request["messages"].as_array().cloned().unwrap_or_default() {
        messages.push(json!({"role": message["role"], "content": scripted::content_text(&message["content"])}));
    }
    let mut chat = json!({"model": request["model"], "messages": messages, "max_tokens": request["max_tokens"]});
    let mut prepared = match prepare(&app, &caller, &headers, &mut chat).await {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal_response(&refusal, Dialect::Anthropic),
    };
    if stream {
        return messages_stream(&app, &headers, &request, &chat, prepared).await;
    }
    let gateway = Arc::clone(&app.shared.gateway);
    let mut failures = Vec::new();
    for model in prepared.chain.clone() {
        let kind = gateway.config.upstreams[&model.upstream].kind;
        let answer = match kind {
            UpstreamKind::Scripted => scripted::completion(
                &chat,
                &model.name,
                prepared.max_tokens,
                SCRIPTED_IDS.fetch_add(1, Ordering::Relaxed),
            ),
            UpstreamKind::Anthropic => {
                let mut outgoing = request.clone();
                outgoing["model"] = json!(model.upstream_model);
                let version = headers
                    .get("anthropic-version")
                    .and_then(|v| v.to_str().ok());
                match gateway
                    .attempt(&model, "/messages", &outgoing, version)
                    .await
                {
                    Attempt::Response(response) => {
                        let status = response.status();
                        let bytes = response.bytes().await.unwrap_or_default();
                        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        if !status.is_success() {
                            prepared
                                .settlement
                                .release(&format!("{} answered {status}", model.name));
                            return (
                                StatusCode::from_u16(status.as_u16())
                                    .unwrap_or(StatusCode::BAD_GATEWAY),
                                Json(answer),
                            )
                                .into_response();
                        }
                        let tokens = usage_of(&answer)
                            .unwrap_or((prepared.input_bound, prepared.max_tokens));
                        let response = Json(answer).into_response();
                        return prepared
                            .answer(&model, tokens, "usage from the upstream", response)
                            .await;
                    }
                    Attempt::RateLimited { .. } => {
                        failures.push(format!("{}: every key is rate-limited", model.name));
                        continue;
                    }
                    Attempt::Failed(why) => {
                        failures.push(format!("{}: {why}", model.name));
                        continue;
                    }
                }
            }
            UpstreamKind::OpenAi => {
                let mut outgoing = chat.clone();
                outgoing["model"] = json!(model.upstream_model);
                match gateway
                    .attempt(&model, "/chat/completions", &outgoing, None)
                    .await
                {
                    Attempt::Response(response) if response.status().is_success() => {
                        response.json::<Value>().await.unwrap_or(Value::Null)
                    }
                    Attempt::Response(response) => {
                        failures.push(format!("{}: answered {}", model.name, response.status()));
                        continue;
                    }
                    Attempt::RateLimited { .. } => {
                        failures.push(format!("{}: every key is rate-limited", model.name));
                        continue;
                    }
                    Attempt::Failed(why) => {
                        failures.push(format!("{}: {why}", model.name));
                        continue;
                    }
                }
            }
        };
        // An OpenAI-shaped answer, turned into Anthropic's.
        let tokens = usage_of(&answer).unwrap_or((prepared.input_bound, prepared.max_tokens));
        let text = answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let stop = match answer["choices"][0]["finish_reason"].as_str() {
            Some("length") => "max_tokens",
            _ => "end_turn",
        };
        let response = Json(json!({
            "id": answer["id"], "type": "message", "role": "assistant", "model": model.name,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": tokens.0, "output_tokens": tokens.1},
        }))
        .into_response();
        return prepared
            .answer(&model, tokens, "usage from the upstream", response)
            .await;
    }
    every_upstream_failed(&mut prepared.settlement, &failures)
}

/// Gives the reservation back and says, in Anthropic's shape, that no upstream answered.
fn every_upstream_failed(settlement: &mut Settlement, failures: &[String]) -> Response {
    settlement.release("every upstream failed");
    let refusal = Refusal::new(
        502,
        "api_error",
        "upstream_failed",
        format!("no upstream answered: {}", failures.join("; ")),
    );
    refusal_response(&refusal, Dialect::Anthropic)
}

/// `POST /v1/messages` with `"stream": true`: Anthropic's message events, relayed
/// from an Anthropic upstream or made from an OpenAI-compatible (or scripted) stream.
async fn messages_stream(
    app: &AppState,
    headers: &HeaderMap,
    request: &Value,
    chat: &Value,
    mut prepared: Prepared,
) -> Response {
    let gateway = Arc::clone(&app.shared.gateway);
    let mut failures = Vec::new();
    for model in prepared.chain.clone() {
        let kind = gateway.config.upstreams[&model.upstream].kind;
        let attempt = match kind {
            UpstreamKind::Scripted => {
                let id = SCRIPTED_IDS.fetch_add(1, Ordering::Relaxed);
                let events = scripted::stream_events(chat, &model.name, prepared.max_tokens, id);
                let (body, tokens) =
                    scripted_anthropic_stream(&events, &model, prepared.input_bound);
                let response = sse_response(Body::from(body), &model.name, prepared.reserved);
                return prepared
                    .answer(&model, tokens, "scripted, streamed", response)
                    .await;
            }
            UpstreamKind::Anthropic => {
                let mut outgoing = request.clone();
                outgoing["model"] = json!(model.upstream_model);
                let version = headers
                    .get("anthropic-version")
                    .and_then(|v| v.to_str().ok());
                gateway
                    .attempt(&model, "/messages", &outgoing, version)
                    .await
            }
            UpstreamKind::OpenAi => {
                let mut outgoing = chat.clone();
                outgoing["model"] = json!(model.upstream_model);
                outgoing["stream"] = json!(true);
                outgoing["stream_options"] = json!({"include_usage": true});
                gateway
                    .attempt(&model, "/chat/completions", &outgoing, None)
                    .await
            }
        };
        match attempt {
            Attempt::Response(response) if response.status().is_success() => {
                let translate =
                    (kind == UpstreamKind::OpenAi).then(|| ToAnthropic::new(&model.name));
                let reserved = prepared.reserved;
                let relay = Relay::new(response, translate, model.clone(), prepared);
                return sse_response(Body::from_stream(relay), &model.name, reserved);
            }
            Attempt::Response(response) if kind == UpstreamKind::Anthropic => {
                // The caller's mistake as the upstream saw it: relay it, charge nothing.
                let status = response.status();
                prepared
                    .settlement
                    .release(&format!("{} answered {status}", model.name));
                let bytes = response.bytes().await.unwrap_or_default();
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                return (
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                    Json(answer),
                )
                    .into_response();
            }
            Attempt::Response(response) => {
                failures.push(format!("{}: answered {}", model.name, response.status()));
            }
            Attempt::RateLimited { .. } => {
                failures.push(format!("{}: every key is rate-limited", model.name));
            }
            Attempt::Failed(why) => failures.push(format!("{}: {why}", model.name)),
        }
    }
    every_upstream_failed(&mut prepared.settlement, &failures)
}
