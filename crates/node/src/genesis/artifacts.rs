//! `artifacts.toml`: the artifact runtime's settings (`[runtime]`, read at every
//! start) and the artifacts deployed by the admin at first start (`[[artifact]]`,
//! the seed's "kick" artifacts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use colony_artifacts::RuntimeConfig;
use colony_kernel::Resource;
use serde::Deserialize;
use toml::Spanned;

use super::*;

/// The shipped `artifacts.toml`.
pub const DEFAULT_ARTIFACTS_TOML: &str = include_str!("../../../../config/genesis/artifacts.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactsFile {
    #[serde(default)]
    runtime: Option<Spanned<RuntimeConfig>>,
    #[serde(default)]
    artifact: Vec<Spanned<KickEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickEntry {
    name: String,
    /// The module (`.wasm` or `.wat`), relative to the configuration directory.
    path: String,
    #[serde(default)]
    quotas: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default = "yes")]
    run: bool,
    justification: String,
}

fn yes() -> bool {
    true
}

/// An artifact the admin deploys at first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KickArtifact {
    pub name: String,
    pub path: PathBuf,
    pub quotas: Vec<(Resource, u64)>,
    pub run: bool,
    pub justification: String,
}

/// `artifacts.toml` as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactsSetup {
    pub runtime: RuntimeConfig,
    pub kick: Vec<KickArtifact>,
}

/// Reads `artifacts.toml` from the configuration directory; the runtime's defaults
/// and no kick artifacts when it does not exist.
pub fn load_artifacts(dir: &Path) -> Result<ArtifactsSetup, ConfigError> {
    match read_optional(dir, "artifacts.toml")? {
        Some((file, text)) => parse_artifacts(&file, &text, dir),
        None => Ok(ArtifactsSetup::default()),
    }
}

pub fn parse_artifacts(file: &Path, text: &str, dir: &Path) -> Result<ArtifactsSetup, ConfigError> {
    let source = Source { file, text };
    let parsed: ArtifactsFile = source.parse()?;
    let runtime = match parsed.runtime {
        Some(runtime) => {
            let span = runtime.span();
            let runtime = runtime.into_inner();
            runtime
                .check()
                .map_err(|m| source.error(Some(span), format!("runtime: {m}")))?;
            runtime
        }
        None => RuntimeConfig::default(),
    };
    let mut kick = Vec::new();
    for entry in parsed.artifact {
        let span = entry.span();
        let entry = entry.into_inner();
        colony_kernel::artifacts::check_name(&entry.name)
            .map_err(|m| source.error(Some(span.clone()), format!("artifact.name: {m}")))?;
        let mut quotas = Vec::new();
        for (key, value) in &entry.quotas {
            let resource = parse_resource(key).map_err(|m| {
                source.error(Some(value.span()), format!("artifact.quotas.{key}: {m}"))
            })?;
            let amount = parse_amount(value.get_ref(), resource == Resource::LlmBudgetUsd)
                .map_err(|m| {
                    source.error(Some(value.span()), format!("artifact.quotas.{key}: {m}"))
                })?
                .ok_or_else(|| {
                    source.error(
                        Some(value.span()),
                        format!(
                            "artifact.quotas.{key}: an artifact's quota is a number, not unlimited"
                        ),
                    )
                })?;
            quotas.push((resource, amount));
        }
        kick.push(KickArtifact {
            name: entry.name,
            path: dir.join(&entry.path),
            quotas,
            run: entry.run,
            justification: entry.justification,
        });
    }
    Ok(ArtifactsSetup { runtime, kick })
}
