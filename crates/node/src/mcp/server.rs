//! The MCP server's handler: `tools/list` shows the tools the caller's token and
//! roles may call; `tools/call` makes the tool's HTTP call through the node's own
//! router, with the caller's token, and answers what it answered.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    Implementation, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value};
use tower::ServiceExt;

use super::tools::{ToolSpec, TOOLS};
use crate::api::routes::Route;
use crate::api::AppState;
use crate::auth::Caller;

/// Most bytes of a route's answer a tool result carries (the HTTP bodies are
/// bounded where they are made; this bounds what one tool call holds in memory).
pub const TOOL_ANSWER_BYTES_MAX: usize = 4 << 20;

/// A tool, ready to list: its spec, the MCP description, and its route.
pub(crate) struct Built {
    spec: &'static ToolSpec,
    tool: Tool,
    route: &'static Route,
}

/// Every tool, built once from the OpenAPI document and the route table. A tool
/// whose route or schema is missing is a bug: the node does not start.
pub(crate) fn build() -> Result<Vec<Built>, String> {
    let openapi: Value = serde_json::from_str(&crate::api::openapi::document())
        .map_err(|error| format!("the OpenAPI document: {error}"))?;
    TOOLS
        .iter()
        .map(|spec| {
            let (input, output) = super::schema::schemas(spec, &openapi)?;
            let (path, _) = super::schema::split_query(spec.path);
            let method = Method::from_bytes(spec.method.as_bytes()).map_err(|e| e.to_string())?;
            let route = crate::api::routes::table()
                .iter()
                .find(|route| route.method == method && route.path == path)
                .or_else(|| {
                    crate::api::routes::table().iter().find(|route| {
                        route.method == method && crate::api::routes::serves(&route.path, path)
                    })
                })
                .ok_or_else(|| format!("{}: no route serves {} {path}", spec.name, spec.method))?;
            let Value::Object(input) = input else {
                return Err(format!("{}: the input schema is not an object", spec.name));
            };
            let mut tool = Tool::new(spec.name, spec.description, Arc::new(input))
                .with_title(spec.title)
                .with_annotations(
                    ToolAnnotations::with_title(spec.title)
                        .read_only(spec.read_only)
                        .destructive(spec.destructive)
                        .open_world(false),
                );
            if let Some(Value::Object(output)) = output {
                tool = tool.with_raw_output_schema(Arc::new(output));
            }
            Ok(Built { spec, tool, route })
        })
        .collect()
}

/// The MCP server of one node.
#[derive(Clone)]
pub(crate) struct ColonyMcp {
    pub(crate) app: AppState,
    /// The node's router (without `/mcp`): tool calls go through every gate an HTTP
    /// call meets.
    pub(crate) router: axum::Router,
    pub(crate) tools: Arc<Vec<Built>>,
    /// Other MCP servers' tools, governed (`mcp.toml`).
    pub(crate) upstreams: Arc<super::upstream::Upstreams>,
    /// Who listens for which task's changes.
    pub(crate) watches: Arc<super::listen::TaskWatches>,
}

impl ColonyMcp {
    /// The caller, by the token its HTTP request to `/mcp` presented.
    pub(crate) fn caller(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<(Caller, String), McpError> {
        let token = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| crate::auth::bearer_token(&parts.headers))
            .map(str::to_string)
            .ok_or_else(|| McpError::invalid_request("no bearer token", None))?;
        let caller = crate::auth::authenticate(&self.app, &token)
            .map_err(|error| McpError::invalid_request(error.message.clone(), None))?;
        Ok((caller, token))
    }

    /// Whether `caller` may call the tool: its token has the route's scope, and its
    /// roles may act when the tool changes anything.
    fn visible(&self, caller: &Caller, built: &Built) -> bool {
        let scope_ok = built
            .route
            .scope
            .is_none_or(|need| crate::scope::allows(&caller.scopes, need, &built.route.path, None));
        let may_act = built.spec.read_only
            || caller.is_admin()
            || caller.roles.contains(&colony_kernel::Role::Member);
        scope_ok && may_act
    }

    /// The tool's HTTP request: path segments and query from the arguments, the
    /// rest as the JSON body (its justification marked as made over MCP).
    fn request(
        spec: &ToolSpec,
        token: &str,
        mut arguments: Map<String, Value>,
    ) -> Result<Request<Body>, String> {
        let (path, fixed) = super::schema::split_query(spec.path);
        let mut filled = Vec::new();
        for segment in path.split('/') {
            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let value = arguments
                        .remove(name)
                        .ok_or_else(|| format!("`{name}` is required"))?;
                    let text = match value {
                        Value::String(text) => text,
                        Value::Number(number) => number.to_string(),
                        _ => return Err(format!("`{name}` is a string or a number")),
                    };
                    filled.push(encode(&text));
                }
                None => filled.push(segment.to_string()),
            }
        }
        let mut uri = filled.join("/");
        let mut query: Vec<String> = fixed.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body = if spec.method == "GET" {
            for (name, value) in &arguments {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                query.push(format!("{}={}", encode(name), encode(&text)));
            }
            Body::empty()
        } else {
            if let Some(Value::String(why)) = arguments.get_mut("justification") {
                *why = format!("[mcp] {why}");
            }
            Body::from(Value::Object(arguments).to_string())
        };
        if !query.is_empty() {
            uri = format!("{uri}?{}", query.join("&"));
        }
        let mut request = Request::builder()
            .method(spec.method)
            .uri(uri)
            .body(body)
            .map_err(|error| error.to_string())?;
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, bearer(token)?);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(request)
    }
}

impl ColonyMcp {
    /// Sends `http` through the node's router; its status and JSON answer.
    pub(crate) async fn answer(
        &self,
        http: Request<Body>,
    ) -> Result<(axum::http::StatusCode, Value), String> {
        let response = match self.router.clone().oneshot(http).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), TOOL_ANSWER_BYTES_MAX)
            .await
            .map_err(|error| format!("reading the answer: {error}"))?;
        let answer: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok((status, answer))
    }

    /// A `GET` of `uri` (path and query) with the caller's token.
    pub(crate) fn get(token: &str, uri: &str) -> Result<Request<Body>, String> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Body::empty())
            .map_err(|error| error.to_string())?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, bearer(token)?);
        Ok(request)
    }

    /// Whether `caller`'s token may `GET` `path` (the route's scope).
    pub(crate) fn may_read(caller: &Caller, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        let route = crate::api::routes::find(&Method::GET, path).or_else(|| {
            crate::api::routes::table()
                .iter()
                .find(|r| r.method == Method::GET && crate::api::routes::serves(&r.path, path))
        });
        route.is_some_and(|route| {
            route
                .scope
                .is_none_or(|need| crate::scope::allows(&caller.scopes, need, &route.path, None))
        })
    }
}

/// The `Authorization` header that presents `token` to the node's own routes.
fn bearer(token: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token is not a header value".to_string())
}

/// Percent-encodes one path segment or query value.
fn encode(text: &str) -> String {
    colony_api::percent_encode(text)
}

impl ServerHandler for ColonyMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("colony", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Colony: a runtime for swarms of AI agents. Take work with task_claim and \
                 finish it with task_complete (heartbeat or checkpoint while you work); post \
                 work with task_post; see your budget with ledger_me; read messages sent to you with \
                 inbox_read. Resources: colony://limits, colony://ledger/me, colony://audit and \
                 colony://tasks/{address} (subscribe with subscriptions/listen). Every call is checked \
                 against your token's scopes, the colony's limits and your quotas, and \
                 recorded with the justification you give.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (caller, _) = self.caller(&context)?;
        let mut tools: Vec<Tool> = self
            .tools
            .iter()
            .filter(|built| self.visible(&caller, built))
            .map(|built| built.tool.clone())
            .collect();
        tools.extend(self.upstreams.list(&caller));
        // Filtered by the caller: no one else's cache may serve it.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.list_resources_for(&context)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.list_templates_for(&context)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.read_for(request.uri, &context).await.map(Into::into)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(super::listen::accepted(requested))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        self.serve_listen(context).await
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Err(McpError::invalid_request(
            format!(
                "{}: this server keeps no sessions, so it cannot hold a subscription between \
                 requests: negotiate protocol 2026-07-28 and use subscriptions/listen",
                request.uri
            ),
            None,
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let (caller, token) = self.caller(&context)?;
        let _counted = self.app.shared.mcp.call_started();
        let Some(built) = self.tools.iter().find(|b| b.spec.name == request.name) else {
            if self.upstreams.serves(&request.name) {
                let arguments = request.arguments.unwrap_or_default();
                let progress = crate::mcp::progress::Progress::of(&context);
                return Ok(self
                    .upstreams
                    .call(&self.app, &caller, &request.name, arguments, progress)
                    .await);
            }
            return Err(McpError::invalid_params(
                format!("no tool named `{}`", request.name),
                None,
            ));
        };
        let arguments = request.arguments.unwrap_or_default();
        let http = match ColonyMcp::request(built.spec, &token, arguments) {
            Ok(http) => http,
            Err(message) => return Ok(tool_error(&format!("{}: {message}", built.spec.name))),
        };
        let (status, answer) = match self.answer(http).await {
            Ok(answered) => answered,
            Err(error) => return Ok(tool_error(&error)),
        };
        if !status.is_success() {
            // A refusal says which scope, limit or quota, and how to get more.
            let message = answer["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| answer.to_string());
            let code = answer["error"]["code"].as_str().unwrap_or("error");
            let hint = match code {
                "scope" | "insufficient_resource" | "hard_limit" => {
                    " (ask for more with the grant_request tool)"
                }
                _ => "",
            };
            let text = format!(
                "{} refused ({} {code}): {message}{hint}\n{answer}",
                built.spec.name,
                status.as_u16()
            );
            return Ok(tool_error(&text));
        }
        Ok(match answer {
            Value::Null => CallToolResult::success(vec![ContentBlock::text(format!(
                "{}: nothing to answer ({})",
                built.spec.name,
                status.as_u16()
            ))]),
            Value::Object(_) => CallToolResult::structured(answer),
            other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
        }
        .into())
    }
}

fn tool_error(text: &str) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(text)]).into()
}
