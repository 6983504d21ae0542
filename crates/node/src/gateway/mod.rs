//! The LLM gateway: OpenAI-compatible `POST /v1/chat/completions` (plain and
//! streaming) and `GET /v1/models`, Anthropic-compatible `POST /v1/messages`, with
//! budgets reserved before each call and settled to the exact cost after.
//!
//! - [`config`]: `providers.toml` (upstreams, models, prices, aliases, routing).
//! - [`mock`]: an OpenAI-compatible mock upstream that returns usage, for tests and
//!   benchmarks without network (`colony mock-llm`).
//! - [`scripted`]: the deterministic offline provider.
//!
//! A call: resolve the model (alias, or `auto` routed by the task's tags), bound the
//! input tokens from above (the JSON size of the messages: a byte-level BPE token
//! always covers at least one byte), add `max_tokens`, price it at the most expensive
//! model of the fallback chain, check the principal's in-memory concurrency and
//! tokens-per-minute allowance and the task's budget, reserve the amount from the
//! caller's `llm_budget_usd` (a kernel decision that also holds the system's
//! `llm_spend_usd` window), call the upstream (rotating keys, skipping rate-limited
//! ones, falling back on 5xx and timeouts), then commit the actual cost from the
//! upstream's usage (refunding the rest) and charge the task.

pub mod config;
pub mod mock;
pub mod scripted;
pub mod sse;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_kernel::PrincipalId;
use serde_json::Value;

pub use config::{GatewayConfig, Model, Upstream, UpstreamKind};

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

/// Requests in flight and tokens this minute, per principal.
#[derive(Debug, Default)]
struct PrincipalUse {
    in_flight: u64,
    window_start_ms: u64,
    tokens: u64,
    /// Estimates of the calls in flight, counted until they settle.
    held: u64,
}

/// Why a call is refused before it reaches an upstream.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// Colony's code.
    pub code: String,
    pub message: String,
    pub details: serde_json::Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    pub fn new(status: u16, kind: &'static str, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            code: code.into(),
            message: message.into(),
            details: Default::default(),
            retry_after_secs: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Refusal {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The body OpenAI clients parse: `{"error":{"message","type","param","code"}}`,
    /// with Colony's numbers under `colony`.
    pub fn openai_body(&self) -> colony_api::gateway::OpenAiError {
        colony_api::gateway::OpenAiError {
            error: colony_api::gateway::OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: None,
                code: self.code.to_string(),
                colony: self.details.clone(),
            },
        }
    }

    /// The body Anthropic clients parse.
    pub fn anthropic_body(&self) -> colony_api::gateway::AnthropicError {
        let kind = match self.status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        colony_api::gateway::AnthropicError {
            kind: "error".into(),
            error: colony_api::gateway::AnthropicErrorDetail {
                kind: kind.into(),
                message: self.message.clone(),
                code: self.code.to_string(),
                colony: self.details.clone(),
            },
        }
    }
}

/// Held while a call is in flight: releases the principal's concurrency slot and
/// its token estimate, recording the actual tokens.
pub struct Admission {
    gateway: Arc<Gateway>,
    principal: PrincipalId,
    estimate: u64,
    actual: AtomicU64,
}

impl Admission {
    pub fn record_tokens(&self, tokens: u64) {
        self.actual.store(tokens, Ordering::Relaxed);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut uses = self.gateway.uses.lock().expect("gateway lock");
        if let Some(entry) = uses.get_mut(&self.principal) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.held = entry.held.saturating_sub(self.estimate);
            let actual = self.actual.load(Ordering::Relaxed);
            // A call that settles in the same window counts its actual tokens.
            entry.tokens = entry.tokens.saturating_add(actual);
        }
    }
}

/// What an upstream attempt ended with.
pub enum Attempt {
    /// A response to relay (any 2xx, or a 4xx that is the caller's fault).
    Response(reqwest::Response),
    /// Every key is rate-limited (429).
    RateLimited { retry_after_secs: u64 },
    /// 5xx, timeout, or no connection: try the next model.
    Failed(String),
}

pub struct Gateway {
    pub config: GatewayConfig,
    /// One HTTP client per upstream (each trusts its own `ca_file` besides the
    /// platform's roots and `SSL_CERT_FILE`).
    clients: HashMap<String, reqwest::Client>,
    uses: Mutex<HashMap<PrincipalId, PrincipalUse>>,
    /// Next key to use per upstream, and keys cooling down after a 429.
    cursors: HashMap<String, AtomicUsize>,
    cooling: Mutex<HashMap<(String, usize), Instant>>,
    pub calls: AtomicU64,
}

impl Gateway {
    /// The gateway, or why an upstream's TLS roots cannot be loaded.
    pub fn new(config: GatewayConfig) -> Result<Arc<Gateway>, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let shared = crate::tls::upstream_client(timeout, None)?;
        let mut clients = HashMap::new();
        for upstream in config.upstreams.values() {
            let client = match &upstream.ca_file {
                Some(file) => crate::tls::upstream_client(timeout, Some(file))
                    .map_err(|message| format!("upstream {}: ca_file: {message}", upstream.name))?,
                None => shared.clone(),
            };
            clients.insert(upstream.name.clone(), client);
        }
        let cursors = config
            .upstreams
            .keys()
            .map(|name| (name.clone(), AtomicUsize::new(0)))
            .collect();
        Ok(Arc::new(Gateway {
            config,
            clients,
            uses: Mutex::new(HashMap::new()),
            cursors,
            cooling: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        }))
    }

    /// Admits a call of `estimate` tokens for `principal`, or says why not.
    pub fn admit(
        self: &Arc<Gateway>,
        principal: PrincipalId,
        estimate: u64,
        now_ms: u64,
    ) -> Result<Admission, Refusal> {
        let mut uses = self.uses.lock().expect("gateway lock");
        let entry = uses.entry(principal).or_default();
        let window_start = now_ms - now_ms % 60_000;
        if entry.window_start_ms != window_start {
            entry.window_start_ms = window_start;
            entry.tokens = 0;
        }
        let max = self.config.concurrent_per_principal;
        if entry.in_flight >= max {
            let mut refusal = Refusal::new(
                429,
                "rate_limit_exceeded",
                "rate_limited",
                format!("{} LLM calls of yours are in flight, the most allowed at once; retry when one ends", entry.in_flight),
            )
            .with("limit", "concurrent_per_principal")
            .with("in_flight", entry.in_flight)
            .with("max", max)
            .with("retry_after", 1);
            refusal.retry_after_secs = Some(1);
            return Err(refusal);
        }
        if let Some(tpm) = self.config.tokens_per_minute_per_principal {
            let used = entry.tokens + entry.held;
            if used + estimate > tpm {
                let retry = (window_start + 60_000 - now_ms).div_ceil(1_000).max(1);
                let mut refusal = Refusal::new(
                    429,
                    "rate_limit_exceeded",
                    "rate_limited",
                    format!(
                        "tokens per minute: {used} used or held this minute, this call may take {estimate}, the limit is {tpm}; retry in {retry} s"
                    ),
                )
                .with("limit", "tokens_per_minute_per_principal")
                .with("used", used)
                .with("requested", estimate)
                .with("max", tpm)
                .with("retry_after", retry);
                refusal.retry_after_secs = Some(retry);
                return Err(refusal);
            }
        }
        entry.in_flight += 1;
        entry.held += estimate;
        Ok(Admission {
            gateway: Arc::clone(self),
            principal,
            estimate,
            actual: AtomicU64::new(0),
        })
    }

    /// The models to try for `model`, in order: it, then its fallbacks (each once).
    pub fn chain(&self, model: &Model) -> Vec<Model> {
        let mut chain = vec![model.clone()];
        let mut index = 0;
        while index < chain.len() {
            for next in chain[index].fallback.clone() {
                if !chain.iter().any(|m| m.name == next) {
                    if let Some(found) = self.config.models.get(&next) {
                        chain.push(found.clone());
                    }
                }
            }
            index += 1;
        }
        chain
    }

    /// Sends `body` to one model's upstream, rotating its keys past rate limits.
    /// `path` is relative to the upstream's base URL (`/chat/completions`).
    pub async fn attempt(
        &self,
        model: &Model,
        path: &str,
        body: &Value,
        anthropic_version: Option<&str>,
    ) -> Attempt {
        let upstream = &self.config.upstreams[&model.upstream];
        // Without keys (a local server, say) requests go without credentials.
        let keys: Vec<Option<&String>> = if upstream.keys.is_empty() {
            vec![None]
        } else {
            upstream.keys.iter().map(Some).collect()
        };
        let start = self.cursors[&upstream.name].fetch_add(1, Ordering::Relaxed);
        let mut shortest_wait = u64::MAX;
        for offset in 0..keys.len() {
            let index = (start + offset) % keys.len();
            let now = Instant::now();
            {
                let cooling = self.cooling.lock().expect("gateway lock");
                if let Some(until) = cooling.get(&(upstream.name.clone(), index)) {
                    if *until > now {
                        shortest_wait = shortest_wait.min((*until - now).as_secs().max(1));
                        continue;
                    }
                }
            }
            let url = format!("{}{path}", upstream.base_url);
            let mut request = self.clients[&upstream.name].post(&url).json(body);
            if let Some(key) = keys[index] {
                request = match upstream.kind {
                    UpstreamKind::Anthropic => request.header("x-api-key", key).header(
                        "anthropic-version",
                        anthropic_version.unwrap_or("2023-06-01"),
                    ),
                    _ => request.bearer_auth(key),
                };
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            match request.send().await {
                Ok(response) if response.status().as_u16() == 429 => {
                    let wait = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(30)
                        .max(1);
                    let source = upstream
                        .key_sources
                        .get(index)
                        .map(String::as_str)
                        .unwrap_or("no key");
                    tracing::warn!(upstream = %upstream.name, key = %source, index, wait, "upstream rate-limited this key; trying the next");
                    self.cooling.lock().expect("gateway lock").insert(
                        (upstream.name.clone(), index),
                        now + Duration::from_secs(wait),
                    );
                    shortest_wait = shortest_wait.min(wait);
                }
                Ok(response) if response.status().is_server_error() => {
                    return Attempt::Failed(format!(
                        "{} answered {}",
                        upstream.name,
                        response.status()
                    ));
                }
                Ok(response) => return Attempt::Response(response),
                Err(error) => {
                    // The whole chain: a certificate that does not verify is named
                    // only by the innermost cause.
                    return Attempt::Failed(format!(
                        "{} did not answer: {}",
                        upstream.name,
                        crate::tls::error_chain(&error)
                    ));
                }
            }
        }
        Attempt::RateLimited {
            retry_after_secs: if shortest_wait == u64::MAX {
                1
            } else {
                shortest_wait
            },
        }
    }
}
