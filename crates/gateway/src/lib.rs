//! Colony's LLM gateway: the life of one LLM call, from the request to its settled
//! cost. It owns the providers (`providers.toml`: upstreams, models, prices,
//! aliases, routing, fallback chains), each principal's in-memory allowance (calls
//! in flight, tokens per minute), the worst-case reservation before a call, the one
//! fallback loop for OpenAI's and Anthropic's dialects and for streams, and the
//! settlement that commits the exact cost (and charges the task) exactly once.
//!
//! - [`config`]: reads `providers.toml`.
//! - `prepare.rs`: checking, routing, admitting and reserving a call ([`Gateway::prepare`]).
//! - `call.rs`: the chain tried in order ([`Gateway::call`]), answering an [`Answer`].
//! - `embeddings.rs`: embeddings, priced by input tokens ([`Gateway::embed`]).
//! - `responses.rs`: OpenAI's Responses API ([`Gateway::respond`]).
//! - `upstream.rs`: the upstream clients, key rotation and cool-down, one attempt.
//! - `relay.rs`: event streams relayed (or turned into Anthropic's) and watched.
//! - `settle.rs`: the settlement, once, or the release.
//! - `admission.rs`, `refusal.rs`, [`scripted`] (the offline provider), [`sse`]
//!   (following event streams), [`tls`] (the roots outgoing connections trust).
//!
//! A call: resolve the model (alias, or `auto` routed by the task's tags), bound the
//! input tokens from above (the JSON size of the messages: a byte-level BPE token
//! always covers at least one byte), add `max_tokens`, price it at the most expensive
//! model of the fallback chain, check the principal's in-memory concurrency and
//! tokens-per-minute allowance and the task's budget, reserve the amount from the
//! caller's `llm_budget_usd` (a kernel decision that also holds the system's
//! `llm_spend_usd` window), call the upstream (rotating keys, skipping rate-limited
//! ones, falling back on 5xx and timeouts), then settle: one `Settle` command commits
//! the actual cost from the upstream's usage (refunding the rest) and charges the
//! task in the same decision.
//!
//! **Never**: it serves no HTTP (the node's `api/gateway.rs` turns an [`Answer`] into
//! a response), touches no store, and changes the kernel only through the pipeline's
//! `Submitter`. No call reaches an upstream without a reservation covering its worst
//! case, and no reservation is left unsettled (`Drop` releases it).

mod admission;
mod call;
pub mod config;
mod embeddings;
mod prepare;
mod refusal;
mod relay;
mod responses;
pub mod scripted;
mod settle;
pub mod sse;
pub mod tls;
mod upstream;

pub use admission::Admission;
pub use call::{usage_of, Answer, CallRequest, Dialect};
pub use config::{GatewayConfig, Model, Upstream, UpstreamKind};
pub use embeddings::{embedding_input_bound, EMBEDDING_INPUTS_MAX};
pub use prepare::{Caller, Prepared};
pub use refusal::{denial, invalid, Refusal};
pub use relay::Relay;
pub use responses::{response_events, response_object, responses_input_bound};
pub use upstream::{Attempt, Gateway};

use serde_json::Value;

/// Cost in micro-dollars of `input` and `output` tokens at a model's prices,
/// rounded up.
pub fn cost_micro_usd(model: &Model, input: u64, output: u64) -> u64 {
    let total = input as u128 * model.input_micro_usd_per_million as u128
        + output as u128 * model.output_micro_usd_per_million as u128;
    total.div_ceil(1_000_000) as u64
}

/// An upper bound of the input tokens of a chat request: the bytes of its messages
/// (and tools) as JSON, plus 3. Every token of a byte-level BPE tokenizer covers at
/// least one byte, and the JSON syntax around each message (at least 25 bytes) covers
/// the few tokens of per-message framing the providers add.
pub fn input_token_bound(body: &Value) -> u64 {
    let size = |key: &str| {
        body.get(key)
            .map(|v| serde_json::to_string(v).map_or(0, |s| s.len()))
            .unwrap_or(0) as u64
    };
    size("messages") + size("system") + size("tools") + size("functions") + 3
}
