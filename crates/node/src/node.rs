//! Starting and stopping a node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use colony_log::{RecoveryReport, Store};

use crate::app::{AppState, Shared};
use crate::genesis;
use crate::metrics::Metrics;
use crate::sequencer::{self, Submitter};
use crate::start;
use crate::NodeConfig;
use crate::NodeError;

/// A running node: the sequencer thread and the HTTP server.
pub struct Node {
    local_addr: SocketAddr,
    tls: Option<crate::tls::ServerTls>,
    shared: Arc<Shared>,
    submitter: Submitter,
    sequencer: std::thread::JoinHandle<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_server: tokio::sync::watch::Sender<bool>,
    recovery: RecoveryReport,
    admin_token_file: Option<PathBuf>,
    supervisor: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    )>,
    edge_flusher: (
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    ),
    reconciler: tokio::task::JoinHandle<()>,
    /// Samples the limits for the dashboard's history.
    sampler: tokio::task::JoinHandle<()>,
    /// Watches the figures for alerts.
    watcher: tokio::task::JoinHandle<()>,
    /// The upstream MCP servers it runs.
    upstreams: Arc<crate::mcp::upstream::Upstreams>,
    /// The MCP side's parts (its subscriptions are closed at shutdown).
    mcp: Arc<crate::mcp::McpStatus>,
    /// Signs the decision log's heads.
    signer: tokio::task::JoinHandle<()>,
    /// Exports the gateway's spans, when `OTEL_EXPORTER_OTLP_ENDPOINT` says where.
    telemetry: Option<colony_telemetry::Telemetry>,
    /// Renews heard worker sessions and declares silent ones lost.
    liveness: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Recovers the data directory, applies genesis on first start, and serves.
    ///
    /// Over 120 lines because it is the node's composition root: each part is made
    /// by a function of its own (`start.rs`), here only in the order the parts need
    /// each other and handed to the ones that use them.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let (store, state, recovery) = recover(&config).await?;
        let genesis_config = genesis_to_apply(&config, &state)?;

        let state = Arc::new(RwLock::new(state));
        let metrics = Arc::new(Metrics::default());
        let audit = store.audit_reader();
        let event_tap = Arc::new(sequencer::EventTap::default());
        let fatal = crate::fatal::Fatal::new();
        // The node's key signs its chain heads, the logs' cuts and, in a cluster,
        // every command it proposes.
        let node_key = crate::identity::load_or_create(&config.data_dir)
            .map_err(start::failed("the node's key"))?;
        let (submitter, sequencer) = sequencer::spawn(
            start::sequencer_config(&config, &node_key)?,
            store,
            Arc::clone(&state),
            Arc::clone(&metrics),
            Arc::clone(&event_tap),
            Arc::clone(&fatal),
        );

        let cluster = match config.cluster.clone() {
            Some(cluster) => {
                Some(crate::cluster::join(cluster, &node_key, &submitter, &state, &metrics).await?)
            }
            None => None,
        };
        // In a cluster another node may have installed genesis meanwhile.
        let genesis_config =
            genesis_config.filter(|_| !state.read().expect("state lock").is_initialized());
        let mut admin_token_file = None;
        if let Some(genesis_config) = genesis_config {
            admin_token_file = crate::first_start::apply_genesis(
                &config.data_dir,
                genesis_config,
                &submitter,
                cluster.as_ref(),
            )
            .await?;
        }
        // This start installed genesis (in a cluster, the one node that did).
        let first_start = admin_token_file.is_some();

        let (tls, listener, local_addr) = start::listen(&config).await?;
        let start::BusParts {
            bus,
            liveness,
            relay,
        } = start::bus(&config, &state, &submitter, cluster.as_ref()).await?;
        let (stop_edge, edge_stopped) = tokio::sync::watch::channel(false);
        let edge_flusher = tokio::spawn(crate::edge_flush::edge_flush_loop(
            Arc::clone(&bus),
            submitter.clone(),
            cluster.clone(),
            edge_stopped,
        ));
        let (gateway, telemetry) = start::gateway(&config, &state, &submitter)?;
        let listen_limits = match config.listen_limits.clone() {
            Some(limits) => limits,
            None => genesis::load_http(&config.config_dir)?,
        };
        let read = match config.access {
            Some(policy) => policy,
            None => crate::access::ReadPolicy::load(&config.config_dir)?,
        };
        let (artifacts, artifacts_setup) =
            start::artifacts(&config, &state, &submitter, &bus, &gateway)?;
        // Before any connection (nobody can subscribe before), so no decision that
        // someone could hear of goes unpublished.
        let mcp: Arc<crate::mcp::McpStatus> = Default::default();
        event_tap.connect(Arc::new(crate::artifacts::DecisionFanout {
            bus: Arc::clone(&bus),
            artifacts: artifacts.clone(),
            mcp: Arc::clone(&mcp),
        }));
        let supervisor_status: crate::supervisor::SupervisorStatus = Default::default();
        let alerts = start::alerts(&config)?;
        let heads_config = crate::audit_heads::HeadsConfig::load(&config.config_dir)?;
        let heads = crate::audit_heads::Heads::open(node_key, &config.data_dir, heads_config)
            .map_err(start::failed("the signed heads"))?;
        tracing::info!(public_key = %heads.public_key(), "node key");
        let claim_waiters = Arc::new(crate::claim_wait::ClaimWaiters::new(Arc::clone(&state)));
        bus.listen_to_offers(Arc::clone(&claim_waiters) as Arc<dyn crate::bus::OfferListener>);
        let shared = Arc::new(Shared {
            claim_waiters,
            routes: crate::api::routes::routes(),
            artifacts: artifacts.clone(),
            archive: colony_log::TaskArchive::new(&config.data_dir),
            gateway,
            read,
            bus: Arc::clone(&bus),
            state: Arc::clone(&state),
            submitter: submitter.clone(),
            audit,
            metrics,
            in_flight: AtomicU64::new(0),
            connections: crate::listener::Connections::new(listen_limits),
            slots: Default::default(),
            body_bytes: Default::default(),
            fatal,
            supervisor: Arc::clone(&supervisor_status),
            history: Default::default(),
            cluster: cluster.clone(),
            relay,
            alerts,
            heads,
            mcp: Arc::clone(&mcp) as Arc<dyn crate::app::McpActivitySource>,
        });
        let sampler = tokio::spawn(crate::api::sample_history(Arc::clone(&shared)));
        let signer = tokio::spawn(sign_loop(Arc::clone(&shared)));
        let app = AppState {
            shared: Arc::clone(&shared),
        };
        let upstreams = start::upstreams(&config, &mcp.approvals).await?;
        let router = crate::api::router(app.clone());
        let router = crate::mcp::mount(
            app,
            router,
            tls.is_some(),
            Arc::clone(&mcp),
            Arc::clone(&upstreams),
        )
        .map_err(start::failed("the MCP server's tools"))?;
        let (stop_server, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(crate::listener::serve(
            listener,
            router,
            tls.as_ref().map(|tls| Arc::clone(&tls.config)),
            Arc::clone(&shared.connections),
            stopped,
        ));
        if first_start {
            crate::first_start::define_first_streams(&shared).await?;
            crate::first_start::deploy_kick_artifacts(&artifacts, &artifacts_setup.kick).await?;
        }
        let reconciler = artifacts.spawn_reconciler();
        let watcher = tokio::spawn(crate::alerts::watch(
            Arc::clone(&shared),
            start::base_url(local_addr, tls.as_ref()),
        ));
        let supervisor = start::supervisor(
            &config,
            local_addr,
            tls.as_ref(),
            &state,
            &submitter,
            supervisor_status,
        )
        .await?;
        Ok(Node {
            local_addr,
            tls,
            shared,
            submitter,
            sequencer,
            server,
            stop_server,
            recovery,
            admin_token_file,
            supervisor,
            edge_flusher: (edge_flusher, stop_edge),
            reconciler,
            sampler,
            watcher,
            upstreams,
            mcp,
            signer,
            telemetry,
            liveness,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the gateway's spans are exported, when they are.
    pub fn telemetry_endpoint(&self) -> Option<&str> {
        self.telemetry
            .as_ref()
            .map(colony_telemetry::Telemetry::endpoint)
    }

    /// The serving certificate, when the node serves HTTPS.
    pub fn tls(&self) -> Option<&crate::tls::ServerTls> {
        self.tls.as_ref()
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The node's Ed25519 public key (standard base64), which its signed heads of
    /// the decision log are checked with.
    pub fn public_key(&self) -> String {
        self.shared.heads.public_key()
    }

    /// The cluster this node is one of, when it is.
    pub fn cluster(&self) -> Option<&colony_cluster::Cluster> {
        self.shared.cluster.as_ref()
    }

    /// What recovery found when the node started.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Where the admin token was written, when this start created the admin.
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_token_file.as_deref()
    }

    /// Resolves with the reason when the node cannot go on (a panic on the decide
    /// or flush thread); its owner should then exit non-zero.
    pub async fn failed(&self) -> String {
        self.shared.fatal.failed().await
    }

    /// The sequence number of the last command applied.
    pub fn last_seq(&self) -> u64 {
        self.shared.state.read().expect("state lock").last_seq
    }

    /// For tests: nothing is decided until the guard is dropped (see
    /// [`colony_pipeline::sequencer::Submitter::hold_decisions_for_tests`]).
    #[cfg(feature = "test-support")]
    pub fn hold_decisions_for_tests(&self) -> colony_pipeline::sequencer::DecisionsHeld<'_> {
        self.shared.submitter.hold_decisions_for_tests()
    }

    /// For a node that failed (see [`Node::failed`]): stops accepting connections
    /// and gives the requests in flight up to `within` to be answered (they are
    /// answered `503 node_failed`), without writing anything more: no snapshot of a
    /// state that may be half changed.
    pub async fn abandon(self, within: std::time::Duration) {
        self.shared.bus.close_all();
        let _ = self.stop_server.send(true);
        let _ = tokio::time::timeout(within, self.server).await;
    }

    /// Stops accepting requests, lets those in flight finish, makes the log durable,
    /// writes a snapshot, and stops the sequencer.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        if let Some((handle, stop)) = self.supervisor {
            let _ = stop.send(true);
            let _ = handle.await;
        }
        // Artifacts finish their turns and give their memory back while the
        // pipeline still takes commands.
        self.reconciler.abort();
        if let Some(liveness) = &self.liveness {
            liveness.abort();
        }
        self.sampler.abort();
        self.watcher.abort();
        self.upstreams.stop().await;
        self.mcp.watches.close();
        self.signer.abort();
        self.shared.artifacts.shutdown().await;
        self.shared.bus.close_all();
        self.shared.claim_waiters.close();
        let _ = self.stop_server.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(NodeError::Io {
                    context: "HTTP server".into(),
                    source,
                })
            }
            Err(join) => tracing::error!("HTTP server task failed: {join}"),
        }
        // The edge's last usage goes into the log before it closes.
        let (flusher, stop) = self.edge_flusher;
        let _ = stop.send(true);
        let _ = flusher.await;
        let bus = Arc::clone(&self.shared.bus);
        let _ = tokio::task::spawn_blocking(move || bus.streams.shutdown()).await;
        if let Some(cluster) = &self.shared.cluster {
            cluster.stop();
        }
        self.submitter.shutdown().await;
        let sequencer = self.sequencer;
        let _ = tokio::task::spawn_blocking(move || sequencer.join()).await;
        // The last records are covered by a signed head too.
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.sign_heads(true)).await;
        // The spans of the last calls (their settlements included) are exported.
        if let Some(telemetry) = self.telemetry {
            let ended = std::time::Duration::from_secs(5);
            self.shared.gateway.spans_ended(ended).await;
            telemetry.shutdown().await;
        }
        Ok(())
    }
}

/// Signs the decision log's heads as they come due, for as long as the node runs.
async fn sign_loop(shared: Arc<Shared>) {
    let every = std::time::Duration::from_millis(crate::audit_heads::LOOK_EVERY_MS);
    loop {
        tokio::time::sleep(every).await;
        let shared = Arc::clone(&shared);
        // Reading the record is a file read: off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            shared.sign_heads(false);
            shared
                .heads
                .checkpoint(&shared.audit, shared.cluster.as_ref());
        })
        .await;
    }
}

/// The store opened and its logs replayed into the state (on a blocking thread),
/// what recovery did logged.
async fn recover(
    config: &NodeConfig,
) -> Result<(Store, colony_kernel::State, RecoveryReport), NodeError> {
    let data_dir = config.data_dir.clone();
    let store_options = config.store.clone();
    let (store, state, recovery) =
        tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options))
            .await
            .expect("store recovery does not panic")?;
    log_recovery(&config.data_dir, &recovery, state.last_seq);
    Ok((store, state, recovery))
}

/// At a first start, the genesis files read (to be applied once the sequencer
/// runs); later, `None`, and the configuration directory is not read again.
fn genesis_to_apply(
    config: &NodeConfig,
    state: &colony_kernel::State,
) -> Result<Option<genesis::GenesisConfig>, NodeError> {
    if !state.is_initialized() {
        return Ok(Some(crate::first_start::load_genesis(config)?));
    }
    if config.config_dir.exists() {
        tracing::info!(
            "genesis was applied at first start; {} is not read again (limits change through governance)",
            config.config_dir.display()
        );
    }
    Ok(None)
}

fn log_recovery(data_dir: &Path, report: &RecoveryReport, last_seq: u64) {
    for (file, bytes) in &report.truncated {
        tracing::warn!(
            "cut a torn tail of {bytes} bytes off {} (a crash interrupted a write)",
            file.display()
        );
    }
    match &report.snapshot {
        Some(snapshot) => tracing::info!(
            "recovered {} to command {last_seq}: snapshot {} plus {} commands replayed",
            data_dir.display(),
            snapshot.display(),
            report.replayed
        ),
        None if last_seq > 0 => {
            tracing::info!(
                "recovered {} to command {last_seq}: {} commands replayed",
                data_dir.display(),
                report.replayed
            )
        }
        None => {}
    }
    if report.regenerated > 0 {
        tracing::warn!(
            "rebuilt {} decision records from the command log",
            report.regenerated
        );
    }
}
