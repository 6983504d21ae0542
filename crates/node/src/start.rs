//! The parts of a node, each made from its configuration (given in [`NodeConfig`]
//! or read from the configuration directory) in the order `Node::start` needs them.
//! Each answers a [`NodeError`] that names the part that could not start.

use std::sync::{Arc, RwLock};

use colony_kernel::State;

use crate::genesis;
use crate::sequencer::{SequencerConfig, Submitter};
use crate::tls::ServerTls;
use crate::NodeConfig;
use crate::NodeError;

/// In a cluster, this node's own log is synced within this many milliseconds.
const CLUSTER_LOCAL_SYNC_WITHIN_MS: u64 = 100;

/// A part that could not start, and why.
pub(crate) fn failed(context: &str) -> impl FnOnce(String) -> NodeError + '_ {
    move |message| NodeError::Io {
        context: context.to_string(),
        source: std::io::Error::other(message),
    }
}

/// The sequencer's settings: in a cluster its own log syncs less often (the stream
/// holds every command before anyone is answered), and the logs are pruned by
/// `retention.toml`'s `[logs]` rule, their cuts signed with the node's key.
pub(crate) fn sequencer_config(
    config: &NodeConfig,
    node_key: &ed25519_dalek::SigningKey,
) -> Result<SequencerConfig, NodeError> {
    let mut sequencer = config.sequencer.clone();
    if config.cluster.is_some() {
        sequencer.replicated = true;
        sequencer.decided_sync_within_ms = sequencer
            .decided_sync_within_ms
            .max(CLUSTER_LOCAL_SYNC_WITHIN_MS);
    }
    if sequencer.pruning.is_none() {
        let rule = match config.log_retention.clone() {
            Some(rule) => rule,
            None => genesis::load_log_retention(&config.config_dir)?,
        };
        if !rule.keeps_everything() {
            sequencer.pruning = Some(colony_log::prune::Pruning {
                rule,
                key: node_key.clone(),
            });
        }
    }
    Ok(sequencer)
}

/// The bus with its durable streams, the task that keeps worker sessions alive, and
/// in a cluster the relay to the other nodes (started before any connection, so that
/// every publish reaches them and the durable streams are the cluster's).
pub(crate) struct BusParts {
    pub(crate) bus: Arc<crate::bus::Bus>,
    pub(crate) liveness: Option<tokio::task::JoinHandle<()>>,
    pub(crate) relay: Option<Arc<colony_cluster::bus_relay::BusRelay>>,
}

pub(crate) async fn bus(
    config: &NodeConfig,
    state: &Arc<RwLock<State>>,
    submitter: &Submitter,
    cluster: Option<&colony_cluster::Cluster>,
) -> Result<BusParts, NodeError> {
    let bus_config = match config.bus.clone() {
        Some(bus) => bus,
        None => crate::bus::BusConfig::load(&config.config_dir)?,
    };
    let specs = state.read().expect("state lock").stream_specs();
    let streams = crate::bus::streams::Streams::open(&config.data_dir, &bus_config, specs)
        .map_err(|error| failed("opening bus streams")(error.to_string()))?;
    let bus = crate::bus::Bus::new(
        bus_config,
        Arc::clone(state),
        streams,
        submitter.clone(),
        cluster.is_some(),
    );
    // Heartbeats heard in memory; renewals and losses logged (not in a cluster).
    let liveness = bus
        .liveness
        .clone()
        .map(|liveness| tokio::spawn(liveness.run(submitter.clone())));
    let relay = match cluster {
        Some(cluster) => {
            colony_cluster::stream_mirror::StreamMirror::start(cluster, &bus);
            tokio::spawn(crate::cluster::reconcile_streams(
                Arc::clone(&bus),
                Arc::clone(state),
            ));
            Some(colony_cluster::bus_relay::BusRelay::start(cluster, &bus).await)
        }
        None => None,
    };
    Ok(BusParts {
        bus,
        liveness,
        relay,
    })
}

/// The LLM gateway, and the OTLP export of its spans when configured.
pub(crate) fn gateway(
    config: &NodeConfig,
    state: &Arc<RwLock<State>>,
    submitter: &Submitter,
) -> Result<
    (
        Arc<crate::gateway::Gateway>,
        Option<colony_telemetry::Telemetry>,
    ),
    NodeError,
> {
    let gateway_config = match config.gateway.clone() {
        Some(gateway) => gateway,
        None => crate::gateway::GatewayConfig::load(&config.config_dir, &|name| {
            std::env::var(name).ok()
        })?,
    };
    tracing::info!(
        models = gateway_config.models.len(),
        source = %gateway_config.source,
        "LLM gateway ready"
    );
    let telemetry = match &config.telemetry {
        Some(telemetry) => {
            let started = colony_telemetry::Telemetry::start(telemetry)
                .map_err(failed("OpenTelemetry export"))?;
            tracing::info!(endpoint = %started.endpoint(), protocol = ?telemetry.protocol, "exporting the gateway's spans over OTLP");
            Some(started)
        }
        None => None,
    };
    let gateway = crate::gateway::Gateway::new(
        gateway_config,
        Arc::clone(state),
        submitter.clone(),
        telemetry.as_ref().map(colony_telemetry::Telemetry::tracer),
    )
    .map_err(failed("LLM gateway"))?;
    Ok((gateway, telemetry))
}

/// The artifact runtime (its sandboxes reach the bus and the gateway), and the
/// artifacts to deploy on first start.
pub(crate) fn artifacts(
    config: &NodeConfig,
    state: &Arc<RwLock<State>>,
    submitter: &Submitter,
    bus: &Arc<crate::bus::Bus>,
    gateway: &Arc<crate::gateway::Gateway>,
) -> Result<(colony_artifacts::Runtime, genesis::ArtifactsSetup), NodeError> {
    let setup = match config.artifacts.clone() {
        Some(setup) => setup,
        None => genesis::load_artifacts(&config.config_dir)?,
    };
    let runtime = colony_artifacts::Runtime::new(
        setup.runtime.clone(),
        colony_artifacts::Kernel {
            submitter: submitter.clone(),
            state: Arc::clone(state),
            handle: tokio::runtime::Handle::current(),
        },
        Arc::new(crate::artifacts::NodeServices::new(
            Arc::clone(bus),
            Arc::clone(gateway),
        )),
        config.data_dir.join("artifacts"),
    )
    .map_err(failed("artifact runtime"))?;
    Ok((runtime, setup))
}

/// The alert rules and the webhooks they are sent to.
pub(crate) fn alerts(config: &NodeConfig) -> Result<crate::app::AlertsRuntime, NodeError> {
    let alerts_config = colony_alerts::load(&config.config_dir, &|name| std::env::var(name).ok())
        .map_err(NodeError::Config)?;
    let webhooks = colony_alerts::Webhooks::start(
        &alerts_config.webhooks,
        Some(config.data_dir.join("alerts").join("dead-letters.jsonl")),
        crate::sequencer::now_ms,
    );
    tracing::info!(
        webhooks = alerts_config.webhooks.len(),
        check_every_ms = alerts_config.check_every_ms,
        "alerts ready"
    );
    Ok(crate::app::AlertsRuntime {
        config: alerts_config,
        webhooks,
    })
}

/// The upstream MCP servers of `mcp.toml`, started.
pub(crate) async fn upstreams(
    config: &NodeConfig,
    approvals: &Arc<crate::mcp::upstream::Approvals>,
) -> Result<Arc<crate::mcp::upstream::Upstreams>, NodeError> {
    let mcp_config = match config.mcp.clone() {
        Some(mcp) => mcp,
        None => crate::mcp::upstream::config::load(&config.config_dir)?,
    };
    tracing::info!(
        servers = mcp_config.servers.len(),
        source = %mcp_config.source,
        "MCP gateway: starting upstream servers"
    );
    crate::mcp::upstream::Upstreams::start(mcp_config, &config.data_dir, Arc::clone(approvals))
        .await
        .map_err(failed("the MCP gateway's upstream servers"))
}

/// The node's own URL, as the processes it starts reach it.
pub(crate) fn base_url(local_addr: std::net::SocketAddr, tls: Option<&ServerTls>) -> String {
    format!(
        "{}://{local_addr}",
        if tls.is_some() { "https" } else { "http" }
    )
}

/// The supervisor of `supervisor.toml`'s worker profiles, when there are any, with
/// the way to stop it.
pub(crate) async fn supervisor(
    config: &NodeConfig,
    local_addr: std::net::SocketAddr,
    tls: Option<&ServerTls>,
    state: &Arc<RwLock<State>>,
    submitter: &Submitter,
    status: crate::supervisor::SupervisorStatus,
) -> Result<
    Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    )>,
    NodeError,
> {
    let supervisor_config = match config.supervisor.clone() {
        Some(supervisor) => Some(supervisor),
        None => genesis::load_supervisor(&config.config_dir)?,
    };
    let Some(supervisor) = supervisor_config.filter(|s| !s.profiles.is_empty()) else {
        return Ok(None);
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handle = crate::supervisor::spawn(
        supervisor,
        config.data_dir.clone(),
        crate::supervisor::NodeAddress {
            url: base_url(local_addr, tls),
            ca_file: tls.map(|tls| tls.cert_file.clone()),
        },
        Arc::clone(state),
        submitter.clone(),
        stopped,
        status,
    )
    .await?;
    Ok(Some((handle, stop)))
}

/// The server's TLS (if configured), its listening socket, and the address it got.
pub(crate) async fn listen(
    config: &NodeConfig,
) -> Result<
    (
        Option<ServerTls>,
        tokio::net::TcpListener,
        std::net::SocketAddr,
    ),
    NodeError,
> {
    let tls = match &config.tls {
        Some(source) => Some(ServerTls::load(source, &config.data_dir)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Io {
            context: format!("cannot listen on {}", config.listen),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| NodeError::Io {
        context: "listener address".into(),
        source,
    })?;
    Ok((tls, listener, local_addr))
}
