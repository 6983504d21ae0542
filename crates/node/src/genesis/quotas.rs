//! `quotas.toml`: per-kind quota defaults and the ledger's timing rules.

use std::collections::BTreeMap;
use std::path::Path;

use colony_kernel::{PrincipalKind, QuotaConfig, Resource};
use serde::Deserialize;
use toml::Spanned;

use super::*;

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
    let source = Source { file, text };
    let parsed: QuotasFile = source.parse()?;
    let duration =
        |key: &str, value: &Option<Spanned<String>>, default_ms: u64| -> Result<u64, ConfigError> {
            match value {
                None => Ok(default_ms),
                Some(value) => parse_duration_ms(value.get_ref())
                    .map_err(|m| source.error(Some(value.span()), format!("{key}: {m}"))),
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
        return Err(source.error(
            parsed.ledger.reservation_ttl.as_ref().map(|s| s.span()),
            "ledger.reservation_ttl is above ledger.reservation_ttl_max",
        ));
    }
    let mut flow_window_ms = BTreeMap::new();
    for (key, value) in &parsed.windows {
        let resource = parse_resource(key)
            .map_err(|m| source.error(Some(value.span()), format!("windows.{key}: {m}")))?;
        if resource.kind() != colony_kernel::ResourceKind::Flow {
            return Err(source.error(
                Some(value.span()),
                format!(
                    "windows.{key}: only flow resources (compute_ms, io_ops) refill in windows"
                ),
            ));
        }
        flow_window_ms.insert(
            resource,
            parse_duration_ms(value.get_ref())
                .map_err(|m| source.error(Some(value.span()), format!("windows.{key}: {m}")))?,
        );
    }
    let mut defaults = BTreeMap::new();
    for (kind_name, table) in &parsed.defaults {
        let kind = PrincipalKind::parse(kind_name)
            .filter(|kind| *kind != PrincipalKind::System)
            .ok_or_else(|| source.error(Some(table.span()), format!("defaults.{kind_name}: unknown principal kind; use human, ai, artifact or node")))?;
        let mut quotas = BTreeMap::new();
        for (key, value) in table.get_ref() {
            let resource = parse_resource(key).map_err(|m| {
                source.error(
                    Some(value.span()),
                    format!("defaults.{kind_name}.{key}: {m}"),
                )
            })?;
            let amount = parse_amount(value.get_ref(), resource == Resource::LlmBudgetUsd)
                .map_err(|m| {
                    source.error(
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
