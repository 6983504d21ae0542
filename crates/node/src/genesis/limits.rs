//! `limits.toml`: the system-wide limits installed at first start.

use std::collections::BTreeMap;
use std::path::Path;

use colony_kernel::{builtin_limit, LimitKind, LimitSpec, OnSoft};
use serde::Deserialize;
use toml::Spanned;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    limits: BTreeMap<String, Spanned<LimitEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitEntry {
    soft: Option<Spanned<toml::Value>>,
    hard: Option<Spanned<toml::Value>>,
    on_soft: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    queue_max: Option<u32>,
    brake_floor: Option<Spanned<toml::Value>>,
    description: Option<String>,
}

/// Parses the text of `limits.toml`.
pub fn parse_limits(file: &Path, text: &str) -> Result<Vec<LimitSpec>, ConfigError> {
    let source = Source { file, text };
    let parsed: LimitsFile = source.parse()?;
    let mut specs: Vec<LimitSpec> = Vec::new();
    for (name, entry) in parsed.limits {
        let span = entry.span();
        let entry = entry.into_inner();
        let Some(builtin) = builtin_limit(&name) else {
            let known: Vec<&str> = colony_kernel::BUILTIN_LIMITS
                .iter()
                .map(|l| l.name)
                .collect();
            return Err(source.error(
                Some(span),
                format!(
                    "limits.{name}: unknown limit; known limits are {}",
                    known.join(", ")
                ),
            ));
        };
        if specs.iter().any(|spec| spec.name == builtin.name) {
            return Err(source.error(
                Some(span),
                format!(
                    "limits.{name}: `{}` is set twice (once under a Hypernet name)",
                    builtin.name
                ),
            ));
        }
        let money = builtin.unit == "micro_usd";
        let value = |field: &str,
                     value: &Option<Spanned<toml::Value>>|
         -> Result<Option<u64>, ConfigError> {
            let Some(value) = value else { return Ok(None) };
            parse_amount(value.get_ref(), money).map_err(|message| {
                source.error(
                    Some(value.span()),
                    format!("limits.{name}.{field}: {message}"),
                )
            })
        };
        let soft = value("soft", &entry.soft)?;
        let hard = value("hard", &entry.hard)?;
        // A floor constrains brakes only; values below it may be set here or voted.
        let brake_floor = value("brake_floor", &entry.brake_floor)?.unwrap_or(0);
        if let (Some(soft_value), Some(hard_value)) = (soft, hard) {
            if soft_value > hard_value {
                let at = entry.soft.as_ref().map(|s| s.span());
                return Err(source.error(
                    at,
                    format!("limits.{name}.soft ({soft_value}) is above hard ({hard_value})"),
                ));
            }
        }
        let on_soft = match entry
            .on_soft
            .as_ref()
            .map(|s| (s.get_ref().as_str(), s.span()))
        {
            None | Some(("warn", _)) => OnSoft::Warn,
            Some(("queue", span)) if builtin.kind == LimitKind::Rate => {
                return Err(source.error(
                    Some(span),
                    format!(
                        "limits.{name}.on_soft: `queue` applies to count limits; {name} is a rate"
                    ),
                ));
            }
            Some(("queue", _)) => OnSoft::Queue,
            Some((other, span)) => {
                return Err(source.error(
                    Some(span),
                    format!("limits.{name}.on_soft: `{other}` is not `warn` or `queue`"),
                ));
            }
        };
        let window_ms = match &entry.window {
            None => builtin.default_window_ms,
            Some(_) if builtin.kind == LimitKind::Count => {
                return Err(source.error(
                    Some(entry.window.as_ref().expect("some").span()),
                    format!("limits.{name}.window: {name} counts, it has no window"),
                ));
            }
            Some(window) => Some(parse_duration_ms(window.get_ref()).map_err(|message| {
                source.error(
                    Some(window.span()),
                    format!("limits.{name}.window: {message}"),
                )
            })?),
        };
        specs.push(LimitSpec {
            name: builtin.name.to_string(),
            unit: builtin.unit.to_string(),
            description: entry
                .description
                .unwrap_or_else(|| builtin.description.to_string()),
            soft,
            hard,
            on_soft,
            window_ms,
            queue_max: entry.queue_max.unwrap_or(1_000),
            brake_floor,
        });
    }
    Ok(specs)
}
