//! `alerts.toml`: thresholds per limit and per quota, the hysteresis, how often the
//! figures are checked, and the webhooks alerts go to. Read at every start.

use std::collections::BTreeMap;
use std::path::Path;

use colony_config::{parse_duration_ms, parse_resource, ConfigError, Source};
use colony_kernel::Resource;
use serde::Deserialize;
use toml::Spanned;

/// The shipped `alerts.toml`.
pub const DEFAULT_ALERTS_TOML: &str = include_str!("../../../config/genesis/alerts.toml");

/// Webhooks at most.
pub const WEBHOOKS_MAX: usize = 16;
/// Thresholds per rule at most.
pub const THRESHOLDS_MAX: usize = 8;

/// Which thresholds a figure alerts at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Percentages of the hard value (or of the quota), 1 to 100.
    pub percents: Vec<u8>,
    /// Also when a limit's usage reaches its soft value.
    pub soft: bool,
}

/// Which quotas are watched, and at which thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaRules {
    pub percents: Vec<u8>,
    pub resources: Vec<Resource>,
}

/// How a webhook's body is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The alert as JSON (`{"alert": {...}, "text": "..."}`).
    Json,
    /// A Slack incoming-webhook message (`{"text": "..."}`).
    Slack,
}

/// Where alerts are delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// Signs each body with HMAC-SHA256 (header `X-Colony-Signature`).
    pub secret: Option<String>,
    pub format: Format,
    pub timeout_ms: u64,
    /// Tries per delivery before it becomes a dead letter.
    pub attempts: u32,
    /// The wait after the first failure, doubled after each, at most `backoff_max_ms`.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
}

impl WebhookConfig {
    /// The URL without its path and query (which may hold a secret, as Slack's do).
    pub fn origin(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
                format!("{scheme}://{host}")
            }
            None => "(not a URL)".into(),
        }
    }
}

/// `alerts.toml` as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsConfig {
    pub check_every_ms: u64,
    /// A raised threshold clears when the figure falls this many percent below it.
    pub hysteresis_pct: u8,
    /// A threshold that cleared raises again only this long after it cleared: a
    /// figure made to swing across it (an agent reserving and releasing) alerts
    /// once per cooldown, not once per swing.
    pub cooldown_ms: u64,
    /// For every limit without its own rules.
    pub limits: Rules,
    pub per_limit: BTreeMap<String, Rules>,
    pub quotas: Option<QuotaRules>,
    pub webhooks: Vec<WebhookConfig>,
    /// A summary of each such window goes to the webhooks (`[reports] every`).
    pub report_every_ms: Option<u64>,
}

impl AlertsConfig {
    /// The rules of `limit`.
    pub fn rules_of(&self, limit: &str) -> &Rules {
        self.per_limit.get(limit).unwrap_or(&self.limits)
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        parse(
            Path::new("alerts.toml (built in)"),
            DEFAULT_ALERTS_TOML,
            &|_| None,
        )
        .expect("the shipped alerts.toml parses")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    alerts: Option<AlertsSection>,
    #[serde(default)]
    webhooks: Vec<Spanned<WebhookEntry>>,
    reports: Option<ReportsSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsSection {
    every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsSection {
    check_every: Option<Spanned<String>>,
    hysteresis: Option<Spanned<String>>,
    cooldown: Option<Spanned<String>>,
    thresholds: Option<Spanned<Vec<String>>>,
    soft: Option<bool>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<RulesEntry>>,
    quotas: Option<Spanned<QuotasEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesEntry {
    thresholds: Option<Vec<String>>,
    soft: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotasEntry {
    thresholds: Option<Vec<String>>,
    resources: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookEntry {
    url: String,
    secret: Option<String>,
    secret_env: Option<String>,
    #[serde(default = "json")]
    format: Format,
    timeout: Option<String>,
    attempts: Option<u32>,
    backoff: Option<String>,
    backoff_max: Option<String>,
}

fn json() -> Format {
    Format::Json
}

/// Reads `alerts.toml` from the configuration directory; the shipped defaults when
/// it does not exist. `env` gives the secrets named by `secret_env`.
pub fn load(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<AlertsConfig, ConfigError> {
    let file = dir.join("alerts.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) => parse(&file, &text, env),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(AlertsConfig::default()),
        Err(error) => Err(ConfigError {
            file,
            line: None,
            message: format!("cannot read: {error}"),
        }),
    }
}

/// `"80%"` as 80 (1 to 100).
fn percent(text: &str) -> Result<u8, String> {
    text.strip_suffix('%')
        .and_then(|n| n.trim().parse::<u8>().ok())
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| format!("`{text}` is not a percentage from \"1%\" to \"100%\""))
}

fn percents(list: &[String]) -> Result<Vec<u8>, String> {
    if list.len() > THRESHOLDS_MAX {
        return Err(format!("at most {THRESHOLDS_MAX} thresholds"));
    }
    let mut out = list
        .iter()
        .map(|t| percent(t))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub fn parse(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AlertsConfig, ConfigError> {
    let source = Source { file, text };
    let parsed: File = source.parse()?;
    let section = parsed.alerts.unwrap_or(AlertsSection {
        check_every: None,
        hysteresis: None,
        cooldown: None,
        thresholds: None,
        soft: None,
        limits: BTreeMap::new(),
        quotas: None,
    });
    let duration = |value: &Spanned<String>, key: &str| {
        parse_duration_ms(value.get_ref())
            .map_err(|m| source.error(Some(value.span()), format!("{key}: {m}")))
    };
    let check_every_ms = match &section.check_every {
        Some(value) => {
            let ms = duration(value, "alerts.check_every")?;
            if !(50..=3_600_000).contains(&ms) {
                return Err(source.error(Some(value.span()), "alerts.check_every: from 50ms to 1h"));
            }
            ms
        }
        None => 1_000,
    };
    let hysteresis_pct = match &section.hysteresis {
        Some(value) => match value.get_ref().as_str() {
            "0%" => 0,
            text => percent(text).ok().filter(|p| *p < 100).ok_or_else(|| {
                source.error(
                    Some(value.span()),
                    format!(
                        "alerts.hysteresis: `{text}` is not a percentage from \"0%\" to \"99%\""
                    ),
                )
            })?,
        },
        None => 5,
    };
    let cooldown_ms = match &section.cooldown {
        Some(value) => {
            let ms = duration(value, "alerts.cooldown")?;
            if ms > 86_400_000 {
                return Err(source.error(Some(value.span()), "alerts.cooldown: at most 24h"));
            }
            ms
        }
        None => 600_000,
    };
    let limits = Rules {
        percents: match &section.thresholds {
            Some(list) => percents(list.get_ref())
                .map_err(|m| source.error(Some(list.span()), format!("alerts.thresholds: {m}")))?,
            None => vec![80, 95],
        },
        soft: section.soft.unwrap_or(true),
    };
    let per_limit = parse_per_limit(&source, &section.limits, &limits)?;
    let quotas = parse_quotas(&source, section.quotas.as_ref())?;
    let webhooks = parse_webhooks(&source, &parsed.webhooks, env)?;
    let report_every_ms = match parsed.reports.and_then(|r| r.every) {
        Some(value) => {
            let ms = duration(&value, "reports.every")?;
            if !(100..=30 * 86_400_000).contains(&ms) {
                return Err(
                    source.error(Some(value.span()), "reports.every: from 100ms to 30 days")
                );
            }
            Some(ms)
        }
        None => None,
    };
    Ok(AlertsConfig {
        report_every_ms,
        check_every_ms,
        hysteresis_pct,
        cooldown_ms,
        limits,
        per_limit,
        quotas,
        webhooks,
    })
}

/// `[alerts.limits.NAME]`: rules for one limit, each a limit the kernel knows, its
/// thresholds and `soft` those of `[alerts]` unless given.
fn parse_per_limit(
    source: &Source,
    entries: &BTreeMap<String, Spanned<RulesEntry>>,
    limits: &Rules,
) -> Result<BTreeMap<String, Rules>, ConfigError> {
    let mut per_limit = BTreeMap::new();
    for (name, entry) in entries {
        if colony_kernel::builtin_limit(name).is_none() {
            return Err(source.error(
                Some(entry.span()),
                format!("alerts.limits.{name}: no such limit"),
            ));
        }
        let rules = Rules {
            percents: match &entry.get_ref().thresholds {
                Some(list) => percents(list).map_err(|m| {
                    source.error(
                        Some(entry.span()),
                        format!("alerts.limits.{name}.thresholds: {m}"),
                    )
                })?,
                None => limits.percents.clone(),
            },
            soft: entry.get_ref().soft.unwrap_or(limits.soft),
        };
        per_limit.insert(name.clone(), rules);
    }
    Ok(per_limit)
}

/// `[alerts.quotas]`: alerts on principals' quotas, if asked.
fn parse_quotas(
    source: &Source,
    entry: Option<&Spanned<QuotasEntry>>,
) -> Result<Option<QuotaRules>, ConfigError> {
    let quotas = match entry {
        Some(entry) => {
            let at = |m: String| source.error(Some(entry.span()), format!("alerts.quotas.{m}"));
            let q = entry.get_ref();
            let percents = match &q.thresholds {
                Some(list) => percents(list).map_err(|m| at(format!("thresholds: {m}")))?,
                None => vec![80, 95],
            };
            let resources = match &q.resources {
                Some(list) => list
                    .iter()
                    .map(|r| parse_resource(r).map_err(|m| at(format!("resources: {m}"))))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Resource::ALL.to_vec(),
            };
            Some(QuotaRules {
                percents,
                resources,
            })
        }
        None => None,
    };
    Ok(quotas)
}

/// `[[webhooks]]`: at most [`WEBHOOKS_MAX`], each an http(s) URL, its secret given
/// or from the environment, its timeouts and retries within bounds.
fn parse_webhooks(
    source: &Source,
    entries: &[Spanned<WebhookEntry>],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<WebhookConfig>, ConfigError> {
    if entries.len() > WEBHOOKS_MAX {
        return Err(source.error(None, format!("at most {WEBHOOKS_MAX} webhooks")));
    }
    let mut webhooks = Vec::new();
    for entry in entries {
        let at = |m: String| source.error(Some(entry.span()), format!("webhooks: {m}"));
        let w = entry.get_ref();
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            return Err(at(format!("url `{}` is not http:// or https://", w.url)));
        }
        let secret = match (&w.secret, &w.secret_env) {
            (Some(_), Some(_)) => return Err(at("give secret or secret_env, not both".into())),
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(name)) => Some(
                env(name)
                    .ok_or_else(|| at(format!("secret_env names {name}, which is not set")))?,
            ),
            (None, None) => None,
        };
        if secret.as_deref().is_some_and(str::is_empty) {
            return Err(at("an empty secret signs nothing".into()));
        }
        let ms = |value: &Option<String>, key: &str, default: u64| match value {
            Some(text) => parse_duration_ms(text).map_err(|m| at(format!("{key}: {m}"))),
            None => Ok(default),
        };
        let attempts = w.attempts.unwrap_or(6);
        if !(1..=20).contains(&attempts) {
            return Err(at("attempts: from 1 to 20".into()));
        }
        webhooks.push(WebhookConfig {
            url: w.url.clone(),
            secret,
            format: w.format,
            timeout_ms: ms(&w.timeout, "timeout", 5_000)?.clamp(100, 60_000),
            attempts,
            backoff_ms: ms(&w.backoff, "backoff", 1_000)?.clamp(10, 3_600_000),
            backoff_max_ms: ms(&w.backoff_max, "backoff_max", 300_000)?.clamp(10, 86_400_000),
        });
    }
    Ok(webhooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<AlertsConfig, ConfigError> {
        parse(Path::new("alerts.toml"), text, &|name| {
            (name == "HOOK_SECRET").then(|| "s3cret".to_string())
        })
    }

    #[test]
    fn the_shipped_file_parses() {
        let config = AlertsConfig::default();
        assert_eq!(config.limits.percents, vec![80, 95]);
        assert!(config.limits.soft);
        assert!(config.webhooks.is_empty());
    }

    #[test]
    fn rules_webhooks_and_errors_with_their_lines() {
        let config = parse_text(
            r#"
[alerts]
check_every = "200ms"
hysteresis = "10%"
[alerts.limits.llm_spend_usd]
thresholds = ["50%", "95%", "50%"]
[alerts.quotas]
thresholds = ["90%"]
resources = ["io_ops"]
[[webhooks]]
url = "https://hooks.example/services/T0/B0/XYZ?x=1"
secret_env = "HOOK_SECRET"
format = "slack"
attempts = 3
backoff = "100ms"
"#,
        )
        .unwrap();
        assert_eq!(config.check_every_ms, 200);
        assert_eq!(config.hysteresis_pct, 10);
        assert_eq!(config.rules_of("llm_spend_usd").percents, vec![50, 95]);
        assert_eq!(config.rules_of("ai_accounts").percents, vec![80, 95]);
        assert_eq!(
            config.quotas.as_ref().unwrap().resources,
            vec![Resource::IoOps]
        );
        let hook = &config.webhooks[0];
        assert_eq!(hook.secret.as_deref(), Some("s3cret"));
        assert_eq!(hook.format, Format::Slack);
        assert_eq!(hook.origin(), "https://hooks.example");

        let bad = parse_text("[alerts]\nthresholds = [\"80\"]\n").unwrap_err();
        assert_eq!(bad.line, Some(2), "{bad}");
        assert!(bad.to_string().contains("alerts.thresholds"), "{bad}");
        let bad = parse_text("[alerts.limits.no_such]\nsoft = true\n").unwrap_err();
        assert!(bad.to_string().contains("no such limit"), "{bad}");
        let bad = parse_text("[[webhooks]]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(bad.to_string().contains("not http"), "{bad}");
        let bad =
            parse_text("[[webhooks]]\nurl = \"http://x\"\nsecret_env = \"NOPE\"\n").unwrap_err();
        assert!(bad.to_string().contains("NOPE"), "{bad}");
    }
}
