//! How a node is run: where its data and configuration are, where it listens, and
//! what the configuration directory's files would say when given here instead
//! (tests and benchmarks give them; `colony up` reads the files).

use std::net::SocketAddr;
use std::path::PathBuf;

use colony_log::StoreOptions;

use crate::sequencer::SequencerConfig;

/// How to run a node. `Default` is what `colony up` uses without flags.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `config/genesis/`, read at first start only.
    pub config_dir: PathBuf,
    /// When false and `config_dir` does not exist, the built-in defaults are used.
    pub config_dir_required: bool,
    pub sequencer: SequencerConfig,
    pub store: StoreOptions,
    /// Worker processes to keep alive. When `None`, `supervisor.toml` in the
    /// configuration directory is used if it exists (read at every start).
    pub supervisor: Option<crate::supervisor::SupervisorConfig>,
    /// Bus bounds and grants. When `None`, `bus.toml` in the configuration
    /// directory is used if it exists (read at every start), else the defaults.
    pub bus: Option<crate::bus::BusConfig>,
    /// Upstreams, models and prices of the LLM gateway. When `None`,
    /// `providers.toml` in the configuration directory (read at every start, keys
    /// from the environment), else the shipped defaults.
    pub gateway: Option<crate::gateway::GatewayConfig>,
    /// Who may read what; when `None`, `access.toml` in the configuration directory
    /// (read at every start), else the defaults.
    pub access: Option<crate::access::ReadPolicy>,
    /// Serve HTTPS and `wss://` instead of plain HTTP.
    pub tls: Option<crate::tls::TlsSource>,
    /// Timeouts and bounds on connections and requests; when `None`, `http.toml` in
    /// the configuration directory (read at every start), else the defaults.
    pub listen_limits: Option<crate::listener::ListenConfig>,
    /// The artifact runtime's settings and the artifacts deployed at first start;
    /// when `None`, `artifacts.toml` in the configuration directory (read at every
    /// start), else the runtime's defaults.
    pub artifacts: Option<crate::genesis::ArtifactsSetup>,
    /// Run as one node of a cluster whose command log is a NATS JetStream stream
    /// (`colony up --cluster`); `None` is the embedded default.
    pub cluster: Option<colony_cluster::ClusterConfig>,
    /// The upstream MCP servers whose tools the node offers; when `None`,
    /// `mcp.toml` in the configuration directory (read at every start), else none.
    pub mcp: Option<crate::mcp::upstream::McpConfig>,
    /// Where the gateway's spans are exported (OTLP over HTTP); `colony up` reads
    /// the standard `OTEL_EXPORTER_OTLP_*` variables. `None` exports nothing.
    pub telemetry: Option<colony_telemetry::TelemetryConfig>,
    /// How long the command and decision logs keep their records; `None` reads
    /// `retention.toml`'s `[logs]` from `config_dir` (the shipped defaults without it).
    pub log_retention: Option<colony_log::prune::LogRetention>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("colony-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            config_dir: PathBuf::from("config/genesis"),
            config_dir_required: false,
            sequencer: SequencerConfig::default(),
            store: StoreOptions::default(),
            supervisor: None,
            bus: None,
            gateway: None,
            access: None,
            tls: None,
            listen_limits: None,
            artifacts: None,
            cluster: None,
            mcp: None,
            telemetry: None,
            log_retention: None,
        }
    }
}
