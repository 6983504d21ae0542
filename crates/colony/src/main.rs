//! `colony`: run a node, and talk to one.
//!
//! Thin glue: argument parsing (clap) and output. `up` runs [`colony_node::Node`];
//! the other commands call the HTTP API ([`client`]) or read a data directory
//! ([`colony_log::verify_audit`]).
//!
//! The top of the command line and the dispatch are here; each command group's
//! subcommands and flags live in the file that runs them.

/// mimalloc rather than the system's malloc: the node allocates on every request and
/// every command (bodies, envelopes, records), across threads; with glibc's malloc a
/// fifth of a three-node cluster's CPU per command went to it (docs/benchmarks.md,
/// twenty-sixth session). The benchmarks that run nodes in their own process use it
/// too, so that they measure what this binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod artifacts;
mod audit;
mod bus;
mod client;
mod cluster;
mod commands;
mod demo;
mod governance;
mod grants;
mod ledger;
mod mcp;
mod output;
mod principals;
mod sandbox;
mod tasks;
mod tokens;
mod worker;
mod worker_exec;
mod worker_time;

use audit::AuditCommand;
use governance::LimitsCommand;
use ledger::LedgerCommand;
use principals::PrincipalsCommand;
use tasks::TasksCommand;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "colony",
    version,
    about = "A runtime for swarms of AI agents and the people working with them: \
every action gated by limits and quotas, every limit governed, every decision in a verifiable log."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to reach a node.
#[derive(Args, Clone)]
pub struct Remote {
    /// The node's URL.
    #[arg(
        long,
        env = "COLONY_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub url: String,
    /// Bearer token (default: the contents of ./colony-data/admin.token, if present).
    #[arg(long, env = "COLONY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// A PEM file of CA certificates that verify the node's certificate (for a
    /// node serving `--tls-self-signed`: its `<data>/tls/cert.pem`), besides the
    /// system's roots and `SSL_CERT_FILE`.
    #[arg(long, env = "COLONY_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// What every state-changing command takes: why (recorded with the decision) and
/// where the node is.
#[derive(Args, Clone)]
pub struct Change {
    /// Why (required; recorded with the decision).
    #[arg(long, short = 'j')]
    pub justification: String,
    #[command(flatten)]
    pub remote: Remote,
}

impl Change {
    /// The body of an action that carries nothing but why.
    pub fn justified(&self) -> colony_api::Justified {
        colony_api::Justified {
            justification: Some(self.justification.clone()),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: embedded storage, HTTP API, until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Show every system-wide limit (usage, soft, hard, state), and change them
    /// through governance: brake, propose, vote.
    Limits {
        #[command(subcommand)]
        action: Option<LimitsCommand>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Post, list and inspect tasks; manage the dead-letter queue.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Serve Colony's MCP tools over stdio (for an MCP client that launches a
    /// process, such as Claude Desktop): each message goes to the node's /mcp with
    /// COLONY_TOKEN, at COLONY_URL.
    Mcp {
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a worker process: take tasks from the board and run a command for each.
    Worker {
        /// Capabilities this worker offers (comma-separated).
        #[arg(long, value_delimiter = ',', env = "COLONY_CAPABILITIES")]
        capabilities: Vec<String>,
        /// The command each task runs (`sh -c`), with the task on stdin.
        #[arg(long)]
        exec: Option<String>,
        /// How long to pause after a claim that found nothing to take (each claim
        /// first waits up to 20 s on the node for work to be posted).
        #[arg(long, default_value_t = 200)]
        poll_ms: u64,
        /// Leave after this many tasks.
        #[arg(long)]
        max_tasks: Option<u64>,
        #[arg(long, env = "COLONY_MODEL")]
        model: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[command(flatten)]
        sandbox: sandbox::SandboxFlags,
        #[command(flatten)]
        remote: Remote,
    },
    /// Runs one task's command under limits and measures it (used by `colony
    /// worker --exec`, not by people).
    #[command(hide = true)]
    SandboxExec(sandbox::ExecArgs),
    /// Publish and subscribe on the agent bus; list and define durable streams.
    #[command(subcommand)]
    Bus(BusCommand),
    /// Bring settings over from the Hypernet swarm.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Serve a mock OpenAI-compatible upstream (deterministic answers with usage;
    /// keys starting with `limited` get 429, `broken` get 500), for trying the
    /// gateway and benchmarking it without network.
    MockLlm {
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
        /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Create, list and remove principals (humans, AIs, artifacts, nodes).
    #[command(subcommand)]
    Principals(PrincipalsCommand),
    /// Make, list, revoke and rotate scoped, expiring tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Proximity alerts: the latest, and the thresholds standing raised
    /// (`--dead-letters`: deliveries to webhooks that never arrived).
    Alerts {
        /// At most this many, the latest.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        dead_letters: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// What happened lately, summed up from the decision log (Markdown; JSON with --json).
    Report {
        /// How far back, such as 24h or 30m.
        #[arg(long, default_value = "24h")]
        since: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask for more (a scope, a role, a quota) for a while; approve or deny others'.
    #[command(subcommand)]
    Grants(grants::GrantsCommand),
    /// Deploy WebAssembly artifacts that run inside Colony on their own quotas.
    #[command(subcommand)]
    Artifacts(artifacts::ArtifactsCommand),
    /// Reserve, commit and release resources against your quotas.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Read and verify the decision log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A cluster's nodes, and admitting their keys.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

#[derive(Args)]
pub struct UpArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "COLONY_DATA", default_value = "colony-data")]
    pub data: PathBuf,
    /// Address to serve the API on.
    #[arg(long, env = "COLONY_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Genesis configuration, read at first start (default ./config/genesis, or the
    /// built-in defaults if that does not exist).
    #[arg(long, env = "COLONY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write a snapshot every this many commands.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// Keep at least this many local worker processes (`colony worker`) alive, more
    /// while tasks wait (up to --workers-max), instead of `supervisor.toml`.
    #[arg(long)]
    pub workers: Option<u32>,
    #[arg(long)]
    pub workers_max: Option<u32>,
    /// The command the supervised workers run per task (`colony worker --exec`);
    /// without it they ask a model through the gateway (--worker-model).
    #[arg(long)]
    pub worker_exec: Option<String>,
    /// The model supervised LLM workers use (default: `auto`, routed by the gateway).
    #[arg(long)]
    pub worker_model: Option<String>,
    /// Run a demonstration: a fresh node in a temporary directory, three supervised
    /// workers (the offline scripted model unless OPENAI_API_KEY is set) on a sample
    /// goal, printing the decision log as it grows; exits when the goal is done.
    #[arg(long)]
    pub demo: bool,
    /// Capabilities of the supervised workers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub worker_capabilities: Vec<String>,
    /// Serve HTTPS and wss:// with this certificate chain (PEM, leaf first; with
    /// --tls-key).
    #[arg(
        long,
        env = "COLONY_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "COLONY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS and wss:// with a certificate made for this node's names on first
    /// start (kept in <data>/tls/); prints its SHA-256 fingerprint.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Run as one node of a cluster: the NATS servers (JetStream) that hold the
    /// command log, `nats://HOST:PORT[,nats://...]` (or `[cluster] servers` in
    /// cluster.toml in the configuration directory).
    #[arg(long, env = "COLONY_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in the cluster, unique in it.
    #[arg(long, env = "COLONY_NODE_NAME")]
    pub node_name: Option<String>,
}

#[derive(Subcommand)]
pub enum BusCommand {
    /// Publish one message (data is JSON, or else sent as a string).
    Pub {
        subject: String,
        data: String,
        /// low, normal, high or critical.
        #[arg(long)]
        priority: Option<String>,
        /// A header, key=value (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print messages on a subject pattern (`*` one token, `>` the rest) as JSON lines.
    Sub {
        pattern: String,
        /// Share the messages with the other members of this queue group: each goes
        /// to one member (in a cluster, one in the whole cluster).
        #[arg(long)]
        queue: Option<String>,
        /// Replay from a durable stream (with --from-seq; new messages only without it).
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        from_seq: Option<u64>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Acknowledge stream messages as they are printed.
        #[arg(long)]
        ack: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List durable streams with their counts.
    Streams {
        #[command(flatten)]
        remote: Remote,
    },
    /// Define a durable stream (admins).
    StreamAdd {
        name: String,
        /// Subject patterns it stores (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        subjects: Vec<String>,
        /// Drop messages older than this ("7d").
        #[arg(long)]
        max_age: Option<String>,
        #[arg(long)]
        max_msgs: Option<u64>,
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Redeliver after this long without an ack ("30s").
        #[arg(long)]
        ack_wait: Option<String>,
        /// Deliveries before a message goes to colony.dlq.<name>.
        #[arg(long)]
        max_deliver: Option<u32>,
        /// Why (recorded in the decision log).
        #[arg(long)]
        justification: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Map a Hypernet swarm's limits onto Colony's, through governance: lower values
    /// apply at once, higher ones become proposals.
    Hypernet {
        /// The swarm's `swarm_config.json` (hard_max_sessions, soft_max_sessions, budget).
        #[arg(long)]
        swarm_config: Option<std::path::PathBuf>,
        /// The coordination board `TASK-BOARD.json`: its open tasks are posted.
        #[arg(long)]
        tasks: Option<std::path::PathBuf>,
        /// The swarm's `limits.json` (custom_limits).
        #[arg(long)]
        limits: Option<std::path::PathBuf>,
        /// A directory of the swarm's markdown messages (`<channel>/*.md` or
        /// `<channel>.md`): stored in the `hypernet-messages` stream.
        #[arg(long)]
        messages: Option<std::path::PathBuf>,
        /// Print what would be proposed without sending it.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sandbox's intermediate process: no runtime, no logging, just the command.
    let cli = match cli.command {
        Command::SandboxExec(args) => return sandbox::exec(args),
        command => Cli { command },
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COLONY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What each command runs: one arm per command (a table, kept whole).
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => commands::up(args).await,
        Command::Limits {
            action: None,
            remote,
        } => commands::limits(remote).await,
        Command::Limits {
            action: Some(action),
            ..
        } => governance::limits(action).await,
        Command::Tasks(command) => tasks::run(command).await,
        Command::Mcp { remote } => mcp::run(remote).await,
        Command::Worker {
            capabilities,
            exec,
            poll_ms,
            max_tasks,
            model,
            profile,
            sandbox,
            remote,
        } => {
            let options = worker::WorkerOptions {
                capabilities,
                exec,
                sandbox,
                poll_ms,
                max_tasks,
                model,
                profile,
            };
            worker::run(options, remote).await
        }
        Command::MockLlm {
            listen,
            tls_cert,
            tls_key,
        } => commands::mock_llm(listen, tls_cert, tls_key).await,
        Command::Bus(command) => match command {
            BusCommand::Pub {
                subject,
                data,
                priority,
                headers,
                remote,
            } => bus::publish(&remote, &subject, &data, priority, &headers).await,
            BusCommand::Sub {
                pattern,
                queue,
                stream,
                from_seq,
                count,
                ack,
                remote,
            } => bus::subscribe(&remote, &pattern, queue, stream, from_seq, count, ack).await,
            BusCommand::Streams { remote } => commands::streams(&remote).await,
            BusCommand::StreamAdd {
                name,
                subjects,
                max_age,
                max_msgs,
                max_bytes,
                ack_wait,
                max_deliver,
                justification,
                remote,
            } => {
                let duration = colony_api::streams::Duration::Text;
                let body = colony_api::streams::CreateStream {
                    name,
                    subjects,
                    max_age: max_age.map(duration),
                    max_msgs,
                    max_bytes,
                    ack_wait: ack_wait.map(duration),
                    max_deliver,
                    justification,
                };
                commands::stream_add(&remote, body).await
            }
        },
        Command::Import(ImportCommand::Hypernet {
            swarm_config,
            tasks: board,
            limits,
            messages,
            dry_run,
            remote,
        }) => {
            let sources = HypernetSources {
                swarm_config,
                board,
                limits,
                messages,
            };
            import_hypernet(sources, dry_run, remote).await
        }
        Command::Principals(command) => principals::run(command).await,
        Command::Tokens(command) => tokens::run(command).await,
        Command::Grants(command) => grants::run(command).await,
        Command::Artifacts(command) => artifacts::run(command).await,
        Command::SandboxExec(args) => Ok(sandbox::exec(args)),
        Command::Report { since, remote } => audit::report(&since, remote).await,
        Command::Alerts {
            limit,
            dead_letters,
            remote,
        } => commands::alerts(limit, dead_letters, &remote).await,
        Command::Ledger(command) => ledger::run(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Cluster(command) => cluster::run(command).await,
    }
}

/// What `colony import hypernet` was given.
struct HypernetSources {
    swarm_config: Option<std::path::PathBuf>,
    board: Option<std::path::PathBuf>,
    limits: Option<std::path::PathBuf>,
    messages: Option<std::path::PathBuf>,
}

/// `colony import hypernet`: the messages, then the configuration and limits, then
/// the task board, each as given.
async fn import_hypernet(
    sources: HypernetSources,
    dry_run: bool,
    remote: Remote,
) -> anyhow::Result<ExitCode> {
    let HypernetSources {
        swarm_config,
        board,
        limits,
        messages,
    } = sources;
    if swarm_config.is_none() && limits.is_none() && board.is_none() && messages.is_none() {
        anyhow::bail!("give --swarm-config, --limits, --tasks or --messages");
    }
    if let Some(dir) = &messages {
        let code = bus::import_messages(dir, dry_run, &remote).await?;
        if swarm_config.is_none() && limits.is_none() && board.is_none() {
            return Ok(code);
        }
    }
    let mut code = ExitCode::SUCCESS;
    if swarm_config.is_some() || limits.is_some() {
        code = governance::import_hypernet(
            swarm_config.as_deref(),
            limits.as_deref(),
            dry_run,
            remote.clone(),
        )
        .await?;
    }
    match board {
        Some(board) => tasks::import_board(&board, dry_run, remote).await,
        None => Ok(code),
    }
}
