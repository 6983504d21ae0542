//! The governed MCP gateway: other MCP servers' tools (`mcp.toml`), offered to
//! agents as `{server}__{tool}` beside the colony's own, each call authorized by the
//! caller's token (`mcp:{server}` or `mcp:{server}__{tool}`) and roles, bounded,
//! rate-limited, priced (reserved before, charged after), approved by a human when
//! the tool says so, and recorded as a kernel decision (`mcp.tool_call`).

pub mod approval;
mod call;
pub mod config;
mod connection;
mod http_client;
mod rate;
pub mod remote;

use std::sync::Arc;

use rmcp::model::Tool;
use serde_json::{json, Map, Value};

pub use approval::Approvals;
pub use config::McpConfig;
use config::{Approval, ServerConfig, ToolRule};
use connection::Connection;

use crate::auth::Caller;

/// The upstream servers of one node.
pub struct Upstreams {
    connections: Vec<Arc<Connection>>,
    approvals: Arc<Approvals>,
    rates: rate::Rates,
    keepers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Upstreams {
    /// Checks every server can be run as configured (the node does not start
    /// otherwise), starts them all at once (each within its `start_timeout`; one
    /// that does not start is started again later, and its tools are not offered
    /// meanwhile), and keeps them running.
    pub async fn start(
        config: McpConfig,
        data_dir: &std::path::Path,
        approvals: Arc<Approvals>,
    ) -> Result<Arc<Upstreams>, String> {
        let connections = config
            .servers
            .into_iter()
            .map(|server| Connection::new(server, data_dir).map(Arc::new))
            .collect::<Result<Vec<_>, String>>()?;
        let first = connections.iter().map(|connection| {
            let connection = Arc::clone(connection);
            async move {
                let tools = connection.start_now().await;
                if let Err(why) = tools {
                    tracing::error!(server = %connection.name(), "{why}");
                }
            }
        });
        futures_util::future::join_all(first).await;
        let keepers = connections
            .iter()
            .map(|connection| tokio::spawn(Arc::clone(connection).keep_up()))
            .collect();
        Ok(Arc::new(Upstreams {
            connections,
            approvals,
            rates: Default::default(),
            keepers: std::sync::Mutex::new(keepers),
        }))
    }

    /// Stops every upstream (at the node's shutdown).
    pub async fn stop(&self) {
        for keeper in self.keepers.lock().expect("keepers lock").drain(..) {
            keeper.abort();
        }
        for connection in &self.connections {
            connection.stop().await;
        }
    }

    /// Each server as the dashboard shows it.
    pub(crate) fn servers(&self) -> Vec<colony_api::dashboard::McpServerView> {
        self.connections
            .iter()
            .map(|connection| {
                let (up, calls_in_flight, down_because) = connection.status();
                colony_api::dashboard::McpServerView {
                    name: connection.name().to_string(),
                    up,
                    tools: connection.cached_tools().len() as u64,
                    calls_in_flight,
                    down_because,
                }
            })
            .collect()
    }

    /// The upstream tools `caller` may call, as MCP lists them.
    pub(crate) fn list(&self, caller: &Caller) -> Vec<Tool> {
        let mut listed = Vec::new();
        for connection in &self.connections {
            let server = &connection.config;
            for tool in connection.cached_tools().iter() {
                let Some(rule) = server.rule(&tool.name) else {
                    continue;
                };
                let name = format!("{}__{}", server.name, tool.name);
                if colony_kernel::tool_calls::check_tool_name(&name).is_err()
                    || may_call(caller, server, &tool.name, rule).is_err()
                {
                    continue;
                }
                listed.push(offered(name, tool, server, rule));
            }
        }
        listed
    }

    /// The connection and rule of `{server}__{tool}`, when it is offered.
    fn find(&self, name: &str) -> Option<(&Arc<Connection>, String, &ToolRule)> {
        let (server, tool) = name.split_once("__")?;
        let connection = self.connections.iter().find(|c| c.name() == server)?;
        let rule = connection.config.rule(tool)?;
        Some((connection, tool.to_string(), rule))
    }

    /// Whether `name` is an upstream tool's (`{server}__{tool}` of a configured
    /// server).
    pub(crate) fn serves(&self, name: &str) -> bool {
        name.split_once("__")
            .is_some_and(|(server, _)| self.connections.iter().any(|c| c.name() == server))
    }
}

/// Whether `caller` may call `tool` of `server`: its token has `mcp:{server}`,
/// `mcp:{server}__{tool}` or `*`, and it has one of the rule's roles (admins always).
fn may_call(
    caller: &Caller,
    server: &ServerConfig,
    tool: &str,
    rule: &ToolRule,
) -> Result<(), String> {
    let whole = format!("mcp:{}", server.name);
    let one = format!("mcp:{}__{tool}", server.name);
    let scoped = caller
        .scopes
        .iter()
        .any(|scope| scope == "*" || *scope == whole || *scope == one);
    if !scoped {
        return Err(format!(
            "{}__{tool} needs the scope `{whole}` or `{one}`, which your token lacks (ask for it with grant_request)",
            server.name
        ));
    }
    if !caller.is_admin() && !rule.roles.iter().any(|role| caller.roles.contains(role)) {
        let roles: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
        return Err(format!(
            "{}__{tool} is called by principals with the role {} (or admins)",
            server.name,
            roles.join(" or ")
        ));
    }
    Ok(())
}

/// The tool as agents see it: its upstream's schema with a `justification`
/// argument, its description saying where it runs and what it costs.
fn offered(name: String, tool: &Tool, server: &ServerConfig, rule: &ToolRule) -> Tool {
    let mut schema: Map<String, Value> = (*tool.input_schema).clone();
    let has_own = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key("justification"));
    if !has_own {
        let properties = schema
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(properties) = properties {
            properties.insert(
                "justification".into(),
                json!({"type": "string", "description": "Why you call it: recorded with the decision (Colony removes it before the call)."}),
            );
        }
        let required = schema
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(required) = required {
            required.push(Value::String("justification".into()));
        }
    }
    let mut description = format!(
        "[{} via Colony] {}",
        server.name,
        tool.description.as_deref().unwrap_or("")
    );
    let mut price = vec![format!("{} io_ops", rule.io_ops)];
    if rule.compute_ms > 0 {
        price.push(format!("{} compute_ms", rule.compute_ms));
    }
    if rule.micro_usd > 0 {
        price.push(format!("{} micro-dollars", rule.micro_usd));
    }
    description.push_str(&format!(
        " (Costs {} a call; at most {} calls a minute.",
        price.join(" and "),
        rule.rate_per_minute
    ));
    if rule.approval == Approval::Human {
        description.push_str(&format!(
            " Each call waits for a human member to approve it, up to {} s.",
            rule.approval_timeout_ms / 1_000
        ));
    }
    description.push(')');
    let mut listed = Tool::new(name, description, Arc::new(schema));
    listed.title = tool.title.clone();
    listed.output_schema = tool.output_schema.clone();
    let mut annotations = tool.annotations.clone().unwrap_or_default();
    annotations.open_world_hint = Some(true);
    listed.annotations = Some(annotations);
    listed
}
