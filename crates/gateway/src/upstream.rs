//! The gateway itself and its upstreams: one HTTP client per upstream (verified
//! TLS), API keys used in turn with a cool-down after a 429, and a model's fallback
//! chain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use colony_kernel::{PrincipalId, State};
use colony_pipeline::Submitter;
use serde_json::Value;

use crate::{GatewayConfig, Model, UpstreamKind};

/// The paths under an upstream's base URL that calls go to (their URLs are parsed
/// once); any other path (`/responses/{id}`) is joined when used.
const ROUTES: &[&str] = &[
    "/chat/completions",
    "/messages",
    "/responses",
    "/embeddings",
];

/// What an upstream attempt ended with.
pub enum Attempt {
    /// A response to relay (any 2xx, or a 4xx that is the caller's fault).
    Response(reqwest::Response),
    /// Every key is rate-limited (429).
    RateLimited { retry_after_secs: u64 },
    /// 5xx, timeout, or no connection: try the next model.
    Failed(String),
}

/// The LLM gateway: its configuration, upstream clients and allowances.
pub struct Gateway {
    pub config: GatewayConfig,
    /// One HTTP client per upstream (each trusts its own `ca_file` besides the
    /// platform's roots and `SSL_CERT_FILE`).
    clients: HashMap<String, reqwest::Client>,
    /// Each upstream's URLs for the gateway's own routes, parsed once (parsing a URL,
    /// its host through IDNA, was a visible part of every call's time).
    /// By upstream, in the order of `ROUTES`.
    urls: HashMap<String, Vec<Option<reqwest::Url>>>,
    pub(crate) uses: Mutex<HashMap<PrincipalId, crate::admission::PrincipalUse>>,
    /// The kernel's state, read to check the lease of the task a call is for.
    pub(crate) state: Arc<RwLock<State>>,
    /// Reservations and settlements go through the pipeline, as every change does.
    pub(crate) submitter: Submitter,
    /// Next key to use per upstream, and keys cooling down after a 429.
    cursors: HashMap<String, AtomicUsize>,
    cooling: Mutex<HashMap<(String, usize), Instant>>,
    pub calls: AtomicU64,
    /// Responses served (`POST /v1/responses`), newest last, so that `GET` and
    /// `DELETE /v1/responses/{id}` go to the upstream that served each, for the
    /// principal it served (`crate::responses`).
    pub(crate) served: Mutex<std::collections::VecDeque<crate::responses::Served>>,
    /// Where spans go (`crate::trace`); `None` when the node traces nothing.
    pub(crate) tracer: Option<Arc<crate::trace::Tracing>>,
}

impl Gateway {
    /// The gateway, or why an upstream's TLS roots cannot be loaded.
    pub fn new(
        config: GatewayConfig,
        state: Arc<RwLock<State>>,
        submitter: Submitter,
        tracer: Option<opentelemetry::global::BoxedTracer>,
    ) -> Result<Arc<Gateway>, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let shared = crate::tls::upstream_client(timeout, None)?;
        let mut clients = HashMap::new();
        let mut urls = HashMap::new();
        for upstream in config.upstreams.values() {
            let client = match &upstream.ca_file {
                Some(file) => crate::tls::upstream_client(timeout, Some(file))
                    .map_err(|message| format!("upstream {}: ca_file: {message}", upstream.name))?,
                None => shared.clone(),
            };
            clients.insert(upstream.name.clone(), client);
            let parsed = ROUTES
                .iter()
                .map(|path| reqwest::Url::parse(&format!("{}{path}", upstream.base_url)).ok())
                .collect();
            urls.insert(upstream.name.clone(), parsed);
        }
        let cursors = config
            .upstreams
            .keys()
            .map(|name| (name.clone(), AtomicUsize::new(0)))
            .collect();
        Ok(Arc::new(Gateway {
            config,
            clients,
            urls,
            uses: Mutex::new(HashMap::new()),
            state,
            submitter,
            cursors,
            cooling: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            served: Mutex::new(std::collections::VecDeque::new()),
            tracer: tracer.map(crate::trace::Tracing::new),
        }))
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
        self.send_to(
            model,
            reqwest::Method::POST,
            path,
            Some(body),
            anthropic_version,
        )
        .await
    }

    /// Like [`Gateway::attempt`], with any method and an optional body. Traced as
    /// one span of the call (`crate::trace`) whose context the upstream gets in
    /// `traceparent`.
    pub async fn send_to(
        &self,
        model: &Model,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        anthropic_version: Option<&str>,
    ) -> Attempt {
        let upstream = &self.config.upstreams[&model.upstream];
        let span = crate::CallTrace::current(self).child(
            format!("attempt {}", model.name),
            opentelemetry::trace::SpanKind::Client,
            vec![
                opentelemetry::KeyValue::new(
                    "gen_ai.provider.name",
                    crate::trace::provider_name(upstream.kind),
                ),
                opentelemetry::KeyValue::new("gen_ai.request.model", model.upstream_model.clone()),
                opentelemetry::KeyValue::new("colony.model", model.name.clone()),
                opentelemetry::KeyValue::new("colony.upstream", upstream.name.clone()),
                opentelemetry::KeyValue::new("url.path", path.to_string()),
            ],
        );
        let Some(mut span) = span else {
            return self
                .send_once(model, method, path, body, anthropic_version, None)
                .await;
        };
        let traceparent = crate::CallTrace::traceparent(&span);
        let attempt = self
            .send_once(
                model,
                method,
                path,
                body,
                anthropic_version,
                Some(&traceparent),
            )
            .await;
        crate::trace::attempted(&mut span, &attempt);
        attempt
    }

    async fn send_once(
        &self,
        model: &Model,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        anthropic_version: Option<&str>,
        traceparent: Option<&str>,
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
            let client = &self.clients[&upstream.name];
            let parsed = ROUTES
                .iter()
                .position(|route| *route == path)
                .and_then(|at| self.urls.get(&upstream.name)?[at].clone());
            let mut request = match parsed {
                Some(url) => client.request(method.clone(), url),
                None => client.request(method.clone(), format!("{}{path}", upstream.base_url)),
            };
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(traceparent) = traceparent {
                request = request.header("traceparent", traceparent);
            }
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
