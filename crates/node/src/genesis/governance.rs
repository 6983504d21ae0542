//! `governance.toml`: how limits change (rules, brakes, relaxation).

use std::collections::BTreeMap;
use std::path::Path;

use colony_kernel::governance::{ChangeKind, GovernanceConfig, RelaxationConfig, VoteRule};
use colony_kernel::{builtin_limit, Role};
use serde::Deserialize;
use toml::Spanned;

use super::*;

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
    grants: Option<Spanned<GrantsEntry>>,
}

/// `[governance.grants]`: quotas up to `quota_bound` are approved by any human
/// member; above it, by a human and an AI; roles and scopes by an admin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsEntry {
    #[serde(default)]
    quota_bound: BTreeMap<String, toml::Value>,
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
    let source = Source { file, text };
    let parsed: GovernanceFile = source.parse()?;
    let section = parsed.governance;
    let defaults = GovernanceConfig::defaults();
    let mut config = GovernanceConfig {
        review_period_ms: duration(&source, "review_period", &section.review_period)?,
        brake_roles: match &section.brake_roles {
            Some(values) => roles(&source, "brake_roles", values)?,
            None => defaults.brake_roles.clone(),
        },
        brake_ttl_ms: match &section.brake_ttl {
            None => defaults.brake_ttl_ms,
            Some(value) if value.get_ref() == "never" => None,
            Some(value) => Some(duration(&source, "brake_ttl", value)?),
        },
        brakes_per_hour_max: section
            .brakes_per_hour_max
            .unwrap_or(defaults.brakes_per_hour_max),
        open_proposals_per_principal_max: section
            .open_proposals_per_principal_max
            .unwrap_or(defaults.open_proposals_per_principal_max),
        rules: BTreeMap::new(),
        relaxation: None,
        grants: defaults.grants.clone(),
    };
    for (name, entry) in &section.rules {
        let (kind, rule) = vote_rule(&source, name, entry)?;
        config.rules.insert(kind, rule);
    }
    if let Some(entry) = &section.relaxation {
        config.relaxation = Some(relaxation(&source, entry)?);
    }
    if let Some(entry) = &section.grants {
        quota_bounds(&source, entry, &mut config.grants.quota_bound)?;
    }
    Ok(config)
}

fn duration(source: &Source, key: &str, value: &Spanned<String>) -> Result<u64, ConfigError> {
    parse_duration_ms(value.get_ref())
        .map_err(|m| source.error(Some(value.span()), format!("governance.{key}: {m}")))
}

fn ratio(
    source: &Source,
    key: &str,
    value: &Spanned<String>,
) -> Result<colony_kernel::governance::Ratio, ConfigError> {
    parse_ratio(value.get_ref())
        .map_err(|m| source.error(Some(value.span()), format!("governance.{key}: {m}")))
}

fn roles(source: &Source, key: &str, values: &[Spanned<String>]) -> Result<Vec<Role>, ConfigError> {
    values
        .iter()
        .map(|value| {
            Role::parse(value.get_ref()).ok_or_else(|| {
                source.error(
                    Some(value.span()),
                    format!(
                        "governance.{key}: `{}` is not admin, member or observer",
                        value.get_ref()
                    ),
                )
            })
        })
        .collect()
}

/// `[governance.rules.KIND]`: how one kind of change is voted on.
fn vote_rule(
    source: &Source,
    name: &str,
    entry: &Spanned<RuleEntry>,
) -> Result<(ChangeKind, VoteRule), ConfigError> {
    let kind = match name {
        "raise" => ChangeKind::Raise,
        "remove" => ChangeKind::Remove,
        "quota_default" => ChangeKind::QuotaDefault,
        "retention" => ChangeKind::Retention,
        _ => {
            return Err(source.error(
                Some(entry.span()),
                format!(
                "governance.rules.{name}: unknown change kind; use raise, remove, quota_default or retention"
            ),
            ))
        }
    };
    let entry = entry.get_ref();
    let key = |field: &str| format!("rules.{name}.{field}");
    let rule = VoteRule {
        human_quorum: entry.human_quorum,
        ai_quorum: entry.ai_quorum,
        human_approval: ratio(source, &key("human_approval"), &entry.human_approval)?,
        ai_approval: ratio(source, &key("ai_approval"), &entry.ai_approval)?,
        veto_roles: roles(source, &key("veto"), &entry.veto)?,
        review_period_ms: entry
            .review_period
            .as_ref()
            .map(|p| duration(source, &key("review_period"), p))
            .transpose()?,
    };
    Ok((kind, rule))
}

/// `[governance.relaxation]`: when limits are proposed back up after a brake.
fn relaxation(
    source: &Source,
    entry: &Spanned<RelaxationEntry>,
) -> Result<RelaxationConfig, ConfigError> {
    let span = entry.span();
    let entry = entry.get_ref();
    let mut limits = Vec::new();
    for name in &entry.limits {
        let builtin = builtin_limit(name.get_ref()).ok_or_else(|| {
            source.error(
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
        window_ms: duration(source, "relaxation.window", &entry.window)?,
        min_decisions: entry.min_decisions,
        max_denial_rate: ratio(source, "relaxation.max_denial_rate", &entry.max_denial_rate)?,
        max_error_rate: ratio(source, "relaxation.max_error_rate", &entry.max_error_rate)?,
        max_anomalies: entry.max_anomalies,
        step: ratio(source, "relaxation.step", &entry.step)?,
        monitoring_window_ms: duration(
            source,
            "relaxation.monitoring_window",
            &entry.monitoring_window,
        )?,
        limits,
        propose: entry.propose,
    };
    if relaxation.step.numerator == 0 {
        return Err(source.error(Some(span), "governance.relaxation.step must be above zero"));
    }
    Ok(relaxation)
}

/// `[governance.grants] quota_bound`: the most one grant may give of each resource.
fn quota_bounds(
    source: &Source,
    entry: &Spanned<GrantsEntry>,
    bounds: &mut BTreeMap<colony_kernel::Resource, u64>,
) -> Result<(), ConfigError> {
    let span = entry.span();
    for (key, value) in &entry.get_ref().quota_bound {
        let resource = parse_resource(key).map_err(|m| {
            source.error(
                Some(span.clone()),
                format!("governance.grants.quota_bound: {m}"),
            )
        })?;
        let money = resource == colony_kernel::Resource::LlmBudgetUsd;
        let bound = parse_amount(value, money).map_err(|m| {
            source.error(
                Some(span.clone()),
                format!("governance.grants.quota_bound.{key}: {m}"),
            )
        })?;
        bounds.insert(resource, bound.unwrap_or(u64::MAX));
    }
    Ok(())
}
