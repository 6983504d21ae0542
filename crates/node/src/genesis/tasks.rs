//! `tasks.toml`: the task board's timing and the workers' heartbeats.

use std::path::Path;

use colony_kernel::tasks::TaskConfig;
use serde::Deserialize;
use toml::Spanned;

use super::*;

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
    attempt_timeout: Option<Spanned<String>>,
    attempt_timeout_max: Option<Spanned<String>>,
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
    let source = Source { file, text };
    let parsed: TasksFile = source.parse()?;
    let mut config = TaskConfig::defaults();
    let duration =
        |key: &str, value: &Option<Spanned<String>>, target: &mut u64| -> Result<(), ConfigError> {
            if let Some(value) = value {
                *target = parse_duration_ms(value.get_ref())
                    .map_err(|m| source.error(Some(value.span()), format!("{key}: {m}")))?;
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
        "tasks.attempt_timeout",
        &tasks.attempt_timeout,
        &mut config.attempt_timeout_ms,
    )?;
    duration(
        "tasks.attempt_timeout_max",
        &tasks.attempt_timeout_max,
        &mut config.attempt_timeout_max_ms,
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
        return Err(source.error(None, "tasks.max_attempts must be at least 1"));
    }
    if config.lease_ms > config.lease_max_ms {
        return Err(source.error(
            tasks.lease.as_ref().map(|l| l.span()),
            "tasks.lease is above tasks.lease_max",
        ));
    }
    let attempt_timeout_span = tasks.attempt_timeout.as_ref().map(|t| t.span());
    if config.attempt_timeout_ms < colony_kernel::tasks::ATTEMPT_TIMEOUT_MIN_MS {
        return Err(source.error(attempt_timeout_span, "tasks.attempt_timeout is at least 1s"));
    }
    if config.attempt_timeout_ms > config.attempt_timeout_max_ms {
        return Err(source.error(
            attempt_timeout_span,
            "tasks.attempt_timeout is above tasks.attempt_timeout_max",
        ));
    }
    if config.worker_heartbeat_ms >= config.worker_timeout_ms {
        return Err(source.error(
            workers.heartbeat.as_ref().map(|h| h.span()),
            "workers.heartbeat must be shorter than workers.timeout",
        ));
    }
    Ok(config)
}
