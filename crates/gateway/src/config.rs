//! `config/genesis/providers.toml`: upstreams, models with prices, aliases, routing
//! rules and fallback chains for the LLM gateway. Optional and read at every start
//! (API keys come from environment variables named here, never from the file); the
//! built-in copy of the shipped file applies when it is absent.

use std::collections::BTreeMap;
use std::path::Path;

use colony_kernel::Priority;
use serde::Deserialize;

use colony_config::{parse_duration_ms, parse_usd, ConfigError, Source};

pub const DEFAULT_PROVIDERS_TOML: &str = include_str!("../../../config/genesis/providers.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Any OpenAI-compatible server: OpenAI, Ollama, vLLM, llama.cpp, LM Studio,
    /// OpenRouter...
    OpenAi,
    Anthropic,
    /// Colony's deterministic offline provider, for tests and demos.
    Scripted,
}

#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    pub kind: UpstreamKind,
    /// Without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Keys, in rotation order (read from the environment at start).
    pub keys: Vec<String>,
    /// Names of the variables the keys came from (for messages; never the keys).
    pub key_sources: Vec<String>,
    /// A PEM file of extra roots this upstream's certificate may chain to (besides
    /// the platform's and `SSL_CERT_FILE`'s), relative to `providers.toml`.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub name: String,
    pub upstream: String,
    /// The name the upstream knows it by.
    pub upstream_model: String,
    /// Micro-dollars per million tokens (= dollars per token, times a million).
    pub input_micro_usd_per_million: u64,
    pub output_micro_usd_per_million: u64,
    /// The price of input tokens the upstream served from its prompt cache
    /// (`cached_input_usd_per_million`; the input price when not set).
    pub cached_input_micro_usd_per_million: u64,
    /// The price of input tokens the upstream wrote to its prompt cache
    /// (`cache_write_usd_per_million`, Anthropic's 1.25x; the input price when not set).
    pub cache_write_micro_usd_per_million: u64,
    /// Reserved for the answer when a request names no `max_tokens`.
    pub max_output_tokens: u64,
    /// Models tried in order when this one's upstream fails (5xx, timeout,
    /// every key rate-limited).
    pub fallback: Vec<String>,
}

/// The old swarm's `model_routing` rule: for a call made for a task (header
/// `X-Colony-Task`) that asks for model `auto`.
#[derive(Clone, Debug)]
pub struct RoutingRule {
    pub if_tags_any: Vec<String>,
    pub if_tags_all: Vec<String>,
    pub min_priority: Option<Priority>,
    pub model: String,
}

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub upstreams: BTreeMap<String, Upstream>,
    pub models: BTreeMap<String, Model>,
    pub aliases: BTreeMap<String, String>,
    pub routing: Vec<RoutingRule>,
    /// Model used by `auto` when no rule matches.
    pub default_model: String,
    pub timeout_ms: u64,
    /// Largest request body, in bytes.
    pub request_bytes_max: usize,
    /// Calls one principal may have in flight.
    pub concurrent_per_principal: u64,
    /// Tokens (estimated before, actual after) one principal may use per minute.
    pub tokens_per_minute_per_principal: Option<u64>,
    /// Whether the decision log gets the prompt (off: only sizes and costs).
    pub log_prompts: bool,
    /// Where the file came from.
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gateway: GatewaySection,
    #[serde(default)]
    upstreams: Vec<toml::Spanned<UpstreamEntry>>,
    #[serde(default)]
    models: Vec<toml::Spanned<ModelEntry>>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    routing: Vec<toml::Spanned<RoutingEntry>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewaySection {
    default_model: Option<String>,
    timeout: Option<String>,
    request_bytes_max: Option<usize>,
    concurrent_per_principal: Option<u64>,
    tokens_per_minute_per_principal: Option<toml::Value>,
    log_prompts: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamEntry {
    name: String,
    kind: String,
    base_url: Option<String>,
    /// A variable whose value, when set, replaces `base_url`.
    base_url_env: Option<String>,
    #[serde(default)]
    api_key_envs: Vec<String>,
    /// Extra PEM roots for this upstream's certificate.
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    name: String,
    upstream: String,
    upstream_model: Option<String>,
    input_usd_per_million: String,
    output_usd_per_million: String,
    cached_input_usd_per_million: Option<String>,
    cache_write_usd_per_million: Option<String>,
    max_output_tokens: Option<u64>,
    #[serde(default)]
    fallback: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingEntry {
    #[serde(default)]
    if_tags_any: Vec<String>,
    #[serde(default)]
    if_tags_all: Vec<String>,
    min_priority: Option<String>,
    model: String,
}

impl GatewayConfig {
    /// `providers.toml` from `dir`, or the shipped defaults; keys from `env`.
    pub fn load(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigError> {
        let file = dir.join("providers.toml");
        match std::fs::read_to_string(&file) {
            Ok(text) => GatewayConfig::parse(&file, &text, env),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => GatewayConfig::parse(
                Path::new("built-in providers.toml"),
                DEFAULT_PROVIDERS_TOML,
                env,
            ),
            Err(error) => Err(ConfigError {
                file,
                line: None,
                message: format!("cannot read: {error}"),
            }),
        }
    }

    pub fn parse(
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigError> {
        let source = Source { file, text };
        let parsed: File = source.parse()?;
        let upstreams = parse_upstreams(&source, parsed.upstreams, env)?;
        let models = parse_models(&source, &parsed.models, &upstreams)?;
        for (alias, target) in &parsed.aliases {
            if !models.contains_key(target) {
                return Err(source.error(None, format!("alias {alias}: {target:?} is not a model")));
            }
        }
        let routing = parse_routing(&source, parsed.routing, &models)?;
        let section = parsed.gateway;
        let default_model = section
            .default_model
            .or_else(|| models.keys().next().cloned())
            .unwrap_or_default();
        if !models.is_empty()
            && !models.contains_key(&default_model)
            && !parsed.aliases.contains_key(&default_model)
        {
            return Err(source.error(
                None,
                format!("gateway.default_model {default_model:?} is not a model"),
            ));
        }
        let tokens_per_minute_per_principal = match section.tokens_per_minute_per_principal {
            None => Some(1_000_000),
            Some(toml::Value::String(s)) if s == "unlimited" => None,
            Some(toml::Value::Integer(n)) if n > 0 => Some(n as u64),
            Some(other) => {
                return Err(source.error(
                    None,
                    format!("gateway.tokens_per_minute_per_principal: expected a positive integer or \"unlimited\", found {other}"),
                ))
            }
        };
        Ok(GatewayConfig {
            upstreams,
            models,
            aliases: parsed.aliases,
            routing,
            default_model,
            timeout_ms: match section.timeout {
                Some(text) => parse_duration_ms(&text)
                    .map_err(|m| source.error(None, format!("gateway.timeout: {m}")))?,
                None => 120_000,
            },
            request_bytes_max: section.request_bytes_max.unwrap_or(4 << 20),
            concurrent_per_principal: section.concurrent_per_principal.unwrap_or(32),
            tokens_per_minute_per_principal,
            log_prompts: section.log_prompts.unwrap_or(false),
            source: file.display().to_string(),
        })
    }

    /// The model a request's `model` names (through aliases).
    pub fn resolve(&self, name: &str) -> Option<&Model> {
        let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.models.get(name)
    }

    /// The model for `auto` on a task with these tags and priority.
    pub fn route(&self, tags: &[String], priority: Priority) -> &str {
        for rule in &self.routing {
            let any =
                rule.if_tags_any.is_empty() || rule.if_tags_any.iter().any(|t| tags.contains(t));
            let all = rule.if_tags_all.iter().all(|t| tags.contains(t));
            let prio = rule.min_priority.is_none_or(|min| priority >= min);
            if any && all && prio {
                return &rule.model;
            }
        }
        &self.default_model
    }
}

/// `[[upstreams]]`: each kind known, a base URL unless scripted, its keys from the
/// environment (a variable may hold several, separated by commas).
fn parse_upstreams(
    source: &Source,
    entries: Vec<toml::Spanned<UpstreamEntry>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Upstream>, ConfigError> {
    let file = source.file;
    let mut upstreams = BTreeMap::new();
    for entry in entries {
        let span = entry.span();
        let entry = entry.into_inner();
        let kind = match entry.kind.as_str() {
            "openai" => UpstreamKind::OpenAi,
            "anthropic" => UpstreamKind::Anthropic,
            "scripted" => UpstreamKind::Scripted,
            other => {
                return Err(source.error(
                    Some(span),
                    format!(
                        "upstream {}: kind {other:?} is not openai, anthropic or scripted",
                        entry.name
                    ),
                ))
            }
        };
        let base_url = entry
            .base_url_env
            .as_deref()
            .and_then(|name| env(name).filter(|v| !v.is_empty()))
            .or(entry.base_url.clone())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        if kind != UpstreamKind::Scripted && base_url.is_empty() {
            return Err(source.error(
                Some(span),
                format!(
                    "upstream {}: needs base_url (or base_url_env set)",
                    entry.name
                ),
            ));
        }
        let mut keys = Vec::new();
        let mut key_sources = Vec::new();
        for name in &entry.api_key_envs {
            // A variable may hold several keys separated by commas.
            if let Some(value) = env(name) {
                for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    keys.push(key.to_string());
                    key_sources.push(name.clone());
                }
            }
        }
        upstreams.insert(
            entry.name.clone(),
            Upstream {
                name: entry.name,
                kind,
                base_url,
                keys,
                key_sources,
                ca_file: entry.ca_file.as_deref().map(|name| {
                    let path = std::path::Path::new(name);
                    match file.parent() {
                        Some(dir) if path.is_relative() => dir.join(path),
                        _ => path.to_path_buf(),
                    }
                }),
            },
        );
    }
    Ok(upstreams)
}

/// `[[models]]`: each on a known upstream, its prices, and fallbacks that are models.
fn parse_models(
    source: &Source,
    entries: &[toml::Spanned<ModelEntry>],
    upstreams: &BTreeMap<String, Upstream>,
) -> Result<BTreeMap<String, Model>, ConfigError> {
    let mut models = BTreeMap::new();
    for entry in entries {
        let span = entry.span();
        let entry = entry.get_ref();
        if !upstreams.contains_key(&entry.upstream) {
            return Err(source.error(
                Some(span),
                format!(
                    "model {}: no upstream named {:?}",
                    entry.name, entry.upstream
                ),
            ));
        }
        let price = |text: &str| {
            parse_usd(text)
                .map_err(|m| source.error(Some(span.clone()), format!("model {}: {m}", entry.name)))
        };
        models.insert(
            entry.name.clone(),
            Model {
                name: entry.name.clone(),
                upstream: entry.upstream.clone(),
                upstream_model: entry
                    .upstream_model
                    .clone()
                    .unwrap_or_else(|| entry.name.clone()),
                input_micro_usd_per_million: price(&entry.input_usd_per_million)?,
                output_micro_usd_per_million: price(&entry.output_usd_per_million)?,
                cached_input_micro_usd_per_million: match &entry.cached_input_usd_per_million {
                    Some(cached) => price(cached)?,
                    None => price(&entry.input_usd_per_million)?,
                },
                cache_write_micro_usd_per_million: match &entry.cache_write_usd_per_million {
                    Some(written) => price(written)?,
                    None => price(&entry.input_usd_per_million)?,
                },
                max_output_tokens: entry.max_output_tokens.unwrap_or(4_096),
                fallback: entry.fallback.clone(),
            },
        );
    }
    for entry in entries {
        for next in &entry.get_ref().fallback {
            if !models.contains_key(next) {
                return Err(source.error(
                    Some(entry.span()),
                    format!(
                        "model {}: fallback {next:?} is not a model",
                        entry.get_ref().name
                    ),
                ));
            }
        }
    }
    Ok(models)
}

/// `[[routing]]`: rules that name models, with a known priority.
fn parse_routing(
    source: &Source,
    entries: Vec<toml::Spanned<RoutingEntry>>,
    models: &BTreeMap<String, Model>,
) -> Result<Vec<RoutingRule>, ConfigError> {
    let mut routing = Vec::new();
    for entry in entries {
        let span = entry.span();
        let entry = entry.into_inner();
        if !models.contains_key(&entry.model) {
            return Err(source.error(
                Some(span),
                format!("routing rule: {:?} is not a model", entry.model),
            ));
        }
        let min_priority = match entry.min_priority.as_deref() {
            None => None,
            Some("low") => Some(Priority::Low),
            Some("normal") => Some(Priority::Normal),
            Some("high") => Some(Priority::High),
            Some("critical") => Some(Priority::Critical),
            Some(other) => {
                return Err(source.error(Some(span), format!("routing rule: priority {other:?}")))
            }
        };
        routing.push(RoutingRule {
            if_tags_any: entry.if_tags_any,
            if_tags_all: entry.if_tags_all,
            min_priority,
            model: entry.model,
        });
    }
    Ok(routing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_shipped_file_reads_openai_settings_from_the_environment() {
        let config = GatewayConfig::parse(
            Path::new("providers.toml"),
            DEFAULT_PROVIDERS_TOML,
            &env(&[
                ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
                ("OPENAI_API_KEY", "k1,k2"),
            ]),
        )
        .unwrap();
        let openai = &config.upstreams["openai"];
        assert_eq!(openai.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(openai.keys, ["k1", "k2"]);
        let mini = config.resolve("gpt-4o-mini").unwrap();
        assert_eq!(mini.input_micro_usd_per_million, 150_000);
        assert_eq!(mini.output_micro_usd_per_million, 600_000);
        assert_eq!(
            config
                .resolve("gpt-4o")
                .unwrap()
                .output_micro_usd_per_million,
            10_000_000
        );
        assert!(config.resolve("colony-scripted").is_some());
        // Without the variables, the public endpoint and no key.
        let bare = GatewayConfig::parse(Path::new("p"), DEFAULT_PROVIDERS_TOML, &env(&[])).unwrap();
        assert_eq!(
            bare.upstreams["openai"].base_url,
            "https://api.openai.com/v1"
        );
        assert!(bare.upstreams["openai"].keys.is_empty());
    }

    #[test]
    fn routing_rules_first_match_wins() {
        let text = r#"
[[upstreams]]
name = "s"
kind = "scripted"
[[models]]
name = "big"
upstream = "s"
input_usd_per_million = "5"
output_usd_per_million = "15"
[[models]]
name = "small"
upstream = "s"
input_usd_per_million = "0.1"
output_usd_per_million = "0.2"
[gateway]
default_model = "small"
[[routing]]
if_tags_any = ["code", "math"]
min_priority = "high"
model = "big"
"#;
        let config = GatewayConfig::parse(Path::new("p"), text, &env(&[])).unwrap();
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(config.route(&tags(&["code"]), Priority::High), "big");
        assert_eq!(config.route(&tags(&["code"]), Priority::Normal), "small");
        assert_eq!(config.route(&tags(&["docs"]), Priority::Critical), "small");
    }

    #[test]
    fn errors_name_the_line() {
        let text = "[[upstreams]]\nname = \"s\"\nkind = \"scripted\"\n\n[[models]]\nname = \"m\"\nupstream = \"nope\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\n";
        let error = GatewayConfig::parse(Path::new("providers.toml"), text, &env(&[])).unwrap_err();
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.message.contains("no upstream named"), "{error}");
    }
}
