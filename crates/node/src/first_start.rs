//! What the admin does once, at a node's first start, after genesis: the durable
//! stream that keeps proximity alerts, and the kick artifacts of `artifacts.toml`.

use colony_kernel::{CommandBody, PrincipalId};

use crate::app::Shared;
use crate::NodeError;

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
