//! `retention.toml`: when finished tasks leave the live state for the archive.

use std::path::Path;

use colony_kernel::retention::RetentionConfig;
use serde::Deserialize;
use toml::Spanned;

use super::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    #[serde(default)]
    tasks: TasksSection,
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
