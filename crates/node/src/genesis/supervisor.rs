//! `supervisor.toml`: the worker processes a node keeps alive (read at every start).

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::*;

/// How the supervisor behaves, and what it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    pub spawn_cooldown_ms: u64,
    pub idle_shutdown_ms: u64,
    pub restart_backoff_base_ms: u64,
    pub restart_backoff_max_ms: u64,
    pub crash_loop_crashes: u32,
    pub crash_loop_window_ms: u64,
    pub profiles: Vec<Profile>,
}

/// One kind of worker process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// Program and arguments; `COLONY_URL`, `COLONY_TOKEN`, `COLONY_CAPABILITIES`,
    /// `COLONY_PROFILE` and (if set) `COLONY_MODEL` are set for it.
    pub command: Vec<String>,
    pub capabilities: Vec<String>,
    /// The model its workers use, passed as `COLONY_MODEL`.
    pub model: Option<String>,
    pub min: u32,
    pub max: u32,
}

impl SupervisorConfig {
    pub fn with_profiles(profiles: Vec<Profile>) -> SupervisorConfig {
        SupervisorConfig {
            spawn_cooldown_ms: 2_000,
            idle_shutdown_ms: 300_000,
            restart_backoff_base_ms: 1_000,
            restart_backoff_max_ms: 60_000,
            crash_loop_crashes: 5,
            crash_loop_window_ms: 60_000,
            profiles,
        }
    }
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
pub fn load_supervisor(dir: &Path) -> Result<Option<SupervisorConfig>, ConfigError> {
    match read_optional(dir, "supervisor.toml")? {
        Some((file, text)) => parse_supervisor(&file, &text).map(Some),
        None => Ok(None),
    }
}

pub fn parse_supervisor(file: &Path, text: &str) -> Result<SupervisorConfig, ConfigError> {
    let source = Source { file, text };
    let parsed: SupervisorFile = source.parse()?;
    let section = parsed.supervisor;
    let mut config = SupervisorConfig::with_profiles(Vec::new());
    let duration =
        |key: &str, value: &Option<Spanned<String>>, target: &mut u64| -> Result<(), ConfigError> {
            if let Some(value) = value {
                *target = parse_duration_ms(value.get_ref()).map_err(|m| {
                    source.error(Some(value.span()), format!("supervisor.{key}: {m}"))
                })?;
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
            return Err(source.error(
                Some(span),
                format!("supervisor.profiles {}: the command is empty", entry.name),
            ));
        }
        if entry.max == 0 || entry.min > entry.max {
            return Err(source.error(
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
            return Err(source.error(Some(span), "a profile name is letters, digits, - and _"));
        }
        config.profiles.push(Profile {
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
