//! One upstream MCP server, run over stdio (started under bubblewrap unless the
//! file says otherwise) or reached over Streamable HTTP (`http_client.rs`): its
//! session opened when the node starts, its tools listed, opened again when it died
//! or closed (no more often than every [`RESTART_PAUSE_MS`]), every call bounded by
//! the server's deadline and its slots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{Mutex, Semaphore};

use super::config::{Bearer, Launch, ServerConfig};

/// Shortest pause between two starts of a server that keeps failing.
pub const RESTART_PAUSE_MS: u64 = 5_000;
/// Tools one upstream may list (more are not offered).
pub const UPSTREAM_TOOLS_MAX: usize = 512;
/// Largest tool description (its name, description and schemas, as JSON) offered;
/// a larger one is not offered, so that one upstream cannot swell every tool list.
pub const UPSTREAM_TOOL_BYTES_MAX: usize = 64 << 10;
/// Largest answer (a JSON body, or one event of a stream) taken from a server at a
/// URL; a tool's own `result_bytes_max` bounds what is passed on (`call.rs`).
pub const HTTP_ANSWER_BYTES_MAX: usize = 16 << 20;
/// Longest bearer token read from a file.
const BEARER_BYTES_MAX: usize = 8 << 10;
/// Longest line of an upstream's stderr logged (the rest is cut).
const STDERR_LINE_BYTES_MAX: usize = 4_096;
// A message longer than rmcp's line bound (16 MiB) from an upstream's stdout is
// dropped by the SDK; a result larger than the tool's `result_bytes_max` is not
// passed on (`call.rs`).

/// A running session with the server.
struct Session {
    service: RunningService<RoleClient, ()>,
    tools: Arc<Vec<Tool>>,
}

/// Whether the server is up, and since when it failed.
enum Link {
    Down { since: Option<Instant>, why: String },
    Up(Session),
}

/// One upstream, shared by every call of its tools.
pub(crate) struct Connection {
    pub(crate) config: ServerConfig,
    workdir: PathBuf,
    bwrap: Option<PathBuf>,
    /// The bearer token presented to a server at a URL (from `bearer_token_env`).
    bearer: Option<String>,
    /// The other headers it is sent, and the TLS roots its certificate is checked
    /// against (`ca_file` with the system's), read at start.
    headers: std::collections::HashMap<http::HeaderName, http::HeaderValue>,
    tls: Option<Arc<rustls::ClientConfig>>,
    link: Mutex<Link>,
    /// The tools of the live session (none while it is down), for listing without
    /// waiting on a start.
    listed: std::sync::RwLock<Arc<Vec<Tool>>>,
    slots: Semaphore,
}

/// Why a call did not give a result.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// No slot freed before the deadline, or the server cannot be started: the
    /// call never reached it.
    NotCalled(String),
    /// It did not answer in time.
    Timeout,
    /// It answered an MCP error, or the connection broke.
    Failed(String),
}

impl Connection {
    /// Checks that the server can be run as configured (bubblewrap installed when
    /// it is to be sandboxed: the node does not start otherwise).
    pub(crate) fn new(config: ServerConfig, data_dir: &Path) -> Result<Connection, String> {
        let (sandboxed, bearer) = match &config.launch {
            Launch::Stdio { sandboxed, .. } => (*sandboxed, None),
            Launch::Http {
                bearer: Some(Bearer::Env(variable)),
                ..
            } => {
                let token = std::env::var(variable)
                    .ok()
                    .filter(|t| !t.trim().is_empty());
                let token = token.ok_or_else(|| {
                    format!(
                        "mcp.toml: server `{}` presents the bearer token in {variable}, which is not set in the node's environment",
                        config.name
                    )
                })?;
                (false, Some(token.trim().to_string()))
            }
            Launch::Http {
                bearer: Some(Bearer::File(file)),
                ..
            } => {
                let token = std::fs::read_to_string(file)
                    .map_err(|e| {
                        format!(
                            "mcp.toml: server `{}`: bearer_token_file {}: {e}",
                            config.name,
                            file.display()
                        )
                    })?
                    .trim()
                    .to_string();
                if token.is_empty() || token.len() > BEARER_BYTES_MAX {
                    return Err(format!(
                        "mcp.toml: server `{}`: bearer_token_file {} holds no token (or one past {BEARER_BYTES_MAX} bytes)",
                        config.name,
                        file.display()
                    ));
                }
                (false, Some(token))
            }
            Launch::Http { bearer: None, .. } => (false, None),
        };
        let (headers, tls) = match &config.launch {
            Launch::Http {
                headers, ca_file, ..
            } => {
                let headers = super::remote::resolve(&config.name, headers, |variable| {
                    std::env::var(variable).ok()
                })?;
                let tls = colony_gateway::tls::client_config(ca_file.as_deref())
                    .map_err(|e| format!("mcp.toml: server `{}`: ca_file: {e}", config.name))?;
                (headers, Some(tls))
            }
            Launch::Stdio { .. } => (Default::default(), None),
        };
        let bwrap = if sandboxed {
            Some(crate::sandbox::find_program("bwrap").ok_or_else(|| {
                format!(
                    "mcp.toml: server `{}` is to run under bubblewrap, which is not installed: install it (Debian: apt-get install bubblewrap), or set sandbox = \"none\" for it",
                    config.name
                )
            })?)
        } else {
            if matches!(config.launch, Launch::Stdio { .. }) {
                tracing::warn!(
                    server = %config.name,
                    "mcp.toml: WARNING: sandbox = \"none\": this upstream MCP server runs unsandboxed, with the node's access to files and network"
                );
            }
            None
        };
        let workdir = data_dir.join("mcp").join(&config.name);
        let slots = Semaphore::new(config.concurrency);
        Ok(Connection {
            config,
            workdir,
            bwrap,
            bearer,
            headers,
            tls,
            link: Mutex::new(Link::Down {
                since: None,
                why: "not started yet".into(),
            }),
            listed: Default::default(),
            slots,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether it is up, its calls in flight, and why it is down when it is (a link
    /// being started or used right now counts as up when its tools are listed).
    pub(crate) fn status(&self) -> (bool, u64, Option<String>) {
        let in_flight = (self.config.concurrency - self.slots.available_permits()) as u64;
        match self.link.try_lock() {
            Ok(link) => match &*link {
                Link::Up(_) => (true, in_flight, None),
                Link::Down { why, .. } => (false, in_flight, Some(why.clone())),
            },
            Err(_) => (!self.cached_tools().is_empty(), in_flight, None),
        }
    }

    /// Its tools as listed when it started (none while it is down).
    pub(crate) fn cached_tools(&self) -> Arc<Vec<Tool>> {
        Arc::clone(&self.listed.read().expect("listed lock"))
    }

    fn set_listed(&self, tools: Arc<Vec<Tool>>) {
        *self.listed.write().expect("listed lock") = tools;
    }

    /// Starts it now (the node's start waits for this, within `start_timeout`).
    pub(crate) async fn start_now(&self) -> Result<(), String> {
        self.peer().await.map(|_| ())
    }

    /// Starts it again whenever it went away, no more often than every
    /// [`RESTART_PAUSE_MS`].
    pub(crate) async fn keep_up(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(RESTART_PAUSE_MS)).await;
            let _ = self.peer().await;
        }
    }

    /// A handle on a live session, starting one when there is none (and the last
    /// failure is older than [`RESTART_PAUSE_MS`]).
    async fn peer(&self) -> Result<(Peer<RoleClient>, Arc<Vec<Tool>>), String> {
        let mut link = self.link.lock().await;
        if let Link::Up(session) = &*link {
            if !session.service.is_transport_closed() {
                return Ok((session.service.peer().clone(), Arc::clone(&session.tools)));
            }
            *link = Link::Down {
                since: Some(Instant::now()),
                why: "its connection closed".into(),
            };
            self.set_listed(Arc::new(Vec::new()));
            tracing::warn!(server = %self.config.name, "upstream MCP server went away; starting it again");
        }
        if let Link::Down {
            since: Some(since),
            why,
        } = &*link
        {
            if since.elapsed() < Duration::from_millis(RESTART_PAUSE_MS) {
                return Err(format!(
                    "upstream `{}` is down ({why}); it is started again within {} s",
                    self.config.name,
                    RESTART_PAUSE_MS / 1_000
                ));
            }
        }
        let deadline = Duration::from_millis(self.config.start_timeout_ms);
        let started = match tokio::time::timeout(deadline, self.start()).await {
            Ok(Ok(session)) => session,
            Ok(Err(why)) => {
                *link = Link::Down {
                    since: Some(Instant::now()),
                    why: why.clone(),
                };
                return Err(format!(
                    "upstream `{}` cannot start: {why}",
                    self.config.name
                ));
            }
            Err(_) => {
                let why = format!(
                    "it did not answer within {} ms",
                    self.config.start_timeout_ms
                );
                *link = Link::Down {
                    since: Some(Instant::now()),
                    why: why.clone(),
                };
                return Err(format!(
                    "upstream `{}` cannot start: {why}",
                    self.config.name
                ));
            }
        };
        let handle = (started.service.peer().clone(), Arc::clone(&started.tools));
        tracing::info!(server = %self.config.name, tools = started.tools.len(), "upstream MCP server ready");
        self.set_listed(Arc::clone(&started.tools));
        *link = Link::Up(started);
        Ok(handle)
    }

    /// Opens a session (running the program, or over HTTP) and lists its tools.
    async fn start(&self) -> Result<Session, String> {
        let service = match &self.config.launch {
            Launch::Stdio { .. } => self.run_program().await?,
            Launch::Http { url, .. } => self.open_http(url).await?,
        };
        list_tools(&self.config.name, service).await
    }

    /// A session with the server at `url`, over Streamable HTTP.
    async fn open_http(&self, url: &str) -> Result<RunningService<RoleClient, ()>, String> {
        let tls = match &self.tls {
            Some(tls) => Arc::clone(tls),
            None => colony_gateway::tls::client_config(None)?,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(self.config.start_timeout_ms))
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))?;
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
        config.auth_header = self.bearer.clone();
        config.custom_headers = self.headers.clone();
        config.max_json_response_size = HTTP_ANSWER_BYTES_MAX;
        config.max_sse_event_size = HTTP_ANSWER_BYTES_MAX;
        let transport = StreamableHttpClientTransport::with_client(
            super::http_client::HttpUpstream::new(client),
            config,
        );
        ().serve(transport)
            .await
            .map_err(|e| format!("initializing: {e}"))
    }

    /// Runs the program and initializes a session over its stdin and stdout.
    async fn run_program(&self) -> Result<RunningService<RoleClient, ()>, String> {
        let Launch::Stdio {
            command,
            allow_net,
            read_only,
            read_write,
            env,
            ..
        } = &self.config.launch
        else {
            return Err("not a program".into());
        };
        std::fs::create_dir_all(&self.workdir)
            .map_err(|e| format!("cannot make {}: {e}", self.workdir.display()))?;
        let mut process = match &self.bwrap {
            Some(bwrap) => {
                let jail = crate::sandbox::Jail {
                    workdir: self.workdir.clone(),
                    read_only: read_only.clone(),
                    read_write: read_write.clone(),
                    allow_net: *allow_net,
                };
                let mut process = tokio::process::Command::new(bwrap);
                process
                    .args(crate::sandbox::bwrap_args(&jail))
                    .arg("--")
                    .args(command);
                process
            }
            None => {
                let mut process = tokio::process::Command::new(&command[0]);
                process.args(&command[1..]).current_dir(&self.workdir);
                process
            }
        };
        // Nothing of the node's environment (its tokens, provider keys) reaches it.
        process
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.workdir)
            .env("LANG", "C.UTF-8")
            .envs(env)
            .kill_on_drop(true);
        let (transport, stderr) = TokioChildProcess::builder(process)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", command[0]))?;
        if let Some(stderr) = stderr {
            let server = self.config.name.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut lines)
                        .take(STDERR_LINE_BYTES_MAX as u64)
                        .read_until(b'\n', &mut line)
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => tracing::info!(
                            server = %server,
                            "upstream stderr: {}",
                            String::from_utf8_lossy(&line).trim_end()
                        ),
                    }
                }
            });
        }
        ().serve(transport)
            .await
            .map_err(|e| format!("initializing: {e}"))
    }
}

/// Lists the tools of a new session, keeping those within the bounds.
async fn list_tools(
    name: &str,
    service: RunningService<RoleClient, ()>,
) -> Result<Session, String> {
    {
        let mut tools = service
            .peer()
            .list_all_tools()
            .await
            .map_err(|e| format!("listing its tools: {e}"))?;
        let listed = tools.len();
        tools.retain(|tool| {
            serde_json::to_vec(tool).is_ok_and(|json| json.len() <= UPSTREAM_TOOL_BYTES_MAX)
        });
        if tools.len() < listed {
            tracing::warn!(
                server = %name,
                dropped = listed - tools.len(),
                "tools described in more than {UPSTREAM_TOOL_BYTES_MAX} bytes are not offered"
            );
        }
        if tools.len() > UPSTREAM_TOOLS_MAX {
            tracing::warn!(server = %name, listed = tools.len(), "an upstream lists more than {UPSTREAM_TOOLS_MAX} tools; the rest are not offered");
            tools.truncate(UPSTREAM_TOOLS_MAX);
        }
        Ok(Session {
            service,
            tools: Arc::new(tools),
        })
    }
}

impl Connection {
    /// Calls `tool` with `arguments` within the server's deadline (the wait for a
    /// slot counts).
    pub(crate) async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, CallFailure> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.timeout_ms);
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(CallFailure::NotCalled(format!(
                    "upstream `{}` has {} calls in flight, its most, and none ended within its deadline of {} ms",
                    self.config.name, self.config.concurrency, self.config.timeout_ms
                )))
            }
        };
        let (peer, _) = match tokio::time::timeout_at(deadline, self.peer()).await {
            Ok(Ok(peer)) => peer,
            Ok(Err(why)) => return Err(CallFailure::NotCalled(why)),
            Err(_) => {
                return Err(CallFailure::NotCalled(format!(
                    "upstream `{}` did not start before the call's deadline",
                    self.config.name
                )))
            }
        };
        let request = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        match tokio::time::timeout_at(deadline, peer.call_tool(request)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(CallFailure::Failed(error.to_string())),
            Err(_) => Err(CallFailure::Timeout),
        }
    }

    /// Stops the server (at the node's shutdown).
    pub(crate) async fn stop(&self) {
        let mut link = self.link.lock().await;
        if let Link::Up(session) = std::mem::replace(
            &mut *link,
            Link::Down {
                since: None,
                why: "the node stopped".into(),
            },
        ) {
            let _ = tokio::time::timeout(Duration::from_secs(3), session.service.cancel()).await;
        }
    }
}
