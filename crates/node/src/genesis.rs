//! Reading `config/genesis/`: `limits.toml`, `quotas.toml` and `governance.toml`.
//!
//! Errors name the file, the line and the key. Money is written in dollars as a
//! decimal string (`"50.00"`), never as a float; `"unlimited"` lifts a value.
//! The formats are documented in `docs/configuration.md` and in the shipped files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use colony_kernel::governance::{ChangeKind, GovernanceConfig, Ratio, RelaxationConfig, VoteRule};
use colony_kernel::tasks::TaskConfig;
use colony_kernel::{
    builtin_limit, LimitKind, LimitSpec, OnSoft, PrincipalKind, QuotaConfig, Resource, Role,
    MICRO_USD_PER_USD,
};
use serde::Deserialize;
use toml::Spanned;

/// The shipped defaults, used when no configuration directory exists.
pub const DEFAULT_LIMITS_TOML: &str = include_str!("../../../config/genesis/limits.toml");
pub const DEFAULT_QUOTAS_TOML: &str = include_str!("../../../config/genesis/quotas.toml");
pub const DEFAULT_GOVERNANCE_TOML: &str = include_str!("../../../config/genesis/governance.toml");
pub const DEFAULT_TASKS_TOML: &str = include_str!("../../../config/genesis/tasks.toml");

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
        anomaly: crate::anomaly_config::load(dir)?,
        source: dir.display().to_string(),
    })
}

/// Parses the text of `anomaly.toml` (`None`: detection disabled).
pub fn parse_anomaly(
    file: &Path,
    text: &str,
) -> Result<Option<colony_kernel::anomaly::AnomalyConfig>, ConfigError> {
    crate::anomaly_config::parse(file, text)
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
        anomaly: crate::anomaly_config::builtin().expect("shipped anomaly.toml is valid"),
        source: "built-in defaults".to_string(),
    }
}

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
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let parsed: LimitsFile =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().to_string()))?;
    let mut specs: Vec<LimitSpec> = Vec::new();
    for (name, entry) in parsed.limits {
        let span = entry.span();
        let entry = entry.into_inner();
        let Some(builtin) = builtin_limit(&name) else {
            let known: Vec<&str> = colony_kernel::BUILTIN_LIMITS
                .iter()
                .map(|l| l.name)
                .collect();
            return Err(error(
                Some(span),
                format!(
                    "limits.{name}: unknown limit; known limits are {}",
                    known.join(", ")
                ),
            ));
        };
        if specs.iter().any(|spec| spec.name == builtin.name) {
            return Err(error(
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
                error(
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
                return Err(error(
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
                return Err(error(
                    Some(span),
                    format!(
                        "limits.{name}.on_soft: `queue` applies to count limits; {name} is a rate"
                    ),
                ));
            }
            Some(("queue", _)) => OnSoft::Queue,
            Some((other, span)) => {
                return Err(error(
                    Some(span),
                    format!("limits.{name}.on_soft: `{other}` is not `warn` or `queue`"),
                ));
            }
        };
        let window_ms = match &entry.window {
            None => builtin.default_window_ms,
            Some(_) if builtin.kind == LimitKind::Count => {
                return Err(error(
                    Some(entry.window.as_ref().expect("some").span()),
                    format!("limits.{name}.window: {name} counts, it has no window"),
                ));
            }
            Some(window) => Some(parse_duration_ms(window.get_ref()).map_err(|message| {
                error(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotasFile {
    #[serde(default)]
    ledger: LedgerSection,
    #[serde(default)]
    windows: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    defaults: BTreeMap<String, Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerSection {
    reservation_ttl: Option<Spanned<String>>,
    reservation_ttl_max: Option<Spanned<String>>,
    reservations_per_principal_max: Option<u32>,
}

/// Parses the text of `quotas.toml`.
pub fn parse_quotas(file: &Path, text: &str) -> Result<QuotaConfig, ConfigError> {
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let parsed: QuotasFile =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().to_string()))?;
    let duration =
        |key: &str, value: &Option<Spanned<String>>, default_ms: u64| -> Result<u64, ConfigError> {
            match value {
                None => Ok(default_ms),
                Some(value) => parse_duration_ms(value.get_ref())
                    .map_err(|m| error(Some(value.span()), format!("{key}: {m}"))),
            }
        };
    let reservation_ttl_ms = duration(
        "ledger.reservation_ttl",
        &parsed.ledger.reservation_ttl,
        300_000,
    )?;
    let reservation_ttl_max_ms = duration(
        "ledger.reservation_ttl_max",
        &parsed.ledger.reservation_ttl_max,
        3_600_000,
    )?;
    if reservation_ttl_ms > reservation_ttl_max_ms {
        return Err(error(
            parsed.ledger.reservation_ttl.as_ref().map(|s| s.span()),
            "ledger.reservation_ttl is above ledger.reservation_ttl_max".into(),
        ));
    }
    let mut flow_window_ms = BTreeMap::new();
    for (key, value) in &parsed.windows {
        let resource = parse_resource(key)
            .map_err(|m| error(Some(value.span()), format!("windows.{key}: {m}")))?;
        if resource.kind() != colony_kernel::ResourceKind::Flow {
            return Err(error(
                Some(value.span()),
                format!(
                    "windows.{key}: only flow resources (compute_ms, io_ops) refill in windows"
                ),
            ));
        }
        flow_window_ms.insert(
            resource,
            parse_duration_ms(value.get_ref())
                .map_err(|m| error(Some(value.span()), format!("windows.{key}: {m}")))?,
        );
    }
    let mut defaults = BTreeMap::new();
    for (kind_name, table) in &parsed.defaults {
        let kind = PrincipalKind::parse(kind_name)
            .filter(|kind| *kind != PrincipalKind::System)
            .ok_or_else(|| error(Some(table.span()), format!("defaults.{kind_name}: unknown principal kind; use human, ai, artifact or node")))?;
        let mut quotas = BTreeMap::new();
        for (key, value) in table.get_ref() {
            let resource = parse_resource(key).map_err(|m| {
                error(
                    Some(value.span()),
                    format!("defaults.{kind_name}.{key}: {m}"),
                )
            })?;
            let amount = parse_amount(value.get_ref(), resource == Resource::LlmBudgetUsd)
                .map_err(|m| {
                    error(
                        Some(value.span()),
                        format!("defaults.{kind_name}.{key}: {m}"),
                    )
                })?;
            quotas.insert(resource, amount);
        }
        defaults.insert(kind, quotas);
    }
    Ok(QuotaConfig {
        defaults,
        flow_window_ms,
        reservation_ttl_ms,
        reservation_ttl_max_ms,
        reservations_per_principal_max: parsed
            .ledger
            .reservations_per_principal_max
            .unwrap_or(1_000),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GovernanceFile {
    governance: GovernanceSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GovernanceSection {
    review_period: Spanned<String>,
    #[serde(default)]
    brake_roles: Option<Vec<Spanned<String>>>,
    /// A duration, or "never".
    brake_ttl: Option<Spanned<String>>,
    brakes_per_hour_max: Option<u32>,
    open_proposals_per_principal_max: Option<u32>,
    #[serde(default)]
    rules: BTreeMap<String, Spanned<RuleEntry>>,
    relaxation: Option<Spanned<RelaxationEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    human_quorum: u32,
    ai_quorum: u32,
    human_approval: Spanned<String>,
    ai_approval: Spanned<String>,
    #[serde(default)]
    veto: Vec<Spanned<String>>,
    review_period: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelaxationEntry {
    window: Spanned<String>,
    min_decisions: u64,
    max_denial_rate: Spanned<String>,
    max_error_rate: Spanned<String>,
    max_anomalies: u64,
    step: Spanned<String>,
    monitoring_window: Spanned<String>,
    #[serde(default = "yes")]
    propose: bool,
    #[serde(default)]
    limits: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// Parses the text of `governance.toml`.
pub fn parse_governance(file: &Path, text: &str) -> Result<GovernanceConfig, ConfigError> {
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let parsed: GovernanceFile =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().to_string()))?;
    let section = parsed.governance;
    let duration = |key: &str, value: &Spanned<String>| {
        parse_duration_ms(value.get_ref())
            .map_err(|m| error(Some(value.span()), format!("governance.{key}: {m}")))
    };
    let ratio = |key: &str, value: &Spanned<String>| {
        parse_ratio(value.get_ref())
            .map_err(|m| error(Some(value.span()), format!("governance.{key}: {m}")))
    };
    let roles = |key: &str, values: &[Spanned<String>]| -> Result<Vec<Role>, ConfigError> {
        values
            .iter()
            .map(|value| {
                Role::parse(value.get_ref()).ok_or_else(|| {
                    error(
                        Some(value.span()),
                        format!(
                            "governance.{key}: `{}` is not admin, member or observer",
                            value.get_ref()
                        ),
                    )
                })
            })
            .collect()
    };
    let defaults = GovernanceConfig::defaults();
    let mut config = GovernanceConfig {
        review_period_ms: duration("review_period", &section.review_period)?,
        brake_roles: match &section.brake_roles {
            Some(values) => roles("brake_roles", values)?,
            None => defaults.brake_roles.clone(),
        },
        brake_ttl_ms: match &section.brake_ttl {
            None => defaults.brake_ttl_ms,
            Some(value) if value.get_ref() == "never" => None,
            Some(value) => Some(duration("brake_ttl", value)?),
        },
        brakes_per_hour_max: section
            .brakes_per_hour_max
            .unwrap_or(defaults.brakes_per_hour_max),
        open_proposals_per_principal_max: section
            .open_proposals_per_principal_max
            .unwrap_or(defaults.open_proposals_per_principal_max),
        rules: BTreeMap::new(),
        relaxation: None,
    };
    for (name, entry) in &section.rules {
        let kind = match name.as_str() {
            "raise" => ChangeKind::Raise,
            "remove" => ChangeKind::Remove,
            "quota_default" => ChangeKind::QuotaDefault,
            _ => {
                return Err(error(Some(entry.span()), format!("governance.rules.{name}: unknown change kind; use raise, remove or quota_default")))
            }
        };
        let entry = entry.get_ref();
        let key = |field: &str| format!("rules.{name}.{field}");
        config.rules.insert(
            kind,
            VoteRule {
                human_quorum: entry.human_quorum,
                ai_quorum: entry.ai_quorum,
                human_approval: ratio(&key("human_approval"), &entry.human_approval)?,
                ai_approval: ratio(&key("ai_approval"), &entry.ai_approval)?,
                veto_roles: roles(&key("veto"), &entry.veto)?,
                review_period_ms: entry
                    .review_period
                    .as_ref()
                    .map(|p| duration(&key("review_period"), p))
                    .transpose()?,
            },
        );
    }
    if let Some(entry) = &section.relaxation {
        let span = entry.span();
        let entry = entry.get_ref();
        let mut limits = Vec::new();
        for name in &entry.limits {
            let builtin = builtin_limit(name.get_ref()).ok_or_else(|| {
                error(
                    Some(name.span()),
                    format!(
                        "governance.relaxation.limits: unknown limit `{}`",
                        name.get_ref()
                    ),
                )
            })?;
            limits.push(builtin.name.to_string());
        }
        let relaxation = RelaxationConfig {
            window_ms: duration("relaxation.window", &entry.window)?,
            min_decisions: entry.min_decisions,
            max_denial_rate: ratio("relaxation.max_denial_rate", &entry.max_denial_rate)?,
            max_error_rate: ratio("relaxation.max_error_rate", &entry.max_error_rate)?,
            max_anomalies: entry.max_anomalies,
            step: ratio("relaxation.step", &entry.step)?,
            monitoring_window_ms: duration(
                "relaxation.monitoring_window",
                &entry.monitoring_window,
            )?,
            limits,
            propose: entry.propose,
        };
        if relaxation.step.numerator == 0 {
            return Err(error(
                Some(span),
                "governance.relaxation.step must be above zero".into(),
            ));
        }
        config.relaxation = Some(relaxation);
    }
    Ok(config)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TasksFile {
    #[serde(default)]
    tasks: TasksSection,
    #[serde(default)]
    workers: WorkersSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TasksSection {
    lease: Option<Spanned<String>>,
    lease_max: Option<Spanned<String>>,
    max_attempts: Option<u32>,
    backoff_base: Option<Spanned<String>>,
    backoff_max: Option<Spanned<String>>,
    aging_points_per_minute: Option<u32>,
    aging_points_max: Option<u32>,
    unblock_points: Option<u32>,
    unblock_points_max: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkersSection {
    heartbeat: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// Parses the text of `tasks.toml`; anything left out keeps its default.
pub fn parse_tasks(file: &Path, text: &str) -> Result<TaskConfig, ConfigError> {
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let parsed: TasksFile =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().to_string()))?;
    let mut config = TaskConfig::defaults();
    let duration =
        |key: &str, value: &Option<Spanned<String>>, target: &mut u64| -> Result<(), ConfigError> {
            if let Some(value) = value {
                *target = parse_duration_ms(value.get_ref())
                    .map_err(|m| error(Some(value.span()), format!("{key}: {m}")))?;
            }
            Ok(())
        };
    let (tasks, workers) = (&parsed.tasks, &parsed.workers);
    duration("tasks.lease", &tasks.lease, &mut config.lease_ms)?;
    duration(
        "tasks.lease_max",
        &tasks.lease_max,
        &mut config.lease_max_ms,
    )?;
    duration(
        "tasks.backoff_base",
        &tasks.backoff_base,
        &mut config.backoff_base_ms,
    )?;
    duration(
        "tasks.backoff_max",
        &tasks.backoff_max,
        &mut config.backoff_max_ms,
    )?;
    duration(
        "workers.heartbeat",
        &workers.heartbeat,
        &mut config.worker_heartbeat_ms,
    )?;
    duration(
        "workers.timeout",
        &workers.timeout,
        &mut config.worker_timeout_ms,
    )?;
    for (value, target) in [
        (tasks.max_attempts, &mut config.max_attempts),
        (
            tasks.aging_points_per_minute,
            &mut config.aging_points_per_minute,
        ),
        (tasks.aging_points_max, &mut config.aging_points_max),
        (tasks.unblock_points, &mut config.unblock_points),
        (tasks.unblock_points_max, &mut config.unblock_points_max),
    ] {
        if let Some(value) = value {
            *target = value;
        }
    }
    if config.max_attempts == 0 {
        return Err(error(None, "tasks.max_attempts must be at least 1".into()));
    }
    if config.lease_ms > config.lease_max_ms {
        return Err(error(
            tasks.lease.as_ref().map(|l| l.span()),
            "tasks.lease is above tasks.lease_max".into(),
        ));
    }
    if config.worker_heartbeat_ms >= config.worker_timeout_ms {
        return Err(error(
            workers.heartbeat.as_ref().map(|h| h.span()),
            "workers.heartbeat must be shorter than workers.timeout".into(),
        ));
    }
    Ok(config)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorFile {
    supervisor: SupervisorSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorSection {
    spawn_cooldown: Option<Spanned<String>>,
    idle_shutdown: Option<Spanned<String>>,
    restart_backoff_base: Option<Spanned<String>>,
    restart_backoff_max: Option<Spanned<String>>,
    crash_loop_crashes: Option<u32>,
    crash_loop_window: Option<Spanned<String>>,
    #[serde(default)]
    profiles: Vec<Spanned<ProfileEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileEntry {
    name: String,
    command: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    model: Option<String>,
    #[serde(default)]
    min: u32,
    max: u32,
}

/// Reads `supervisor.toml` from the configuration directory, if it exists. Unlike
/// genesis, it is read at every start: it describes this node's own processes.
pub fn load_supervisor(
    dir: &Path,
) -> Result<Option<crate::supervisor::SupervisorConfig>, ConfigError> {
    let file = dir.join("supervisor.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) => parse_supervisor(&file, &text).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError {
            file,
            line: None,
            message: format!("cannot read: {error}"),
        }),
    }
}

pub fn parse_supervisor(
    file: &Path,
    text: &str,
) -> Result<crate::supervisor::SupervisorConfig, ConfigError> {
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let parsed: SupervisorFile =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().to_string()))?;
    let section = parsed.supervisor;
    let mut config = crate::supervisor::SupervisorConfig::with_profiles(Vec::new());
    let duration =
        |key: &str, value: &Option<Spanned<String>>, target: &mut u64| -> Result<(), ConfigError> {
            if let Some(value) = value {
                *target = parse_duration_ms(value.get_ref())
                    .map_err(|m| error(Some(value.span()), format!("supervisor.{key}: {m}")))?;
            }
            Ok(())
        };
    duration(
        "spawn_cooldown",
        &section.spawn_cooldown,
        &mut config.spawn_cooldown_ms,
    )?;
    duration(
        "idle_shutdown",
        &section.idle_shutdown,
        &mut config.idle_shutdown_ms,
    )?;
    duration(
        "restart_backoff_base",
        &section.restart_backoff_base,
        &mut config.restart_backoff_base_ms,
    )?;
    duration(
        "restart_backoff_max",
        &section.restart_backoff_max,
        &mut config.restart_backoff_max_ms,
    )?;
    duration(
        "crash_loop_window",
        &section.crash_loop_window,
        &mut config.crash_loop_window_ms,
    )?;
    if let Some(crashes) = section.crash_loop_crashes {
        config.crash_loop_crashes = crashes.max(1);
    }
    for entry in section.profiles {
        let span = entry.span();
        let entry = entry.into_inner();
        if entry.command.is_empty() {
            return Err(error(
                Some(span),
                format!("supervisor.profiles {}: the command is empty", entry.name),
            ));
        }
        if entry.max == 0 || entry.min > entry.max {
            return Err(error(
                Some(span),
                format!(
                    "supervisor.profiles {}: need 0 <= min <= max and max >= 1",
                    entry.name
                ),
            ));
        }
        if entry.name.is_empty()
            || !entry
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(error(
                Some(span),
                "a profile name is letters, digits, - and _".into(),
            ));
        }
        config.profiles.push(crate::supervisor::Profile {
            name: entry.name,
            command: entry.command,
            capabilities: entry.capabilities,
            model: entry.model,
            min: entry.min,
            max: entry.max,
        });
    }
    Ok(config)
}

/// `"2/3"` or `"75%"`, at most one.
fn parse_ratio(text: &str) -> Result<Ratio, String> {
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

fn parse_resource(key: &str) -> Result<Resource, String> {
    Resource::parse(key).ok_or_else(|| {
        let known: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown resource; known resources are {}", known.join(", "))
    })
}

/// An amount: a non-negative integer, `"unlimited"`, or for money a decimal string
/// of dollars with at most six decimals. `None` means unlimited.
fn parse_amount(value: &toml::Value, money: bool) -> Result<Option<u64>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits_error(text: &str) -> String {
        parse_limits(Path::new("limits.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn shipped_files_parse() {
        let config = builtin_defaults();
        assert!(config.limits.iter().any(|l| l.name == "ai_accounts"));
        assert!(config
            .limits
            .iter()
            .any(|l| l.name == "llm_spend_usd" && l.hard.is_some()));
        assert!(config.quotas.defaults.contains_key(&PrincipalKind::Ai));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[limits.ai_accounts]\nsoft = 60\nhard = 50\n",
                "limits.toml:2: limits.ai_accounts.soft (60) is above hard (50)",
            ),
            (
                "[limits.ai_acounts]\nsoft = 1\n",
                "limits.toml:1: limits.ai_acounts: unknown limit",
            ),
            (
                "[limits.ai_accounts]\nsoft = -1\n",
                "limits.toml:2: limits.ai_accounts.soft: -1 is negative",
            ),
            (
                "[limits.ai_accounts]\nsoft = 1.5\n",
                "limits.toml:2: limits.ai_accounts.soft: floats are not accepted",
            ),
            (
                "[limits.ai_accounts]\nsoftt = 1\n",
                "limits.toml:2: unknown field `softt`",
            ),
            ("[limits.ai_accounts]\nsoft = \n", "limits.toml:2:"),
            (
                "[limits.llm_spend_usd]\nhard = 50\n",
                "limits.toml:2: limits.llm_spend_usd.hard: money is written in dollars",
            ),
            (
                "[limits.llm_spend_usd]\nwindow = \"soon\"\n",
                "limits.toml:2: limits.llm_spend_usd.window",
            ),
            (
                "[limits.llm_spend_usd]\non_soft = \"queue\"\n",
                "limits.toml:2: limits.llm_spend_usd.on_soft: `queue` applies to count limits",
            ),
            (
                "[limits.ai_accounts]\non_soft = \"panic\"\n",
                "limits.toml:2: limits.ai_accounts.on_soft: `panic`",
            ),
            (
                "[limits.max_ai_accounts]\nhard = 1\n[limits.ai_accounts]\nhard = 2\n",
                "is set twice",
            ),
        ];
        for (text, expected) in cases {
            let message = limits_error(text);
            assert!(
                message.contains(expected),
                "for {text:?}:\n  got {message}\n  expected {expected}"
            );
        }
    }

    #[test]
    fn quota_errors_name_the_key() {
        let error = parse_quotas(
            Path::new("quotas.toml"),
            "[defaults.ai]\nllm_budget = \"1.00\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("quotas.toml:2: defaults.ai.llm_budget: unknown resource"),
            "{error}"
        );
        let error = parse_quotas(Path::new("quotas.toml"), "[defaults.robot]\nio_ops = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("defaults.robot: unknown principal kind"),
            "{error}"
        );
    }

    #[test]
    fn governance_errors_name_the_key() {
        let base = "[governance]\nreview_period = \"2s\"\n";
        let check = |extra: &str, expected: &str| {
            let text = format!("{base}{extra}");
            let message = parse_governance(Path::new("governance.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(expected),
                "for {extra:?}:\n  got {message}\n  expected {expected}"
            );
        };
        check("[governance.rules.raise]\nhuman_quorum = 1\nai_quorum = 1\nhuman_approval = \"3/2\"\nai_approval = \"1/2\"\n", "governance.toml:6: governance.rules.raise.human_approval: `3/2` must be between 0 and 1");
        check("[governance.rules.grow]\nhuman_quorum = 1\nai_quorum = 1\nhuman_approval = \"1/2\"\nai_approval = \"1/2\"\n", "unknown change kind");
        check("[governance.rules.raise]\nhuman_quorum = 1\nai_quorum = 1\nhuman_approval = \"1/2\"\nai_approval = \"1/2\"\nveto = [\"king\"]\n", "`king` is not admin");
        let error = parse_governance(
            Path::new("g.toml"),
            "[governance]\nreview_period = \"soon\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("g.toml:2: governance.review_period"),
            "{error}"
        );
        let config = parse_governance(Path::new("g.toml"), base).unwrap();
        assert_eq!(config.review_period_ms, 2_000);
        assert!(config.rules.is_empty(), "no rule: nothing can be raised");
    }

    #[test]
    fn task_settings_parse_and_are_checked() {
        let config = parse_tasks(
            Path::new("tasks.toml"),
            "[workers]\nheartbeat = \"100ms\"\ntimeout = \"300ms\"\n",
        )
        .unwrap();
        assert_eq!(
            (
                config.worker_heartbeat_ms,
                config.worker_timeout_ms,
                config.lease_ms
            ),
            (100, 300, 30_000)
        );
        let error = parse_tasks(
            Path::new("tasks.toml"),
            "[workers]\nheartbeat = \"10s\"\ntimeout = \"5s\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("tasks.toml:2: workers.heartbeat must be shorter"),
            "{error}"
        );
        let error = parse_tasks(Path::new("tasks.toml"), "[tasks]\nleese = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tasks.toml:2") && error.contains("unknown field"),
            "{error}"
        );
        assert_eq!(
            builtin_defaults().tasks,
            TaskConfig::defaults(),
            "the shipped file says the defaults"
        );
    }

    #[test]
    fn dollars_are_exact() {
        assert_eq!(parse_usd("50.00"), Ok(50_000_000));
        assert_eq!(parse_usd("0.000001"), Ok(1));
        assert_eq!(parse_usd("3.3"), Ok(3_300_000));
        assert!(parse_usd("1.0000001").is_err());
        assert!(parse_usd("-1").is_err());
        assert!(parse_usd("1e3").is_err());
    }

    #[test]
    fn hypernet_names_are_accepted() {
        let specs = parse_limits(
            Path::new("l.toml"),
            "[limits.max_ai_accounts]\nsoft = 10\nhard = 50\n",
        )
        .unwrap();
        assert_eq!(specs[0].name, "ai_accounts");
    }
}
