//! OpenAI's Responses API (`POST /v1/responses`), the OpenAI Agents SDK's default:
//! the same life as a chat call. The input (a string or items), the instructions
//! and the tools bound the input tokens from above (their JSON size, as for chat);
//! `max_output_tokens` (the model's own bound when absent) bounds the output; the
//! worst case is reserved on the fallback chain, and the settlement charges the
//! `usage` of the answer (or of the stream's `response.completed` event).
//! An OpenAI-compatible upstream gets the request as it came (but for the model's
//! name) and its answer, or its event stream, goes back as it came. The scripted
//! provider answers in the Responses shape offline. An Anthropic upstream has no
//! Responses API: the next model of the chain is tried, and when none serves it the
//! call is refused before anything is spent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::relay::Relay;
use crate::{
    invalid, scripted, usage_of, Answer, Attempt, Caller, Gateway, Model, Prepared, UpstreamKind,
};

static SCRIPTED_IDS: AtomicU64 = AtomicU64::new(1);

/// Most responses remembered for `GET`/`DELETE /v1/responses/{id}` (the oldest are
/// forgotten first).
pub const RESPONSES_REMEMBERED_MAX: usize = 4_096;
/// Longest response id remembered.
const RESPONSE_ID_BYTES_MAX: usize = 256;

/// A response an upstream served: its id, for whom, and the model that served it.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    id: String,
    principal: colony_kernel::PrincipalId,
    model: String,
}

/// An upper bound of the input tokens of a Responses request: the JSON size of its
/// `input`, `instructions` and `tools`, plus 3.
pub fn responses_input_bound(body: &Value) -> u64 {
    let size = |key: &str| {
        body.get(key)
            .map(|v| serde_json::to_string(v).map_or(0, |s| s.len()))
            .unwrap_or(0) as u64
    };
    size("input") + size("instructions") + size("tools") + 3
}

/// A whole Responses API answer with `text` as its one message.
pub fn response_object(id: &str, model: &str, text: &str, tokens: (u64, u64)) -> Value {
    json!({
        "id": id, "object": "response", "created_at": 0, "status": "completed",
        "model": model, "error": null, "incomplete_details": null,
        "output": [{"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": tokens.0, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": tokens.1, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": tokens.0 + tokens.1},
    })
}

/// The same answer as the Responses API's event stream.
pub fn response_events(id: &str, model: &str, text: &str, tokens: (u64, u64)) -> String {
    let done = response_object(id, model, text, tokens);
    let mut started = done.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    let item_id = format!("msg_{id}");
    let mut events = vec![
        json!({"type": "response.created", "response": started}),
        json!({"type": "response.in_progress", "response": started}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}),
    ];
    for word in text.split_inclusive(' ') {
        events.push(
            json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
                           "content_index": 0, "delta": word, "logprobs": []}),
        );
    }
    events.push(
        json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0,
                       "content_index": 0, "text": text, "logprobs": []}),
    );
    events.push(json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0,
                       "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
    events.push(
        json!({"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]}),
    );
    events.push(json!({"type": "response.completed", "response": done}));
    let mut out = String::new();
    for (sequence, mut event) in events.into_iter().enumerate() {
        event["sequence_number"] = json!(sequence);
        out.push_str(&format!(
            "event: {}\ndata: {event}\n\n",
            event["type"].as_str().unwrap_or("")
        ));
    }
    out
}

impl Gateway {
    /// Checks a Responses request, routes its model and reserves its worst case.
    pub async fn prepare_responses(
        self: &Arc<Gateway>,
        caller: Caller<'_>,
        task: Option<&str>,
        body: &Value,
    ) -> Result<Prepared, crate::Refusal> {
        let requested = crate::prepare::requested_model(body)?;
        if !(body["input"].is_string() || body["input"].is_array()) {
            return Err(invalid("`input` must be a string or an array of items"));
        }
        if body
            .get("previous_response_id")
            .is_some_and(|v| !v.is_null())
        {
            // The stored conversation is not in the request: its size cannot be
            // bounded before the call, so the call cannot be priced.
            return Err(invalid(
                "`previous_response_id` is not served: send the conversation in `input` \
                 (Colony reserves the worst case of what it can see)",
            ));
        }
        let max_tokens = body["max_output_tokens"].as_u64();
        let input_bound = responses_input_bound(body);
        self.reserve_call(
            caller,
            task,
            requested,
            max_tokens,
            input_bound,
            &body["input"],
        )
        .await
    }

    /// Answers with the first model of the chain that serves the Responses API.
    pub async fn respond(
        self: &Arc<Gateway>,
        mut prepared: Prepared,
        mut body: Value,
        stream: bool,
    ) -> Answer {
        let mut failures = crate::call::Failures::default();
        for model in prepared.chain.clone() {
            let kind = self.config.upstreams[&model.upstream].kind;
            let attempt = match kind {
                UpstreamKind::Scripted => {
                    return scripted_response(prepared, &body, &model, stream).await
                }
                UpstreamKind::Anthropic => {
                    failures.why.push(format!(
                        "{}: an Anthropic upstream has no Responses API",
                        model.name
                    ));
                    continue;
                }
                UpstreamKind::OpenAi => {
                    body["model"] = json!(model.upstream_model);
                    self.attempt(&model, "/responses", &body, None).await
                }
            };
            match attempt {
                Attempt::Response(response) if response.status().is_success() => {
                    if stream {
                        let reserved = prepared.reserved;
                        let name = model.name.clone();
                        // Its id is remembered as it streams by, for GET and DELETE.
                        let (gateway, principal) = (Arc::clone(self), prepared.settlement.caller);
                        let served_by = name.clone();
                        let remember: crate::relay::OnResponseId =
                            Box::new(move |id| gateway.remember(id, principal, &served_by));
                        let relay =
                            Relay::new(response, None, model, prepared).on_response_id(remember);
                        return Answer::Stream {
                            relay: Box::new(relay),
                            model: name,
                            reserved,
                        };
                    }
                    let bytes = match response.bytes().await {
                        Ok(bytes) => bytes,
                        Err(error) => return prepared.broke_off(&model, &error.to_string()).await,
                    };
                    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    if let Some(id) = answer["id"].as_str() {
                        self.remember(id, prepared.settlement.caller, &model.name);
                    }
                    let (tokens, how) = match usage_of(&answer) {
                        Some(tokens) => (tokens, "responses, usage from the upstream"),
                        None => (
                            (prepared.input_bound, prepared.max_tokens),
                            "responses, no usage reported: charged the bound",
                        ),
                    };
                    let cache = crate::Cache::of(&answer["usage"]);
                    prepared.settlement.trace.answer(&answer);
                    return prepared
                        .whole_cached(&model, tokens, cache, how, bytes, false)
                        .await;
                }
                other => {
                    if let Some(answer) = failures.note(other, &model, &mut prepared).await {
                        return answer;
                    }
                }
            }
        }
        failures.refuse(prepared, "no model of the chain served the call")
    }
}

impl Gateway {
    fn remember(&self, id: &str, principal: colony_kernel::PrincipalId, model: &str) {
        if id.len() > RESPONSE_ID_BYTES_MAX {
            return;
        }
        let mut served = self.served.lock().expect("gateway lock");
        if served.len() >= RESPONSES_REMEMBERED_MAX {
            served.pop_front();
        }
        served.push_back(Served {
            id: id.to_string(),
            principal,
            model: model.to_string(),
        });
    }

    /// `GET` or `DELETE /v1/responses/{id}`: passed to the upstream that served the
    /// response, for the principal it was served to (nothing is generated: no
    /// reservation). A response this node did not serve to `caller` is a 404.
    pub async fn stored_response(
        self: &Arc<Gateway>,
        caller: colony_kernel::PrincipalId,
        id: &str,
        method: reqwest::Method,
    ) -> Answer {
        let found = {
            let served = self.served.lock().expect("gateway lock");
            served
                .iter()
                .rev()
                .find(|s| s.id == id && s.principal == caller)
                .cloned()
        };
        let not_found = || {
            Answer::Refused(crate::Refusal::new(
                404,
                "invalid_request_error",
                "not_found",
                format!("no response {id:?} was served to you by this node"),
            ))
        };
        let Some(served) = found else {
            return not_found();
        };
        let Some(model) = self.config.resolve(&served.model).cloned() else {
            return not_found();
        };
        let deleting = method == reqwest::Method::DELETE;
        let path = format!("/responses/{id}");
        match self.send_to(&model, method, &path, None, None).await {
            Attempt::Response(response) => {
                let status = response.status().as_u16();
                if deleting && (200..300).contains(&status) {
                    self.served
                        .lock()
                        .expect("gateway lock")
                        .retain(|s| s.id != id);
                }
                Answer::Relayed {
                    status,
                    body: response.bytes().await.unwrap_or_default(),
                }
            }
            Attempt::RateLimited { retry_after_secs } => {
                Answer::Refused(crate::call::no_upstream_answered(
                    vec![format!("{}: every key is rate-limited", model.name)],
                    Some(retry_after_secs),
                ))
            }
            Attempt::Failed(why) => Answer::Refused(crate::call::no_upstream_answered(
                vec![format!("{}: {why}", model.name)],
                None,
            )),
        }
    }
}

/// The scripted provider's answer in the Responses shape.
async fn scripted_response(
    prepared: Prepared,
    body: &Value,
    model: &Model,
    stream: bool,
) -> Answer {
    let id = format!(
        "resp_scripted_{}",
        SCRIPTED_IDS.fetch_add(1, Ordering::Relaxed)
    );
    // The scripted provider reads chat messages: the input as one user message.
    let input = match &body["input"] {
        Value::String(text) => text.clone(),
        items => items.to_string(),
    };
    let chat = json!({"messages": [{"role": "user", "content": input}]});
    let text = scripted::answer_text(&chat, prepared.max_tokens);
    let tokens = (
        (responses_input_bound(body)).min(prepared.input_bound),
        (text.len() as u64).div_ceil(4).min(prepared.max_tokens),
    );
    let (answer, event_stream) = if stream {
        (response_events(&id, &model.name, &text, tokens), true)
    } else {
        (
            response_object(&id, &model.name, &text, tokens).to_string(),
            false,
        )
    };
    prepared
        .whole(
            model,
            tokens,
            "scripted responses",
            Bytes::from(answer),
            event_stream,
        )
        .await
}
