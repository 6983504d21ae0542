//! What a gateway call shows to the tools people trace with (OpenTelemetry): one
//! span per call following the GenAI semantic conventions (`gen_ai.*`), with
//! Colony's own attributes under `colony.*`; under it a span per upstream attempt
//! (each model of the fallback chain, each key tried) and a span per kernel decision
//! the call takes (`reserve`, `settle`, `release`). The call's span is a child of the
//! caller's `traceparent` when it sent one, so that an agent's own trace shows what
//! Colony did for it.
//!
//! Where the spans go is set up by the node (`colony_telemetry`); without it the
//! gateway holds no tracer, [`CallTrace`] is empty and nothing here costs more than
//! a branch. Prompt contents are never in a span unless `log_prompts` is on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use serde_json::Value;

use crate::{Answer, Gateway, Refusal, UpstreamKind};

/// Longest prompt put in a span (`gen_ai.input.messages`, with `log_prompts`).
pub const TRACED_PROMPT_BYTES_MAX: usize = 16 * 1024;
/// Longest value from a request (the model asked for, the task header) put in a span.
pub const TRACED_VALUE_BYTES_MAX: usize = 256;

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn bounded(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One call's span and the tracer to make its children with, or nothing when the
/// node traces nothing.
#[derive(Clone, Default)]
pub struct CallTrace(Option<(Arc<Tracing>, Context)>);

/// The gateway's tracer, and how many spans of decisions sent in the background are
/// still open (so that a node stopping exports them: [`Gateway::spans_ended`]).
pub(crate) struct Tracing {
    tracer: BoxedTracer,
    open: AtomicUsize,
}

impl Tracing {
    pub(crate) fn new(tracer: BoxedTracer) -> Arc<Tracing> {
        Arc::new(Tracing {
            tracer,
            open: AtomicUsize::new(0),
        })
    }
}

/// A span ended later, on another task: counted open until dropped.
pub(crate) struct Pending {
    pub(crate) span: BoxedSpan,
    tracing: Arc<Tracing>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.tracing.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The semantic conventions' name for an upstream's kind.
pub(crate) fn provider_name(kind: UpstreamKind) -> &'static str {
    match kind {
        UpstreamKind::OpenAi => "openai",
        UpstreamKind::Anthropic => "anthropic",
        UpstreamKind::Scripted => "colony.scripted",
    }
}

impl Gateway {
    /// Starts the span of one call (`operation` is `chat` or `embeddings`,
    /// `requested` the model asked for) as a child of `parent` (the caller's trace
    /// context, or an empty one); serve the call within the returned context
    /// (`opentelemetry::trace::FutureExt::with_context`) and end it with
    /// [`traced_answer`]. Without a tracer, `parent` comes back as it is.
    pub fn trace_call(
        &self,
        parent: &Context,
        operation: &'static str,
        requested: Option<&str>,
        principal: &str,
        task: Option<&str>,
    ) -> Context {
        let Some(tracer) = &self.tracer else {
            return parent.clone();
        };
        // What the caller wrote goes into the span bounded.
        let requested = requested.map(|model| bounded(model, TRACED_VALUE_BYTES_MAX));
        let task = task.map(|task| bounded(task, TRACED_VALUE_BYTES_MAX));
        let name = match requested {
            Some(model) => format!("{operation} {model}"),
            None => operation.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("colony.principal", principal.to_string()),
        ];
        if let Some(model) = requested {
            attributes.push(KeyValue::new("gen_ai.request.model", model.to_string()));
        }
        if let Some(task) = task {
            attributes.push(KeyValue::new("colony.task", task.to_string()));
        }
        let span = tracer
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&tracer.tracer, parent);
        parent.with_span(span)
    }

    /// Whether spans are made.
    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// Waits (at most `within`) until the spans of decisions sent in the background
    /// have ended, so that a stopping node exports them.
    pub async fn spans_ended(&self, within: Duration) {
        let Some(tracing) = &self.tracer else { return };
        let deadline = tokio::time::Instant::now() + within;
        while tracing.open.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl CallTrace {
    /// The call being served (the span [`Gateway::trace_call`] started, current
    /// while the call's future runs), or nothing.
    pub(crate) fn current(gateway: &Gateway) -> CallTrace {
        let Some(tracer) = &gateway.tracer else {
            return CallTrace(None);
        };
        let cx = Context::current();
        if !cx.has_active_span() {
            return CallTrace(None);
        }
        CallTrace(Some((Arc::clone(tracer), cx)))
    }

    /// Sets attributes on the call's span; `attributes` runs only when traced.
    pub(crate) fn set(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some((_, cx)) = &self.0 {
            cx.span().set_attributes(attributes());
        }
    }

    /// The prompt, when `log_prompts` lets it be recorded.
    pub(crate) fn prompt(&self, prompt: &Value) {
        self.set(|| {
            let text = prompt.to_string();
            let text = bounded(&text, TRACED_PROMPT_BYTES_MAX).to_string();
            vec![KeyValue::new("gen_ai.input.messages", text)]
        });
    }

    /// What the answer says about how generation ended (finish reasons, the
    /// response's id and model), in any of the dialects.
    pub(crate) fn answer(&self, answer: &Value) {
        self.set(|| {
            let mut attributes = Vec::new();
            let reasons = finish_reasons(answer);
            if !reasons.is_empty() {
                attributes.push(KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    opentelemetry::Value::Array(reasons.into()),
                ));
            }
            if let Some(id) = answer["id"].as_str() {
                let id = bounded(id, TRACED_VALUE_BYTES_MAX).to_string();
                attributes.push(KeyValue::new("gen_ai.response.id", id));
            }
            attributes
        });
    }

    /// The input tokens the upstream served from its prompt cache, or wrote to it.
    pub(crate) fn cache(&self, cache: crate::Cache) {
        if cache == crate::Cache::default() {
            return;
        }
        self.set(|| {
            vec![
                KeyValue::new("gen_ai.usage.cache_read.input_tokens", cache.read as i64),
                KeyValue::new(
                    "gen_ai.usage.cache_creation.input_tokens",
                    cache.written as i64,
                ),
            ]
        });
    }

    /// The tokens and cost a call settled at.
    pub(crate) fn settled(&self, model: &str, tokens: (u64, u64), actual: u64, how: &str) {
        self.set(|| {
            vec![
                KeyValue::new("gen_ai.response.model", model.to_string()),
                KeyValue::new("gen_ai.usage.input_tokens", tokens.0 as i64),
                KeyValue::new("gen_ai.usage.output_tokens", tokens.1 as i64),
                KeyValue::new("colony.charged_micro_usd", actual as i64),
                KeyValue::new("colony.settlement", how.to_string()),
            ]
        });
    }

    /// A child span of the call, started now.
    pub(crate) fn child(
        &self,
        name: String,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Option<BoxedSpan> {
        let (tracing, cx) = self.0.as_ref()?;
        Some(
            tracing
                .tracer
                .span_builder(name)
                .with_kind(kind)
                .with_attributes(attributes)
                .start_with_context(&tracing.tracer, cx),
        )
    }

    /// [`CallTrace::kernel`] for a decision sent in the background: counted open
    /// until it is dropped (ended by [`decided`]).
    pub(crate) fn kernel_pending(&self, command: &'static str) -> Option<Pending> {
        let span = self.kernel(command)?;
        let tracing = Arc::clone(&self.0.as_ref()?.0);
        tracing.open.fetch_add(1, Ordering::AcqRel);
        Some(Pending { span, tracing })
    }

    /// The span of a kernel decision the call asks for (`reserve`, `settle`,
    /// `release`), ended by [`decided`].
    pub(crate) fn kernel(&self, command: &'static str) -> Option<BoxedSpan> {
        self.child(
            format!("colony.kernel {command}"),
            SpanKind::Internal,
            vec![KeyValue::new("colony.command", command)],
        )
    }

    /// The W3C `traceparent` of the current attempt's span, for the upstream.
    pub(crate) fn traceparent(span: &BoxedSpan) -> String {
        let context = span.span_context();
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    }

    /// Ends the call's span (a stream's, when it ends).
    pub(crate) fn end(&self) {
        if let Some((_, cx)) = &self.0 {
            cx.span().end();
        }
    }
}

/// Records the kernel's decision (or why there was none) on its span and ends it.
pub(crate) fn decided(
    span: &mut BoxedSpan,
    outcome: &Result<colony_pipeline::Outcome, colony_pipeline::SubmitError>,
) {
    match outcome {
        Ok(outcome) => {
            span.set_attribute(KeyValue::new(
                "colony.decision",
                outcome.primary.decision.as_str(),
            ));
            span.set_attribute(KeyValue::new("colony.decision.seq", outcome.seq as i64));
            span.set_attribute(KeyValue::new(
                "colony.decision.reason",
                outcome.primary.reason.code(),
            ));
            if let colony_kernel::Effect::Reserved { reservation, .. } = &outcome.primary.effect {
                span.set_attribute(KeyValue::new("colony.reservation", *reservation as i64));
            }
            if !outcome.primary.decision.is_allowed() {
                span.set_status(Status::error(outcome.primary.reason.code()));
            }
        }
        Err(error) => {
            span.set_attribute(KeyValue::new("error.type", error.code));
            span.set_status(Status::error(error.message.clone()));
        }
    }
    span.end();
}

/// Records how an upstream attempt ended on its span and ends it.
pub(crate) fn attempted(span: &mut BoxedSpan, attempt: &crate::Attempt) {
    match attempt {
        crate::Attempt::Response(response) => {
            let status = response.status().as_u16();
            span.set_attribute(KeyValue::new("http.response.status_code", status as i64));
            if status >= 400 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(format!("the upstream answered {status}")));
            }
        }
        crate::Attempt::RateLimited { retry_after_secs } => {
            span.set_attribute(KeyValue::new("http.response.status_code", 429));
            span.set_attribute(KeyValue::new("error.type", "rate_limited"));
            span.set_status(Status::error(format!(
                "every key is rate-limited; retry after {retry_after_secs} s"
            )));
        }
        crate::Attempt::Failed(why) => {
            span.set_attribute(KeyValue::new("error.type", "upstream_failed"));
            span.set_status(Status::error(why.clone()));
        }
    }
    span.end();
}

/// Ends a call's span with how it was answered (a stream's span ends with the
/// stream). `context` is what [`Gateway::trace_call`] returned.
pub fn traced_answer(context: &Context, answer: &Answer) {
    if !context.has_active_span() {
        return;
    }
    let span = context.span();
    match answer {
        Answer::Whole { reserved, .. } => {
            span.set_attribute(KeyValue::new("http.response.status_code", 200));
            span.set_attribute(KeyValue::new("colony.reserved_micro_usd", *reserved as i64));
        }
        Answer::Stream { reserved, .. } => {
            span.set_attribute(KeyValue::new("http.response.status_code", 200));
            span.set_attribute(KeyValue::new("colony.reserved_micro_usd", *reserved as i64));
            // Ended by the relay, when the stream ends.
            return;
        }
        Answer::Relayed { status, .. } => {
            span.set_attribute(KeyValue::new("http.response.status_code", *status as i64));
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error("the upstream refused the request"));
        }
        Answer::Refused(refusal) => refused(&span, refusal),
    }
    span.end();
}

fn refused(span: &opentelemetry::trace::SpanRef<'_>, refusal: &Refusal) {
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        refusal.status as i64,
    ));
    span.set_attribute(KeyValue::new("error.type", refusal.code.to_string()));
    span.set_attribute(KeyValue::new(
        "colony.refusal.code",
        refusal.code.to_string(),
    ));
    span.set_status(Status::error(refusal.message.clone()));
}

/// The finish reasons an answer gives: chat's `choices[].finish_reason`,
/// Anthropic's `stop_reason`, the Responses API's `status` (and why it is
/// incomplete).
pub(crate) fn finish_reasons(answer: &Value) -> Vec<opentelemetry::StringValue> {
    let mut reasons: Vec<opentelemetry::StringValue> = answer["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|choice| choice["finish_reason"].as_str())
        .map(|r| r.to_string().into())
        .collect();
    if let Some(stop) = answer["stop_reason"].as_str() {
        reasons.push(stop.to_string().into());
    }
    if answer["object"] == "response" {
        if let Some(why) = answer["incomplete_details"]["reason"].as_str() {
            reasons.push(why.to_string().into());
        } else if let Some(status) = answer["status"].as_str() {
            reasons.push(status.to_string().into());
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_a_caller_writes_is_bounded_on_a_character_boundary() {
        assert_eq!(bounded("abc", 10), "abc");
        assert_eq!(bounded("abcdef", 3), "abc");
        // "é" is two bytes: a cut through it falls back before it.
        assert_eq!(bounded("aé", 2), "a");
        assert_eq!(
            bounded(&"m".repeat(10_000), TRACED_VALUE_BYTES_MAX).len(),
            256
        );
    }

    #[test]
    fn finish_reasons_are_read_in_every_dialect() {
        let of = |v: Value| -> Vec<String> {
            finish_reasons(&v)
                .iter()
                .map(|s| s.as_str().to_string())
                .collect()
        };
        assert_eq!(
            of(json!({"choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}]})),
            ["stop", "length"]
        );
        assert_eq!(of(json!({"stop_reason": "end_turn"})), ["end_turn"]);
        assert_eq!(
            of(json!({"object": "response", "status": "completed"})),
            ["completed"]
        );
        assert_eq!(
            of(json!({"object": "response", "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"}})),
            ["max_output_tokens"]
        );
        assert!(of(json!({"data": []})).is_empty());
    }
}
