//! The bus's edge rounds: what publishes spent, charged to the kernel every
//! `edge_flush_ms`; alone the allowances then follow the balances, in a cluster each
//! round renews the node's lease (`colony_bus::lease`).

use std::sync::Arc;

use colony_kernel::{CommandBody, PrincipalId};

use crate::sequencer::{self, Submitter};

/// Charges the bus's edge usage to the kernel every `edge_flush_ms`, then refreshes
/// the allowances from the new balances; once more when stopping. In a cluster each
/// round renews the node's lease instead (`colony_bus::lease`), and a round also
/// runs when a new principal needs an allowance.
pub(crate) async fn edge_flush_loop(
    bus: Arc<crate::bus::Bus>,
    submitter: Submitter,
    cluster: Option<colony_cluster::Cluster>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let period = std::time::Duration::from_millis(bus.config.edge_flush_ms);
    let mut next = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = bus.meters.round_wanted() => false,
            _ = stopped.changed() => true,
        };
        next = tokio::time::Instant::now() + period;
        match &cluster {
            Some(cluster) => lease_round(&bus, &submitter, cluster, stopping).await,
            None => charge_round(&bus, &submitter).await,
        }
        if stopping {
            break;
        }
    }
}

/// One node alone: charges what was spent, and the allowances follow the balances.
async fn charge_round(bus: &crate::bus::Bus, submitter: &Submitter) {
    let usage = bus.meters.flush();
    if !usage.is_empty() {
        let result = submitter
            .submit(
                PrincipalId::SYSTEM,
                "bus publishes let through at the edge since the last report".into(),
                CommandBody::ChargeEdge {
                    usage: usage.clone(),
                },
            )
            .await;
        if let Err(error) = result {
            tracing::warn!("cannot charge edge usage: {}", error.message);
            if error.nothing_decided {
                bus.meters.restore(&usage); // charged by the next round
            }
        }
    }
    bus.meters.refresh(sequencer::now_ms());
}

/// A node of a cluster: charges what was spent and renews the node's lease (when
/// stopping, asks for nothing more, so that the others get it at once).
async fn lease_round(
    bus: &crate::bus::Bus,
    submitter: &Submitter,
    cluster: &colony_cluster::Cluster,
    stopping: bool,
) {
    let mut round = bus.meters.lease_request(
        cluster.node_name(),
        bus.config.edge_flush_ms,
        cluster.live_nodes(),
    );
    if round.idle {
        return; // nothing spent, held or wanted: nothing to log
    }
    if stopping {
        round.request.io_ops.clear();
        round.request.data_bytes = 0;
    }
    let usage = round.request.usage.clone();
    let result = submitter
        .submit(
            PrincipalId::SYSTEM,
            "bus publishes let through at the edge since the last round; the node's lease renewed"
                .into(),
            CommandBody::LeaseEdge(Box::new(round.request)),
        )
        .await;
    match result {
        Ok(outcome) => match &outcome.primary.effect {
            colony_kernel::Effect::EdgeLeased {
                granted,
                data_bytes_granted,
                ..
            } => bus
                .meters
                .apply_lease(granted, *data_bytes_granted, round.until_ms),
            _ => tracing::warn!(
                "the node's edge lease was refused: {:?}",
                outcome.primary.reason
            ),
        },
        // The previous lease holds until its deadline; past it nothing is spent. What
        // this round carried is charged by the next one, unless it may yet be decided.
        Err(error) => {
            tracing::warn!("cannot renew the node's edge lease: {}", error.message);
            if error.nothing_decided {
                bus.meters.restore(&usage);
            }
        }
    }
}
