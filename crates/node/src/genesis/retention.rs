//! `retention.toml`: when finished tasks leave the live state for the archive
//! (`[tasks]`, genesis: read at first start) and how long the command and decision
//! logs keep their records (`[logs]`, read at every start), and how long the archive
//! keeps what left them (`[archive]`, read at every start).

use std::path::Path;

use colony_kernel::retention::RetentionConfig;
use colony_log::prune::LogRetention;
use serde::Deserialize;
use toml::Spanned;

use super::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    #[serde(default)]
    tasks: TasksSection,
    #[serde(default)]
    logs: LogsSection,
    #[serde(default)]
    archive: ArchiveSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ArchiveSection {
    keep_for: Option<Spanned<String>>,
}

/// The shortest `[archive] keep_for`: what reaches the archive is history someone
/// may still be asked about.
const ARCHIVE_KEEP_FOR_MIN_MS: u64 = 24 * 3_600_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogsSection {
    keep_for: Option<Spanned<String>>,
    keep_bytes: Option<Spanned<String>>,
    pruned: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TasksSection {
    keep_finished: Option<Spanned<u64>>,
    keep_finished_for: Option<Spanned<String>>,
}

/// Parses the text of `retention.toml`; anything left out keeps its default.
pub fn parse_retention(file: &Path, text: &str) -> Result<RetentionConfig, ConfigError> {
    let source = Source { file, text };
    let parsed: RetentionFile = source.parse()?;
    let mut config = RetentionConfig::defaults();
    if let Some(keep) = &parsed.tasks.keep_finished {
        config.keep_finished = *keep.get_ref();
    }
    if let Some(keep_for) = &parsed.tasks.keep_finished_for {
        config.keep_finished_for_ms = parse_duration_ms(keep_for.get_ref()).map_err(|m| {
            source.error(
                Some(keep_for.span()),
                format!("tasks.keep_finished_for: {m}"),
            )
        })?;
    }
    config.check().map_err(|message| {
        let span = parsed
            .tasks
            .keep_finished
            .as_ref()
            .filter(|_| message.starts_with("keep_finished "))
            .map(Spanned::span)
            .or_else(|| parsed.tasks.keep_finished_for.as_ref().map(Spanned::span));
        source.error(span, format!("tasks.{message}"))
    })?;
    Ok(config)
}

/// Parses `retention.toml`'s `[logs]` and `[archive]`; anything left out keeps every
/// record.
pub fn parse_log_retention(file: &Path, text: &str) -> Result<LogRetention, ConfigError> {
    let source = Source { file, text };
    let parsed: RetentionFile = source.parse()?;
    let logs = &parsed.logs;
    let mut rule = LogRetention::everything();
    if let Some(keep_for) = &logs.keep_for {
        rule.keep_for_ms = match keep_for.get_ref().as_str() {
            "forever" => None,
            text => Some(parse_duration_ms(text).map_err(|m| {
                source.error(
                    Some(keep_for.span()),
                    format!("logs.keep_for: {m} (or \"forever\")"),
                )
            })?),
        };
    }
    if let Some(keep_bytes) = &logs.keep_bytes {
        rule.keep_bytes = match keep_bytes.get_ref().as_str() {
            "unlimited" => None,
            text => Some(colony_config::parse_bytes(text).map_err(|m| {
                source.error(
                    Some(keep_bytes.span()),
                    format!("logs.keep_bytes: {m} (or \"unlimited\")"),
                )
            })?),
        };
    }
    if let Some(pruned) = &logs.pruned {
        rule.archive = match pruned.get_ref().as_str() {
            "archive" => true,
            "delete" => false,
            other => {
                return Err(source.error(
                    Some(pruned.span()),
                    format!("logs.pruned: `{other}` is \"archive\" (moved to <data>/archive/logs/) or \"delete\""),
                ))
            }
        };
    }
    if let Some(keep_for) = &parsed.archive.keep_for {
        rule.archive_keep_for_ms = match keep_for.get_ref().as_str() {
            "forever" => None,
            text => {
                let ms = parse_duration_ms(text).map_err(|m| {
                    source.error(
                        Some(keep_for.span()),
                        format!("archive.keep_for: {m} (or \"forever\")"),
                    )
                })?;
                if ms < ARCHIVE_KEEP_FOR_MIN_MS {
                    return Err(source.error(
                        Some(keep_for.span()),
                        "archive.keep_for: at least \"1d\" (or \"forever\")".to_string(),
                    ));
                }
                Some(ms)
            }
        };
    }
    Ok(rule)
}

/// `retention.toml`'s `[logs]` from `dir`, or the shipped file's when it has none.
pub fn load_log_retention(dir: &Path) -> Result<LogRetention, ConfigError> {
    match read_optional(dir, "retention.toml")? {
        Some((file, text)) => parse_log_retention(&file, &text),
        None => parse_log_retention(
            Path::new("(built-in)/retention.toml"),
            DEFAULT_RETENTION_TOML,
        ),
    }
}
