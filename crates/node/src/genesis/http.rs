//! `http.toml` (optional, read at every start): the HTTP listener's bounds, which
//! keep slow or hostile clients from holding the node (`node/src/listener.rs`,
//! `node/src/fairness.rs`). Without the file, the defaults.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::listener::ListenConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    http: HttpSection,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    tls_handshake_timeout: Option<Spanned<String>>,
    unauthenticated_connections_max: Option<Spanned<usize>>,
    connection_buffer_bytes_max: Option<Spanned<usize>>,
    descriptors_reserved: Option<Spanned<u64>>,
    requests_in_flight_per_principal_max: Option<Spanned<usize>>,
    body_bytes_in_flight_max: Option<Spanned<u64>>,
    body_bytes_in_flight_per_principal_max: Option<Spanned<u64>>,
}

/// Shortest and longest of the listener's deadlines.
const DEADLINE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

pub fn load_http(dir: &Path) -> Result<ListenConfig, ConfigError> {
    match read_optional(dir, "http.toml")? {
        Some((file, text)) => parse_http(&file, &text),
        None => Ok(ListenConfig::default()),
    }
}

pub fn parse_http(file: &Path, text: &str) -> Result<ListenConfig, ConfigError> {
    let source = Source { file, text };
    let section = source.parse::<HttpFile>()?.http;
    let mut config = ListenConfig::default();
    deadlines(&source, &section, &mut config)?;
    counts(&source, &section, &mut config)?;
    body_budgets(&source, &section, &mut config)?;
    if let Some(value) = &section.descriptors_reserved {
        if !(16..=1_000_000).contains(value.get_ref()) {
            return Err(source.error(
                Some(value.span()),
                format!(
                    "http.descriptors_reserved is between 16 and 1000000 (not {})",
                    value.get_ref()
                ),
            ));
        }
        config.descriptors_reserved = *value.get_ref();
    }
    Ok(config)
}

/// The request deadlines: each from 100 ms to 1 h.
fn deadlines(
    source: &Source,
    section: &HttpSection,
    config: &mut ListenConfig,
) -> Result<(), ConfigError> {
    for (key, value, target) in [
        (
            "header_timeout",
            &section.header_timeout,
            &mut config.header_timeout_ms,
        ),
        (
            "body_timeout",
            &section.body_timeout,
            &mut config.body_timeout_ms,
        ),
        (
            "tls_handshake_timeout",
            &section.tls_handshake_timeout,
            &mut config.tls_handshake_timeout_ms,
        ),
    ] {
        if let Some(value) = value {
            let ms = parse_duration_ms(value.get_ref())
                .and_then(|ms| {
                    DEADLINE_MS
                        .contains(&ms)
                        .then_some(ms)
                        .ok_or_else(|| "between 100ms and 1h".to_string())
                })
                .map_err(|m| source.error(Some(value.span()), format!("http.{key}: {m}")))?;
            *target = ms;
        }
    }
    Ok(())
}

/// The connection and request counts, each within its range.
fn counts(
    source: &Source,
    section: &HttpSection,
    config: &mut ListenConfig,
) -> Result<(), ConfigError> {
    let count =
        |key: &str, value: &Option<Spanned<usize>>, range: std::ops::RangeInclusive<usize>| {
            match value {
                None => Ok(None),
                Some(value) if range.contains(value.get_ref()) => Ok(Some(*value.get_ref())),
                Some(value) => Err(source.error(
                    Some(value.span()),
                    format!(
                        "http.{key} is between {} and {} (not {})",
                        range.start(),
                        range.end(),
                        value.get_ref()
                    ),
                )),
            }
        };
    if let Some(n) = count(
        "unauthenticated_connections_max",
        &section.unauthenticated_connections_max,
        1..=1_000_000,
    )? {
        config.unauthenticated_connections_max = n;
    }
    // hyper needs at least 8 KiB to read a request head into.
    if let Some(n) = count(
        "connection_buffer_bytes_max",
        &section.connection_buffer_bytes_max,
        (8 << 10)..=(1 << 20),
    )? {
        config.connection_buffer_bytes_max = n;
    }
    if let Some(n) = count(
        "requests_in_flight_per_principal_max",
        &section.requests_in_flight_per_principal_max,
        1..=1_000_000,
    )? {
        config.requests_in_flight_per_principal_max = n;
    }
    Ok(())
}

/// The bodies' memory budgets: each holds at least an artifact's module, the node's
/// at least a principal's.
fn body_budgets(
    source: &Source,
    section: &HttpSection,
    config: &mut ListenConfig,
) -> Result<(), ConfigError> {
    // A principal's budget holds at least one artifact's module (the largest body a
    // route takes by default), and the node's at least one principal's.
    let artifact = crate::route::ARTIFACT_BODY_BYTES_MAX as u64;
    for (key, value, target, min) in [
        (
            "body_bytes_in_flight_per_principal_max",
            &section.body_bytes_in_flight_per_principal_max,
            &mut config.body_bytes_in_flight_per_principal_max,
            artifact,
        ),
        (
            "body_bytes_in_flight_max",
            &section.body_bytes_in_flight_max,
            &mut config.body_bytes_in_flight_max,
            artifact,
        ),
    ] {
        if let Some(value) = value {
            if !(min..=(64 << 30)).contains(value.get_ref()) {
                return Err(source.error(
                    Some(value.span()),
                    format!(
                        "http.{key} is between {min} (an artifact's largest module) and 64 GiB (not {})",
                        value.get_ref()
                    ),
                ));
            }
            *target = *value.get_ref();
        }
    }
    if config.body_bytes_in_flight_max < config.body_bytes_in_flight_per_principal_max {
        return Err(source.error(
            None,
            "http.body_bytes_in_flight_max is below body_bytes_in_flight_per_principal_max",
        ));
    }
    Ok(())
}
