//! Reading `config/genesis/`: one file a module (`limits`, `quotas`, `governance`,
//! `tasks`, `supervisor`, `anomaly`), all through one [`Source`], whose errors name
//! the file and the line (and the message names the key).
//!
//! Errors name the file, the line and the key. Money is written in dollars as a
//! decimal string (`"50.00"`), never as a float; `"unlimited"` lifts a value.
//! The formats are documented in `docs/configuration.md` and in the shipped files.

use std::path::{Path, PathBuf};

mod anomaly;
mod governance;
mod limits;
mod quotas;
mod supervisor;
mod tasks;
#[cfg(test)]
mod tests;

pub use anomaly::DEFAULT_ANOMALY_TOML;
pub use governance::parse_governance;
pub use limits::parse_limits;
pub use quotas::parse_quotas;
pub use supervisor::{load_supervisor, parse_supervisor};
pub use tasks::parse_tasks;

use colony_kernel::governance::{GovernanceConfig, Ratio};
use colony_kernel::tasks::TaskConfig;
use colony_kernel::{LimitSpec, QuotaConfig, Resource, MICRO_USD_PER_USD};

/// The shipped defaults, used when no configuration directory exists.
pub const DEFAULT_LIMITS_TOML: &str = include_str!("../../../../config/genesis/limits.toml");
pub const DEFAULT_QUOTAS_TOML: &str = include_str!("../../../../config/genesis/quotas.toml");
pub const DEFAULT_GOVERNANCE_TOML: &str =
    include_str!("../../../../config/genesis/governance.toml");
pub const DEFAULT_TASKS_TOML: &str = include_str!("../../../../config/genesis/tasks.toml");

/// A configuration file that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Limits and quotas as configured; the admin is added at first start.
#[derive(Clone, Debug)]
pub struct GenesisConfig {
    pub limits: Vec<LimitSpec>,
    pub quotas: QuotaConfig,
    pub governance: GovernanceConfig,
    pub tasks: TaskConfig,
    /// `anomaly.toml` (`None`: disabled).
    pub anomaly: Option<colony_kernel::anomaly::AnomalyConfig>,
    /// Where it came from, recorded as the limits' `set_via`.
    pub source: String,
}

/// Reads `limits.toml` and `quotas.toml` from `dir`.
pub fn load_dir(dir: &Path) -> Result<GenesisConfig, ConfigError> {
    let read = |name: &str| {
        let file = dir.join(name);
        std::fs::read_to_string(&file)
            .map(|text| (file.clone(), text))
            .map_err(|error| ConfigError {
                file,
                line: None,
                message: format!("cannot read: {error}"),
            })
    };
    let (limits_file, limits_text) = read("limits.toml")?;
    let (quotas_file, quotas_text) = read("quotas.toml")?;
    let (governance_file, governance_text) = read("governance.toml")?;
    Ok(GenesisConfig {
        limits: parse_limits(&limits_file, &limits_text)?,
        quotas: parse_quotas(&quotas_file, &quotas_text)?,
        governance: parse_governance(&governance_file, &governance_text)?,
        tasks: match std::fs::read_to_string(dir.join("tasks.toml")) {
            Ok(text) => parse_tasks(&dir.join("tasks.toml"), &text)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => TaskConfig::defaults(),
            Err(error) => {
                return Err(ConfigError {
                    file: dir.join("tasks.toml"),
                    line: None,
                    message: format!("cannot read: {error}"),
                })
            }
        },
        anomaly: anomaly::load(dir)?,
        source: dir.display().to_string(),
    })
}

/// Parses the text of `anomaly.toml` (`None`: detection disabled).
pub fn parse_anomaly(
    file: &Path,
    text: &str,
) -> Result<Option<colony_kernel::anomaly::AnomalyConfig>, ConfigError> {
    anomaly::parse(file, text)
}

/// The shipped defaults, compiled into the binary.
pub fn builtin_defaults() -> GenesisConfig {
    let file = Path::new("(built-in)/limits.toml");
    GenesisConfig {
        limits: parse_limits(file, DEFAULT_LIMITS_TOML).expect("shipped limits.toml is valid"),
        quotas: parse_quotas(Path::new("(built-in)/quotas.toml"), DEFAULT_QUOTAS_TOML)
            .expect("shipped quotas.toml is valid"),
        governance: parse_governance(
            Path::new("(built-in)/governance.toml"),
            DEFAULT_GOVERNANCE_TOML,
        )
        .expect("shipped governance.toml is valid"),
        tasks: parse_tasks(Path::new("(built-in)/tasks.toml"), DEFAULT_TASKS_TOML)
            .expect("shipped tasks.toml is valid"),
        anomaly: anomaly::builtin().expect("shipped anomaly.toml is valid"),
        source: "built-in defaults".to_string(),
    }
}

/// A configuration file's text, and where it came from: every parser reads through
/// it, so that every error names the file and the line the same way.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at `span` of the text (the line is counted from it).
    pub(crate) fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| line_of(self.text, s.start)),
            message: message.into(),
        }
    }

    /// The text as TOML of type `T`; a syntax or type error names its line.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| self.error(e.span(), e.message()))
    }
}

/// `"2/3"` or `"75%"`, at most one.
pub(crate) fn parse_ratio(text: &str) -> Result<Ratio, String> {
    let bad = || format!("`{text}` is not a ratio like \"2/3\" or \"75%\"");
    let (numerator, denominator) = match text.strip_suffix('%') {
        Some(percent) => (percent.trim().parse::<u64>().map_err(|_| bad())?, 100),
        None => {
            let (n, d) = text.split_once('/').ok_or_else(bad)?;
            (
                n.trim().parse::<u64>().map_err(|_| bad())?,
                d.trim().parse::<u64>().map_err(|_| bad())?,
            )
        }
    };
    if denominator == 0 || numerator > denominator {
        return Err(format!("`{text}` must be between 0 and 1"));
    }
    Ok(Ratio::new(numerator, denominator))
}

pub(crate) fn parse_resource(key: &str) -> Result<Resource, String> {
    Resource::parse(key).ok_or_else(|| {
        let known: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown resource; known resources are {}", known.join(", "))
    })
}

/// An amount: a non-negative integer, `"unlimited"`, or for money a decimal string
/// of dollars with at most six decimals. `None` means unlimited.
pub(crate) fn parse_amount(value: &toml::Value, money: bool) -> Result<Option<u64>, String> {
    match value {
        toml::Value::String(text) if text == "unlimited" => Ok(None),
        toml::Value::String(text) if money => parse_usd(text).map(Some),
        toml::Value::Integer(number) if !money => u64::try_from(*number)
            .map(Some)
            .map_err(|_| format!("{number} is negative")),
        toml::Value::Integer(_) => {
            Err("money is written in dollars as a string, like \"50.00\"".into())
        }
        toml::Value::Float(_) => {
            Err("floats are not accepted; write an integer (or dollars as a string)".into())
        }
        other => Err(format!(
            "expected an integer or \"unlimited\", found {}",
            other.type_str()
        )),
    }
}

/// Parses dollars like `"12.5"` into micro-dollars, exactly.
pub fn parse_usd(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not an amount of dollars like \"12.50\"");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if fraction.len() > 6 {
        return Err(format!(
            "`{text}` has more than six decimals (a micro-dollar is the smallest unit)"
        ));
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let fraction_micro: u64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(MICRO_USD_PER_USD)
        .and_then(|w| w.checked_add(fraction_micro))
        .ok_or_else(bad)
}

pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like \"1m\" or \"24h\": {e}"))?;
    let ms = duration.as_millis() as u64;
    if ms == 0 {
        return Err("a duration must be longer than zero".into());
    }
    Ok(ms)
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}
