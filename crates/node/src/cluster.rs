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
    submitter: &Submitter,
    state: &Arc<RwLock<State>>,
    metrics: &Arc<Metrics>,
) -> Result<Cluster, NodeError> {
    let servers = config.servers.join(",");
    Cluster::join(
        config,
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
