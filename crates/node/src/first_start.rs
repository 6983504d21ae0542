//! A node's first start: genesis (read from the configuration directory, logged
//! with the admin's token written first), then what the admin does once: the durable
//! streams that keep proximity alerts and agents' inboxes, and the kick artifacts of `artifacts.toml`.

use std::path::{Path, PathBuf};

use colony_kernel::{CommandBody, Genesis, PrincipalId};

use crate::app::Shared;
use crate::auth::{hash_token, new_token};
use crate::genesis::{self, GenesisConfig};
use crate::private_file::write_private;
use crate::sequencer::Submitter;
use crate::{NodeConfig, NodeError};

/// The durable bus stream that keeps proximity alerts (`colony.alerts.>`), defined by
/// the admin at first start: agents consume alerts with acknowledgements, and a
/// consumer that was away reads what it missed.
pub const ALERTS_STREAM: &str = "alerts";

/// The durable bus stream that keeps every agent's inbox (`agents.<address>.inbox`,
/// at every depth of address), defined by the admin at first start: an
/// agent that holds no subscription (an MCP client) reads what was sent to it with
/// `GET /v1/inbox` or the `inbox_read` tool.
pub const INBOX_STREAM: &str = "inbox";

/// The stream definitions a first start makes: the alerts and the inboxes.
fn first_streams(
    config: &colony_bus::BusConfig,
) -> Vec<(colony_kernel::streams::StreamSpec, &'static str)> {
    let spec = |name: &str, subjects: Vec<String>, max_msgs: u64, max_age_days: u64| {
        colony_kernel::streams::StreamSpec {
            name: name.into(),
            subjects,
            max_age_ms: Some(max_age_days * 86_400_000),
            max_bytes: Some(INBOX_STREAM_BYTES_MAX),
            max_msgs: Some(max_msgs),
            ack_wait_ms: config.stream_ack_wait_ms,
            max_deliver: config.stream_max_deliver,
        }
    };
    vec![
        (
            spec(ALERTS_STREAM, vec!["colony.alerts.>".into()], 100_000, 30),
            "first start: keep proximity alerts durably on the bus",
        ),
        (
            spec(INBOX_STREAM, inbox_subjects(), 100_000, 7),
            "first start: keep every agent's inbox, so that an agent without a subscription (an MCP client) reads what was sent to it",
        ),
    ]
}

/// Most bytes of messages each first-start stream keeps (they are held in memory).
pub const INBOX_STREAM_BYTES_MAX: u64 = 64 << 20;

/// `agents.<address>.inbox` for every depth of address (2 parts and more) whose
/// inbox subject fits in a subject's [`colony_kernel::subject::SUBJECT_TOKENS_MAX`]
/// tokens. Not the subjects below an inbox (`agents.<address>.inbox.<id>`), where
/// answers to a live request go: those stay as fast as any live message.
pub fn inbox_subjects() -> Vec<String> {
    (2..=colony_kernel::subject::SUBJECT_TOKENS_MAX - 2)
        .map(|depth| format!("agents.{}.inbox", vec!["*"; depth].join(".")))
        .collect()
}

pub(crate) async fn define_first_streams(shared: &Shared) -> Result<(), NodeError> {
    for (spec, justification) in first_streams(&shared.bus.config) {
        let name = spec.name.clone();
        let failed = |message: String| NodeError::Io {
            context: format!("defining the {name} stream"),
            source: std::io::Error::other(message),
        };
        let outcome = shared
            .submitter
            .submit(
                PrincipalId::ADMIN,
                justification.into(),
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
    }
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
