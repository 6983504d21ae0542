//! A node in a cluster: joining it at start (see `colony-cluster`), and what the
//! node's shell does differently there.

use std::sync::{Arc, RwLock};

use colony_cluster::{Cluster, ClusterConfig, ClusterError};
use colony_kernel::State;

use crate::metrics::Metrics;
use crate::sequencer::Submitter;
use crate::NodeError;

/// Joins the cluster: connects to NATS, catches up with the stream, and from then on
/// proposes every command there. The node does not start when this fails.
pub(crate) async fn join(
    config: ClusterConfig,
    key: &ed25519_dalek::SigningKey,
    submitter: &Submitter,
    state: &Arc<RwLock<State>>,
    metrics: &Arc<Metrics>,
) -> Result<Cluster, NodeError> {
    let servers = config.servers.join(",");
    Cluster::join(
        config,
        key.clone(),
        submitter.clone(),
        Arc::clone(state),
        Arc::clone(metrics),
    )
    .await
    .map_err(|error: ClusterError| NodeError::Io {
        context: format!("joining the cluster at {servers}"),
        source: std::io::Error::other(error.to_string()),
    })
}

/// In a cluster, how often a node opens the streams other nodes defined.
const STREAMS_RECONCILE_MS: u64 = 250;

/// In a cluster, opens the streams another node defined and closes those it deleted
/// (the node that decided it does so at once), every `STREAMS_RECONCILE_MS`.
pub(crate) async fn reconcile_streams(bus: Arc<crate::bus::Bus>, state: Arc<RwLock<State>>) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(STREAMS_RECONCILE_MS));
    loop {
        every.tick().await;
        let specs = state.read().expect("state lock").stream_specs();
        bus.streams.reconcile(&specs);
    }
}
