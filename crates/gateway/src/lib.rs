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
//! - `trace.rs`: the call's OpenTelemetry spans ([`Gateway::trace_call`]).
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
mod trace;
mod upstream;

pub use admission::Admission;
pub use call::{cached_of, usage_of, Answer, CallRequest, Dialect};
pub use config::{GatewayConfig, Model, Upstream, UpstreamKind};
pub use embeddings::{embedding_input_bound, EMBEDDING_INPUTS_MAX};
pub use prepare::{Caller, Prepared};
pub use refusal::{denial, invalid, Refusal};
pub use relay::Relay;
pub use responses::{response_events, response_object, responses_input_bound};
pub use trace::{traced_answer, CallTrace, TRACED_PROMPT_BYTES_MAX};
pub use upstream::{Attempt, Gateway};

use serde_json::Value;

/// The most `input` and `output` tokens can cost on a model, rounded up: every input
/// token at the dearest of its input prices (plain, cache read, cache write). What
/// is reserved, and what is charged when the usage is not known.
pub fn cost_micro_usd(model: &Model, input: u64, output: u64) -> u64 {
    let input_price = model
        .input_micro_usd_per_million
        .max(model.cached_input_micro_usd_per_million)
        .max(model.cache_write_micro_usd_per_million);
    let total = input as u128 * input_price as u128
        + output as u128 * model.output_micro_usd_per_million as u128;
    total.div_ceil(1_000_000) as u64
}

/// Input tokens an upstream reports served from (`read`) or written to (`written`)
/// its prompt cache, each priced apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    pub read: u64,
    pub written: u64,
}

impl Cache {
    /// What a `usage` object says ([`cached_of`], Anthropic's
    /// `cache_creation_input_tokens`).
    pub fn of(usage: &Value) -> Cache {
        Cache {
            read: cached_of(usage),
            written: usage["cache_creation_input_tokens"].as_u64().unwrap_or(0),
        }
    }

    /// What a settlement's justification says of it.
    pub(crate) fn note(self) -> String {
        match (self.read, self.written) {
            (0, 0) => String::new(),
            (read, 0) => format!("; {read} of the input tokens from the prompt cache"),
            (0, written) => {
                format!("; {written} of the input tokens written to the prompt cache")
            }
            (read, written) => format!(
                "; {read} of the input tokens from the prompt cache, {written} written to it"
            ),
        }
    }
}

/// Cost in micro-dollars of `input` tokens of which `cached` came from the
/// upstream's prompt cache (at the model's cached-input price), and `output` tokens
/// (reasoning tokens are output tokens), rounded up.
pub fn cost_with_cache(model: &Model, input: u64, cached: u64, output: u64) -> u64 {
    cost_with(
        model,
        input,
        Cache {
            read: cached,
            written: 0,
        },
        output,
    )
}

/// Cost in micro-dollars of `input` tokens, of which `cache.read` were served from
/// the prompt cache and `cache.written` written to it (each at its own price), and
/// `output` tokens, rounded up. The cache's counts never exceed the input.
pub fn cost_with(model: &Model, input: u64, cache: Cache, output: u64) -> u64 {
    let read = cache.read.min(input);
    let written = cache.written.min(input - read);
    let total = (input - read - written) as u128 * model.input_micro_usd_per_million as u128
        + read as u128 * model.cached_input_micro_usd_per_million as u128
        + written as u128 * model.cache_write_micro_usd_per_million as u128
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

#[cfg(test)]
mod pricing_tests {
    use super::*;
    use serde_json::json;

    fn model(input: u64, cached: u64, output: u64) -> Model {
        Model {
            name: "m".into(),
            upstream: "u".into(),
            upstream_model: "m".into(),
            input_micro_usd_per_million: input,
            output_micro_usd_per_million: output,
            cached_input_micro_usd_per_million: cached,
            cache_write_micro_usd_per_million: input,
            max_output_tokens: 100,
            fallback: Vec::new(),
        }
    }

    #[test]
    fn cached_input_is_priced_at_its_own_rate_and_rounded_up() {
        // $2.50 in, $1.25 cached, $10 out per million (gpt-4o's prices).
        let m = model(2_500_000, 1_250_000, 10_000_000);
        assert_eq!(cost_with_cache(&m, 1_000_000, 0, 0), 2_500_000);
        assert_eq!(
            cost_with_cache(&m, 1_000_000, 400_000, 0),
            1_500_000 + 500_000
        );
        assert_eq!(cost_with_cache(&m, 10, 10, 1), 23); // 12.5 + 10, rounded up
                                                        // More cached than input (a confused upstream) is never a credit.
        assert_eq!(cost_with_cache(&m, 10, 99, 0), 13);
        assert_eq!(cost_micro_usd(&m, 10, 0), 25);
    }

    #[test]
    fn cache_writes_are_priced_apart_and_bound_the_reservation() {
        // claude-sonnet-4-5: $3 in, $0.30 cache read, $3.75 cache write, $15 out.
        let mut m = model(3_000_000, 300_000, 15_000_000);
        m.cache_write_micro_usd_per_million = 3_750_000;
        let usage = json!({"input_tokens": 100, "output_tokens": 10,
            "cache_read_input_tokens": 1_000, "cache_creation_input_tokens": 400});
        let cache = Cache::of(&usage);
        assert_eq!(
            cache,
            Cache {
                read: 1_000,
                written: 400
            }
        );
        let (input, output) = usage_of(&json!({"usage": usage})).unwrap();
        assert_eq!((input, output), (1_500, 10));
        // 100 x 3 + 1 000 x 0.30 + 400 x 3.75 + 10 x 15 = 300 + 300 + 1 500 + 150.
        assert_eq!(cost_with(&m, input, cache, output), 2_250);
        // The reservation prices every input token at the dearest input price.
        assert_eq!(cost_micro_usd(&m, 1_500, 10), 5_625 + 150);
        assert!(cost_micro_usd(&m, input, output) >= cost_with(&m, input, cache, output));
        // Counts past the input are never a credit.
        // 8 read (2.4) + the 2 left written (7.5) = 9.9, rounded up.
        assert_eq!(
            cost_with(
                &m,
                10,
                Cache {
                    read: 8,
                    written: 50
                },
                0
            ),
            10
        );
    }

    #[test]
    fn usage_counts_every_input_token_and_names_the_cached_ones() {
        let chat = json!({"usage": {"prompt_tokens": 100, "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 64}}});
        assert_eq!(
            (usage_of(&chat), cached_of(&chat["usage"])),
            (Some((100, 7)), 64)
        );
        let responses = json!({"usage": {"input_tokens": 50, "output_tokens": 5,
            "input_tokens_details": {"cached_tokens": 32}, "output_tokens_details": {"reasoning_tokens": 4}}});
        assert_eq!(
            (usage_of(&responses), cached_of(&responses["usage"])),
            (Some((50, 5)), 32)
        );
        // Anthropic reports cache reads and writes beside input_tokens, not in it.
        let anthropic = json!({"usage": {"input_tokens": 20, "output_tokens": 3,
            "cache_read_input_tokens": 900, "cache_creation_input_tokens": 80}});
        assert_eq!(
            (usage_of(&anthropic), cached_of(&anthropic["usage"])),
            (Some((1_000, 3)), 900)
        );
    }
}
