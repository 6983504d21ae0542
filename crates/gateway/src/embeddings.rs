//! Embeddings (`POST /v1/embeddings`, OpenAI's shape): the same life as a chat call,
//! priced by input tokens alone. The input (a string, an array of strings, or arrays
//! of token ids) is bounded where it enters; the reservation covers its worst case
//! (its JSON size in tokens, or the token ids it holds) on the most expensive model of
//! the chain; the settlement charges the usage the upstream reports, or the bound when
//! it reports none. An Anthropic upstream has no embeddings: the next model is tried.
//! The scripted provider embeds offline, deterministically.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::{invalid, scripted, Answer, Attempt, Caller, Gateway, Prepared, UpstreamKind};

/// Most inputs one request embeds (OpenAI's own bound).
pub const EMBEDDING_INPUTS_MAX: usize = 2_048;

/// An upper bound of the input tokens of an embeddings request, or why its input is
/// not one: a string's bytes (a byte-level BPE token covers at least one byte), a
/// token array's length, per input, plus a little framing.
pub fn embedding_input_bound(body: &Value) -> Result<u64, String> {
    let one = |input: &Value| -> Result<u64, String> {
        match input {
            Value::String(text) if !text.is_empty() => Ok(text.len() as u64),
            Value::Array(ids) if !ids.is_empty() && ids.iter().all(Value::is_u64) => {
                Ok(ids.len() as u64)
            }
            _ => Err("each input is a non-empty string or a non-empty array of token ids".into()),
        }
    };
    let inputs: Vec<&Value> = match &body["input"] {
        Value::Array(items) if items.first().is_some_and(Value::is_u64) => vec![&body["input"]],
        Value::Array(items) => items.iter().collect(),
        Value::Null => return Err("`input` is required: a string or an array of strings".into()),
        single => vec![single],
    };
    if inputs.is_empty() || inputs.len() > EMBEDDING_INPUTS_MAX {
        return Err(format!(
            "`input` holds 1 to {EMBEDDING_INPUTS_MAX} inputs; this one holds {}",
            inputs.len()
        ));
    }
    inputs
        .into_iter()
        .map(one)
        .try_fold(3u64, |total, bound| Ok(total + bound? + 2))
}

impl Gateway {
    /// Checks an embeddings request, routes its model and reserves its worst case.
    pub async fn prepare_embeddings(
        self: &Arc<Gateway>,
        caller: Caller<'_>,
        task: Option<&str>,
        body: &Value,
    ) -> Result<Prepared, crate::Refusal> {
        let requested = crate::prepare::requested_model(body)?;
        let input_bound = embedding_input_bound(body).map_err(invalid)?;
        self.reserve_call(
            caller,
            task,
            requested,
            Some(0),
            input_bound,
            &body["input"],
        )
        .await
    }

    /// Embeds with the first model of the chain that answers; settled once.
    pub async fn embed(self: &Arc<Gateway>, mut prepared: Prepared, mut body: Value) -> Answer {
        let mut failures = crate::call::Failures::default();
        for model in prepared.chain.clone() {
            let kind = self.config.upstreams[&model.upstream].kind;
            let attempt = match kind {
                UpstreamKind::Scripted => {
                    let answer = scripted::embeddings(&body, &model.name);
                    let tokens = (answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0), 0);
                    let text = Bytes::from(answer.to_string());
                    return prepared
                        .whole(&model, tokens, "scripted embeddings", text, false)
                        .await;
                }
                UpstreamKind::Anthropic => {
                    failures
                        .why
                        .push(format!("{}: Anthropic serves no embeddings", model.name));
                    continue;
                }
                UpstreamKind::OpenAi => {
                    body["model"] = json!(model.upstream_model);
                    self.attempt(&model, "/embeddings", &body, None).await
                }
            };
            match attempt {
                Attempt::Response(response) if response.status().is_success() => {
                    let bytes = match response.bytes().await {
                        Ok(bytes) => bytes,
                        Err(error) => return prepared.broke_off(&model, &error.to_string()).await,
                    };
                    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    prepared.settlement.trace.answer(&answer);
                    let (tokens, how) = match answer["usage"]["prompt_tokens"].as_u64() {
                        Some(input) => ((input, 0), "embeddings, usage from the upstream"),
                        None => (
                            (prepared.input_bound, 0),
                            "embeddings, no usage reported: charged the bound",
                        ),
                    };
                    return prepared.whole(&model, tokens, how, bytes, false).await;
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
