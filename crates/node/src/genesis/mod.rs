//! Reading `config/genesis/`: one file a module (`limits`, `quotas`, `governance`,
//! `tasks`, `supervisor`, `anomaly`), all through one [`Source`], whose errors name
//! the file and the line (and the message names the key).
//!
//! Errors name the file, the line and the key. Money is written in dollars as a
//! decimal string (`"50.00"`), never as a float; `"unlimited"` lifts a value.
//! The formats are documented in `docs/configuration.md` and in the shipped files.

use std::path::Path;

mod anomaly;
mod artifacts;
mod governance;
mod http;
mod limits;
mod quotas;
mod retention;
mod supervisor;
mod tasks;
#[cfg(test)]
mod tests;

pub use anomaly::DEFAULT_ANOMALY_TOML;
pub use artifacts::{
    load_artifacts, parse_artifacts, ArtifactsSetup, KickArtifact, DEFAULT_ARTIFACTS_TOML,
};
pub use governance::parse_governance;
pub use http::{load_http, parse_http};
pub use limits::parse_limits;
pub use quotas::parse_quotas;
pub use retention::{load_log_retention, parse_log_retention, parse_retention};
pub use supervisor::{load_supervisor, parse_supervisor, Profile, SupervisorConfig};
pub use tasks::parse_tasks;

pub use colony_config::{
    line_of, parse_amount, parse_duration_ms, parse_ratio, parse_resource, parse_usd, ConfigError,
    Source,
};

use colony_kernel::governance::GovernanceConfig;
use colony_kernel::tasks::TaskConfig;
use colony_kernel::{LimitSpec, QuotaConfig};

/// The shipped defaults, used when no configuration directory exists.
pub const DEFAULT_LIMITS_TOML: &str = include_str!("../../../../config/genesis/limits.toml");
pub const DEFAULT_QUOTAS_TOML: &str = include_str!("../../../../config/genesis/quotas.toml");
pub const DEFAULT_GOVERNANCE_TOML: &str =
    include_str!("../../../../config/genesis/governance.toml");
pub const DEFAULT_TASKS_TOML: &str = include_str!("../../../../config/genesis/tasks.toml");
pub const DEFAULT_RETENTION_TOML: &str = include_str!("../../../../config/genesis/retention.toml");

/// Limits and quotas as configured; the admin is added at first start.
#[derive(Clone, Debug)]
pub struct GenesisConfig {
    pub limits: Vec<LimitSpec>,
    pub quotas: QuotaConfig,
    pub governance: GovernanceConfig,
    pub tasks: TaskConfig,
    /// `retention.toml`.
    pub retention: colony_kernel::retention::RetentionConfig,
    /// `anomaly.toml` (`None`: disabled).
    pub anomaly: Option<colony_kernel::anomaly::AnomalyConfig>,
    /// Where it came from, recorded as the limits' `set_via`.
    pub source: String,
}

/// The text of the optional file `name` in `dir` with its path, `None` when there is
/// no such file; any other failure to read it is an error naming the file.
pub fn read_optional(
    dir: &Path,
    name: &str,
) -> Result<Option<(std::path::PathBuf, String)>, ConfigError> {
    let file = dir.join(name);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(Some((file, text))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError {
            file,
            line: None,
            message: format!("cannot read: {error}"),
        }),
    }
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
        tasks: match read_optional(dir, "tasks.toml")? {
            Some((file, text)) => parse_tasks(&file, &text)?,
            None => TaskConfig::defaults(),
        },
        retention: match read_optional(dir, "retention.toml")? {
            Some((file, text)) => parse_retention(&file, &text)?,
            None => colony_kernel::retention::RetentionConfig::defaults(),
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
        retention: parse_retention(
            Path::new("(built-in)/retention.toml"),
            DEFAULT_RETENTION_TOML,
        )
        .expect("shipped retention.toml is valid"),
        anomaly: anomaly::builtin().expect("shipped anomaly.toml is valid"),
        source: "built-in defaults".to_string(),
    }
}
