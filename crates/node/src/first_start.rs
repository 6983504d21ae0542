//! A node's first start: genesis (read from the configuration directory, logged
//! with the admin's token written first), then what the admin does once: the durable
//! stream that keeps proximity alerts, and the kick artifacts of `artifacts.toml`.

use std::path::{Path, PathBuf};

use colony_kernel::{CommandBody, Genesis, PrincipalId};

use crate::app::Shared;
use crate::auth::{hash_token, new_token};
use crate::genesis::{self, GenesisConfig};
use crate::node::write_private;
use crate::sequencer::Submitter;
use crate::{NodeConfig, NodeError};

/// The durable bus stream that keeps proximity alerts (`colony.alerts.>`), defined by
/// the admin at first start: agents consume alerts with acknowledgements, and a
/// consumer that was away reads what it missed.
pub const ALERTS_STREAM: &str = "alerts";

pub(crate) async fn define_alerts_stream(shared: &Shared) -> Result<(), NodeError> {
    let config = &shared.bus.config;
    let spec = colony_kernel::streams::StreamSpec {
        name: ALERTS_STREAM.into(),
        subjects: vec!["colony.alerts.>".into()],
        max_age_ms: Some(30 * 86_400_000),
        max_bytes: None,
        max_msgs: Some(100_000),
        ack_wait_ms: config.stream_ack_wait_ms,
        max_deliver: config.stream_max_deliver,
    };
    let failed = |message: String| NodeError::Io {
        context: "defining the alerts stream".into(),
        source: std::io::Error::other(message),
    };
    let outcome = shared
        .submitter
        .submit(
            PrincipalId::ADMIN,
            "first start: keep proximity alerts durably on the bus".into(),
            CommandBody::DefineStream(Box::new(spec.clone())),
        )
        .await
        .map_err(|error| failed(error.message))?;
    if !outcome.primary.decision.is_allowed() {
        return Err(failed(format!("{:?}", outcome.primary.reason)));
    }
    shared
        .bus
        .streams
        .define(spec)
        .map_err(|error| failed(error.to_string()))?;
    Ok(())
}

/// Deploys `artifacts.toml`'s `[[artifact]]` entries as the admin (first start).
pub(crate) async fn deploy_kick_artifacts(
    runtime: &colony_artifacts::Runtime,
    kick: &[crate::genesis::KickArtifact],
) -> Result<(), NodeError> {
    for artifact in kick {
        let bytes = std::fs::read(&artifact.path).map_err(|source| NodeError::Io {
            context: format!("artifact {}: {}", artifact.name, artifact.path.display()),
            source,
        })?;
        let deploy = colony_artifacts::Deploy {
            name: artifact.name.clone(),
            bytes,
            quotas: artifact.quotas.clone(),
            run: artifact.run,
            justification: artifact.justification.clone(),
        };
        let refused = |message: String| NodeError::Io {
            context: format!("artifact {} ({})", artifact.name, artifact.path.display()),
            source: std::io::Error::other(message),
        };
        let event = runtime
            .deploy(PrincipalId::ADMIN, deploy)
            .await
            .map_err(|error| refused(error.to_string()))?;
        if !event.decision.is_allowed() {
            return Err(refused(format!("deploy denied: {:?}", event.reason)));
        }
        tracing::info!(artifact = %artifact.name, address = %event.subject, "deployed at first start");
    }
    Ok(())
}

pub(crate) fn load_genesis(config: &NodeConfig) -> Result<GenesisConfig, NodeError> {
    if config.config_dir.exists() || config.config_dir_required {
        let loaded = genesis::load_dir(&config.config_dir)?;
        tracing::info!("first start: genesis from {}", config.config_dir.display());
        Ok(loaded)
    } else {
        tracing::warn!(
            "first start: {} does not exist, so the built-in defaults (the same as the repository's config/genesis) are used",
            config.config_dir.display()
        );
        Ok(genesis::builtin_defaults())
    }
}

/// Creates the admin: writes its token (mode 0600) first, then logs genesis. In a
/// cluster, `None` when another node's genesis came first (the token is removed).
pub(crate) async fn apply_genesis(
    data_dir: &Path,
    config: GenesisConfig,
    submitter: &Submitter,
    cluster: Option<&colony_cluster::Cluster>,
) -> Result<Option<PathBuf>, NodeError> {
    let token = new_token();
    let token_file = data_dir.join("admin.token");
    write_private(&token_file, format!("{token}\n").as_bytes()).map_err(|source| {
        NodeError::Io {
            context: format!("cannot write {}", token_file.display()),
            source,
        }
    })?;
    let genesis = Genesis {
        limits: config.limits,
        quotas: config.quotas,
        governance: config.governance,
        tasks: config.tasks,
        anomaly: config.anomaly,
        retention: config.retention,
        source: config.source,
        admin_name: "admin".to_string(),
        admin_token_hash: hash_token(&token),
    };
    let justification = "first start: install genesis limits and quotas, create the admin";
    let body = CommandBody::Genesis(Box::new(genesis));
    let outcome = match cluster {
        None => submitter
            .submit(PrincipalId::SYSTEM, justification.into(), body)
            .await
            .map(|outcome| colony_cluster::Genesis::ThisNode(Some(Box::new(outcome)))),
        Some(cluster) => {
            cluster
                .propose_genesis(crate::sequencer::Proposal {
                    actor: PrincipalId::SYSTEM,
                    justification: justification.into(),
                    body,
                })
                .await
        }
    }
    .map_err(|error| NodeError::Io {
        context: "genesis".into(),
        source: std::io::Error::other(error.message),
    })?;
    match outcome {
        colony_cluster::Genesis::AnotherNode => {
            let _ = std::fs::remove_file(&token_file);
            tracing::info!(
                "the cluster's genesis was installed by another node; this node follows it"
            );
            return Ok(None);
        }
        colony_cluster::Genesis::ThisNode(Some(outcome))
            if !outcome.primary.decision.is_allowed() =>
        {
            return Err(NodeError::Io {
                context: "genesis".into(),
                source: std::io::Error::other(format!(
                    "genesis was denied: {:?}",
                    outcome.primary.reason
                )),
            });
        }
        // Genesis on an empty log is never denied: one whose acknowledgement was lost
        // is the stream's first command, applied.
        colony_cluster::Genesis::ThisNode(_) => {}
    }
    tracing::info!(
        "created the admin principal 1.1; its token is in {} (mode 0600)",
        token_file.display()
    );
    Ok(Some(token_file))
}
