//! One call's life after it is prepared: the models of the chain tried in order, each
//! through the upstream that serves it, with one loop for both dialects (OpenAI's chat
//! completions, Anthropic's messages) and for streams; the answer settled once.
//!
//! An upstream that speaks the caller's dialect gets the caller's request as it came
//! (but for the model's name) and its answer goes back as it came; a refusal from it
//! (4xx) is the caller's mistake, relayed with nothing charged. Otherwise the call
//! goes in OpenAI's shape and comes back turned into Anthropic's; a refusal there is
//! a failure of that model, and the next one is tried. 5xx, timeouts and unreachable
//! upstreams fall through to the next model; every key rate-limited too, and when
//! that is all that happened the answer is 429 with the shortest wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::relay::Relay;
use crate::sse::{Data, ToAnthropic, Watch};
use crate::{cost_micro_usd, scripted, Attempt, Gateway, Model, Prepared, Refusal, UpstreamKind};

/// The API shape a caller speaks (and its errors take).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// A prepared call's request.
pub struct CallRequest {
    pub dialect: Dialect,
    pub stream: bool,
    /// The call in OpenAI's chat shape: what OpenAI-compatible and scripted
    /// upstreams get (the caller's own body for [`Dialect::OpenAi`]).
    pub chat: Value,
    /// The caller's Anthropic request, sent as it is to Anthropic upstreams.
    pub anthropic: Option<Value>,
    /// The caller's `anthropic-version` header.
    pub anthropic_version: Option<String>,
}

/// How a call ended.
pub enum Answer {
    /// A whole answer in the caller's dialect, settled: JSON, or a scripted event
    /// stream in one piece.
    Whole {
        body: Bytes,
        event_stream: bool,
        model: String,
        reserved: u64,
        cost: u64,
    },
    /// An upstream's event stream, relayed as it comes; settled when it ends.
    Stream {
        relay: Box<Relay>,
        model: String,
        reserved: u64,
    },
    /// The upstream refused the request as the caller sent it: its answer as it
    /// came; nothing charged.
    Relayed { status: u16, body: Bytes },
    /// Refused: no upstream answered (the reservation is released).
    Refused(Refusal),
}

static SCRIPTED_IDS: AtomicU64 = AtomicU64::new(1);

impl Prepared {
    /// Settles the call at `tokens` on `model` (before answering when it is for a
    /// task) and answers `body`.
    pub(crate) async fn whole(
        self,
        model: &Model,
        tokens: (u64, u64),
        how: &str,
        body: Bytes,
        event_stream: bool,
    ) -> Answer {
        self.whole_cached(
            model,
            tokens,
            crate::Cache::default(),
            how,
            body,
            event_stream,
        )
        .await
    }

    /// [`Prepared::whole`] with the input tokens the upstream served from its prompt
    /// cache or wrote to it (each at the model's price for it).
    pub(crate) async fn whole_cached(
        mut self,
        model: &Model,
        tokens: (u64, u64),
        cache: crate::Cache,
        how: &str,
        body: Bytes,
        event_stream: bool,
    ) -> Answer {
        let cost = crate::cost_with(model, tokens.0, cache, tokens.1);
        self.settlement.trace.cache(cache);
        let how = format!("{how}{}", cache.note());
        let how = how.as_str();
        self.settlement
            .settle_answered(&model.name, tokens, cost, how)
            .await;
        Answer::Whole {
            body,
            event_stream,
            model: model.name.clone(),
            reserved: self.reserved,
            cost,
        }
    }
}

impl Prepared {
    /// The upstream answered, then its answer broke off: what it generated is not
    /// known, so the bound is charged (never zero), and the caller is told.
    pub(crate) async fn broke_off(mut self, model: &Model, error: &str) -> Answer {
        let tokens = (self.input_bound, self.max_tokens);
        let cost = cost_micro_usd(model, tokens.0, tokens.1);
        let how = "the answer broke off after the upstream started: charged the bound";
        self.settlement
            .settle_answered(&model.name, tokens, cost, how)
            .await;
        Answer::Refused(Refusal::new(
            502,
            "api_error",
            "upstream_failed",
            format!(
                "{} started answering, then its answer broke off ({error}); the call was charged its bound, {cost} micro-USD",
                model.name
            ),
        ))
    }
}

impl Gateway {
    /// Tries the prepared call's chain until a model answers.
    pub async fn call(
        self: &Arc<Gateway>,
        mut prepared: Prepared,
        mut request: CallRequest,
    ) -> Answer {
        let mut failures = Failures::default();
        for model in prepared.chain.clone() {
            let kind = self.config.upstreams[&model.upstream].kind;
            let attempt = match (kind, request.dialect) {
                (UpstreamKind::Scripted, _) => {
                    return scripted_answer(prepared, &request, &model).await
                }
                (UpstreamKind::Anthropic, Dialect::OpenAi) => {
                    failures.why.push(format!(
                        "{}: an Anthropic upstream serves /v1/messages, not chat completions",
                        model.name
                    ));
                    continue;
                }
                (UpstreamKind::Anthropic, Dialect::Anthropic) => {
                    let Some(outgoing) = request.anthropic.as_mut() else {
                        failures
                            .why
                            .push(format!("{}: no Anthropic request to send", model.name));
                        continue;
                    };
                    outgoing["model"] = json!(model.upstream_model);
                    let version = request.anthropic_version.as_deref();
                    self.attempt(&model, "/messages", outgoing, version).await
                }
                (UpstreamKind::OpenAi, _) => {
                    // The body goes on as it is but for the model's name (and, on a
                    // stream, the usage chunk): no copy on the hot path.
                    request.chat["model"] = json!(model.upstream_model);
                    if request.stream {
                        request.chat["stream"] = json!(true);
                        request.chat["stream_options"] = json!({"include_usage": true});
                    }
                    self.attempt(&model, "/chat/completions", &request.chat, None)
                        .await
                }
            };
            let passthrough = matches!(
                (kind, request.dialect),
                (UpstreamKind::OpenAi, Dialect::OpenAi)
                    | (UpstreamKind::Anthropic, Dialect::Anthropic)
            );
            match attempt {
                Attempt::Response(response) if response.status().is_success() => {
                    if request.stream {
                        let translate = (!passthrough).then(|| ToAnthropic::new(&model.name));
                        let reserved = prepared.reserved;
                        let name = model.name.clone();
                        return Answer::Stream {
                            relay: Box::new(Relay::new(response, translate, model, prepared)),
                            model: name,
                            reserved,
                        };
                    }
                    let bytes = match response.bytes().await {
                        Ok(bytes) => bytes,
                        Err(error) => return prepared.broke_off(&model, &error.to_string()).await,
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
                    let cache = crate::Cache::of(&answer["usage"]);
                    prepared.settlement.trace.answer(&answer);
                    let body = if passthrough {
                        bytes
                    } else {
                        Bytes::from(to_anthropic(&answer, &model.name, tokens).to_string())
                    };
                    return prepared
                        .whole_cached(&model, tokens, cache, how, body, false)
                        .await;
                }
                // Another dialect's refusal is that model's failure, not the caller's.
                Attempt::Response(response) if !passthrough => {
                    failures
                        .why
                        .push(format!("{}: answered {}", model.name, response.status()));
                }
                other => {
                    if let Some(answer) = failures.note(other, &model, &mut prepared).await {
                        return answer;
                    }
                }
            }
        }
        failures.refuse(prepared, "every upstream failed")
    }
}

/// What the chain learned from the attempts that did not answer: why each model
/// failed, and the shortest wait any rate limit asked for.
#[derive(Default)]
pub(crate) struct Failures {
    pub(crate) why: Vec<String>,
    pub(crate) rate_limited: Option<u64>,
}

impl Failures {
    /// An attempt that did not succeed, for a route whose upstream speaks the
    /// caller's shape: a refusal of the caller's request (a 4xx) is relayed and ends
    /// the chain with the reservation released; a rate limit or a failure is noted,
    /// and the next model is tried (`None`).
    pub(crate) async fn note(
        &mut self,
        attempt: Attempt,
        model: &Model,
        prepared: &mut Prepared,
    ) -> Option<Answer> {
        match attempt {
            Attempt::Response(response) => {
                let status = response.status();
                prepared
                    .settlement
                    .release(&format!("{} answered {status}", model.name));
                let body = response.bytes().await.unwrap_or_default();
                Some(Answer::Relayed {
                    status: status.as_u16(),
                    body,
                })
            }
            Attempt::RateLimited { retry_after_secs } => {
                self.why
                    .push(format!("{}: every key is rate-limited", model.name));
                self.rate_limited = Some(
                    self.rate_limited
                        .map_or(retry_after_secs, |s| s.min(retry_after_secs)),
                );
                None
            }
            Attempt::Failed(why) => {
                self.why.push(format!("{}: {why}", model.name));
                None
            }
        }
    }

    /// No model answered: the reservation released, and the refusal.
    pub(crate) fn refuse(self, mut prepared: Prepared, why: &str) -> Answer {
        prepared.settlement.release(why);
        Answer::Refused(no_upstream_answered(self.why, self.rate_limited))
    }
}

/// 429 when rate limits were all that stood in the way, 502 otherwise.
pub(crate) fn no_upstream_answered(failures: Vec<String>, rate_limited: Option<u64>) -> Refusal {
    match rate_limited {
        Some(secs) if failures.iter().all(|f| f.contains("rate-limited")) => {
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
    }
}

/// The offline provider's answer, in the caller's dialect, streamed or not.
async fn scripted_answer(prepared: Prepared, request: &CallRequest, model: &Model) -> Answer {
    let id = SCRIPTED_IDS.fetch_add(1, Ordering::Relaxed);
    let (max_tokens, input_bound) = (prepared.max_tokens, prepared.input_bound);
    if request.stream {
        let events = scripted::stream_events(&request.chat, &model.name, max_tokens, id);
        let (body, tokens) = match request.dialect {
            Dialect::OpenAi => {
                let text = events.concat();
                let tokens = sse_tokens(text.as_bytes(), input_bound);
                (text, tokens)
            }
            Dialect::Anthropic => scripted_anthropic_stream(&events, model, input_bound),
        };
        return prepared
            .whole(model, tokens, "scripted, streamed", Bytes::from(body), true)
            .await;
    }
    let answer = scripted::completion(&request.chat, &model.name, max_tokens, id);
    let tokens = usage_of(&answer).unwrap_or((input_bound, max_tokens));
    let body = match request.dialect {
        Dialect::OpenAi => answer,
        Dialect::Anthropic => to_anthropic(&answer, &model.name, tokens),
    };
    prepared
        .whole(
            model,
            tokens,
            "scripted",
            Bytes::from(body.to_string()),
            false,
        )
        .await
}

/// The tokens an answer's `usage` reports (OpenAI's or Anthropic's names; Anthropic's
/// prompt-cache reads and writes are input tokens too).
pub fn usage_of(value: &Value) -> Option<(u64, u64)> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let input = usage["prompt_tokens"]
        .as_u64()
        .or(usage["input_tokens"].as_u64())?
        + usage["cache_read_input_tokens"].as_u64().unwrap_or(0)
        + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    let output = usage["completion_tokens"]
        .as_u64()
        .or(usage["output_tokens"].as_u64())?;
    Some((input, output))
}

/// The input tokens of a `usage` object served from the upstream's prompt cache:
/// OpenAI's chat (`prompt_tokens_details`) and Responses (`input_tokens_details`)
/// `cached_tokens`, Anthropic's `cache_read_input_tokens`.
pub fn cached_of(usage: &Value) -> u64 {
    usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .or(usage["input_tokens_details"]["cached_tokens"].as_u64())
        .or(usage["cache_read_input_tokens"].as_u64())
        .unwrap_or(0)
}

/// An OpenAI chat completion as Anthropic's message.
fn to_anthropic(answer: &Value, model: &str, tokens: (u64, u64)) -> Value {
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    let stop = match answer["choices"][0]["finish_reason"].as_str() {
        Some("length") => "max_tokens",
        _ => "end_turn",
    };
    json!({
        "id": answer["id"], "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": tokens.0, "output_tokens": tokens.1},
    })
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
