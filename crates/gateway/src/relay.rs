//! Relaying an upstream's event stream to the caller, as it comes or turned into
//! Anthropic's events, watching it for the usage, and settling when it ends, breaks
//! off, or the caller goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::settle::Settlement;
use crate::sse::{Data, ToAnthropic, Watch};
use crate::{Model, Prepared};

/// What is told the id of a streamed response.
pub(crate) type OnResponseId = Box<dyn FnOnce(&str) + Send>;

/// An upstream's SSE stream on its way to the caller. A call made for a task holds
/// back the stream's last event (`[DONE]`, `message_stop`) until the task's charge is
/// decided, so that the charge lands while the caller still holds the lease.
pub struct Relay {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    watch: Watch,
    /// Set when OpenAI chunks are relayed as Anthropic events.
    translate: Option<ToAnthropic>,
    model: Model,
    input_bound: u64,
    settlement: Option<Settlement>,
    /// A task's charge being decided, and the bytes held back until it is.
    settling: Option<(crate::settle::Background, Bytes)>,
    ended: bool,
    /// Told the id of the response the stream carries (the Responses API's
    /// `response.created`), once.
    on_id: Option<OnResponseId>,
}

impl Relay {
    pub(crate) fn new(
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
            on_id: None,
        }
    }

    /// Calls `on_id` with the id of the response the stream carries, when it comes.
    pub(crate) fn on_response_id(mut self, on_id: OnResponseId) -> Relay {
        self.on_id = Some(on_id);
        self
    }

    /// Settles once; for a call made for a task, the settlement to wait for.
    fn finish(&mut self, how: &str) -> Option<crate::settle::Background> {
        let mut settlement = self.settlement.take()?;
        let for_task = settlement.for_task();
        let tokens = self.watch.tokens(self.input_bound);
        let cache = self.watch.cache();
        let actual = crate::cost_with(&self.model, tokens.0, cache, tokens.1);
        let how = if self.watch.usage_reported() {
            format!("{how}{}", cache.note())
        } else {
            format!("{how}; no usage reported: input bound and output bytes charged")
        };
        let trace = settlement.trace.clone();
        let settled = settlement.settle(&self.model.name, tokens, actual, &how);
        trace.set(|| {
            let mut attributes = vec![opentelemetry::KeyValue::new(
                "colony.stream_end",
                how.clone(),
            )];
            if let Some(reason) = self.watch.finish_reason() {
                attributes.push(opentelemetry::KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    opentelemetry::Value::Array(
                        vec![opentelemetry::StringValue::from(reason.to_string())].into(),
                    ),
                ));
            }
            attributes
        });
        trace.cache(cache);
        trace.end();
        settled.filter(|_| for_task)
    }

    /// What goes to the caller for a piece of the upstream's stream, and whether it
    /// holds the stream's last event.
    fn relay(&mut self, bytes: Bytes) -> (Bytes, bool) {
        let data = self.watch.feed(&bytes);
        if self.on_id.is_some() {
            let id = data.iter().find_map(|d| match d {
                Data::Json(event) if event["type"] == "response.created" => {
                    event["response"]["id"].as_str()
                }
                _ => None,
            });
            if let (Some(id), Some(on_id)) = (id, self.on_id.take()) {
                on_id(id);
            }
        }
        let last = data.iter().any(|d| match d {
            Data::Done => true,
            Data::Json(event) => matches!(
                event["type"].as_str(),
                Some(
                    "message_stop"
                        | "response.completed"
                        | "response.incomplete"
                        | "response.failed"
                )
            ),
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
                    // Settled in the background, sent until decided.
                    drop(self.finish("the upstream stream broke off"));
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
        drop(self.finish("the caller left mid-stream"));
    }
}
