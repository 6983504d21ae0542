//! The MCP server's parts: its tools, built from the route table and the OpenAPI
//! document, and [`ColonyMcp`], what every request to `/mcp` is answered with (the
//! caller found by its token, a tool's HTTP request made and answered through the
//! node's own router). `handler.rs` answers the protocol's requests with it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use rmcp::model::{Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
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
    pub(crate) spec: &'static ToolSpec,
    pub(crate) tool: Tool,
    pub(crate) route: &'static Route,
}

/// Every tool, built once from the OpenAPI document and the route table. A tool
/// whose route or schema is missing is a bug: the node does not start.
pub(crate) fn build() -> Result<Vec<Built>, String> {
    let openapi: Value = serde_json::from_str(&crate::api::routes::openapi_document())
        .map_err(|error| format!("the OpenAPI document: {error}"))?;
    TOOLS
        .iter()
        .map(|spec| {
            let (input, output) = super::schema::schemas(spec, &openapi)?;
            let (path, _) = super::schema::split_query(spec.path);
            let method = Method::from_bytes(spec.method.as_bytes()).map_err(|e| e.to_string())?;
            let route = crate::api::routes::routes()
                .serving(&method, path)
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
    pub(crate) watches: Arc<super::watches::TaskWatches>,
    /// What the dashboard shows of the MCP side (the calls in flight counted here).
    pub(crate) status: Arc<super::McpStatus>,
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
        let caller = crate::auth::authenticate(&self.app.shared.state, &token)
            .map_err(|error| McpError::invalid_request(error.message.clone(), None))?;
        Ok((caller, token))
    }

    /// Whether `caller` may call the tool: its token has the route's scope, and its
    /// roles may act when the tool changes anything.
    pub(crate) fn visible(&self, caller: &Caller, built: &Built) -> bool {
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
    pub(crate) fn request(
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
        let route = crate::api::routes::routes().serving(&Method::GET, path);
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
