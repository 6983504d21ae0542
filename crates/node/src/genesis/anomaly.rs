//! `config/genesis/anomaly.toml`: the kernel's anomaly detection (optional; the
//! shipped values apply without it).

use std::collections::BTreeMap;
use std::path::Path;

use colony_kernel::anomaly::{AnomalyConfig, Signal, SignalBound};
use serde::Deserialize;
use toml::Spanned;

use super::{parse_duration_ms, parse_usd, read_optional, ConfigError, Source};

pub const DEFAULT_ANOMALY_TOML: &str = include_str!("../../../../config/genesis/anomaly.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    anomaly: Section,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default = "enabled")]
    enabled: bool,
    window: Option<Spanned<String>>,
    warmup_windows: Option<u32>,
    factor: Option<Spanned<u64>>,
    #[serde(default)]
    signals: BTreeMap<String, Spanned<Bound>>,
}

fn enabled() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bound {
    ceiling: toml::Value,
    min: toml::Value,
}

/// `anomaly.toml` in `dir`, or the shipped file's values; `None` when disabled.
pub fn load(dir: &Path) -> Result<Option<AnomalyConfig>, ConfigError> {
    match read_optional(dir, "anomaly.toml")? {
        Some((file, text)) => parse(&file, &text),
        None => builtin(),
    }
}

/// The shipped file's values.
pub fn builtin() -> Result<Option<AnomalyConfig>, ConfigError> {
    parse(Path::new("(built-in)/anomaly.toml"), DEFAULT_ANOMALY_TOML)
}

pub fn parse(file: &Path, text: &str) -> Result<Option<AnomalyConfig>, ConfigError> {
    let source = Source { file, text };
    let parsed: File = source.parse()?;
    let section = parsed.anomaly;
    if !section.enabled {
        return Ok(None);
    }
    let mut config = AnomalyConfig::defaults();
    if let Some(window) = &section.window {
        config.window_ms = parse_duration_ms(window.get_ref())
            .map_err(|m| source.error(Some(window.span()), format!("anomaly.window: {m}")))?;
        if config.window_ms == 0 {
            return Err(source.error(
                Some(window.span()),
                "anomaly.window: must be longer than zero",
            ));
        }
    }
    if let Some(warmup) = section.warmup_windows {
        config.warmup_windows = warmup;
    }
    if let Some(factor) = &section.factor {
        if *factor.get_ref() < 2 {
            return Err(source.error(
                Some(factor.span()),
                "anomaly.factor: at least 2 (a steady principal sits at 1)",
            ));
        }
        config.factor = *factor.get_ref();
    }
    for (name, bound) in &section.signals {
        let span = bound.span();
        let (signal, money) = match name.as_str() {
            "spend_usd" => (Signal::SpendMicroUsd, true),
            other => match Signal::parse(other).filter(|s| *s != Signal::SpendMicroUsd) {
                Some(signal) => (signal, false),
                None => {
                    return Err(source.error(
                        Some(span),
                        format!(
                            "anomaly.signals.{name}: unknown signal; known signals are commands, denials, spend_usd, failed_tasks, publishes"
                        ),
                    ))
                }
            },
        };
        let value = |key: &str, value: &toml::Value| -> Result<u64, ConfigError> {
            let parsed = match (value, money) {
                (toml::Value::Integer(n), false) if *n >= 0 => Ok(*n as u64),
                (toml::Value::String(text), true) => parse_usd(text),
                (_, true) => Err("money is dollars in a string, like \"2.00\"".into()),
                _ => Err("a count, a whole number of at least 0".into()),
            };
            parsed.map_err(|m| {
                source.error(
                    Some(span.clone()),
                    format!("anomaly.signals.{name}.{key}: {m}"),
                )
            })
        };
        let bound = bound.get_ref();
        let (ceiling, min) = (value("ceiling", &bound.ceiling)?, value("min", &bound.min)?);
        if min > ceiling {
            return Err(source.error(
                Some(span),
                format!("anomaly.signals.{name}: min ({min}) is above ceiling ({ceiling})"),
            ));
        }
        config.bounds[Signal::ALL
            .iter()
            .position(|s| *s == signal)
            .expect("known")] = SignalBound { ceiling, min };
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_the_kernels_defaults() {
        assert_eq!(builtin().unwrap(), Some(AnomalyConfig::defaults()));
    }

    #[test]
    fn bad_files_are_refused_with_file_and_line() {
        let check = |text: &str, expected: &str| {
            let error = parse(Path::new("anomaly.toml"), text).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{error} does not say {expected}"
            );
        };
        check("[anomaly]\nfactor = 1\n", "at least 2");
        check("[anomaly]\nwindow = \"soon\"\n", "anomaly.window");
        check(
            "[anomaly]\n[anomaly.signals.typos]\nceiling = 1\nmin = 1\n",
            "unknown signal",
        );
        check(
            "[anomaly]\n[anomaly.signals.spend_usd]\nceiling = 5\nmin = 1\n",
            "dollars in a string",
        );
        check(
            "[anomaly]\n[anomaly.signals.commands]\nceiling = 5\nmin = 10\n",
            "above ceiling",
        );
        assert_eq!(
            parse(Path::new("a"), "[anomaly]\nenabled = false\n").unwrap(),
            None
        );
    }
}
