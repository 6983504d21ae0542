//! Colony as an MCP server: Streamable HTTP at `/mcp` (stateless: every request
//! stands alone, so that nothing is parked per client; protocol revisions
//! 2025-06-18, 2025-11-25 and 2026-07-28 as the official Rust SDK, `rmcp`, negotiates
//! them), whose tools are the node's own routes (`tools.rs`, `server.rs`).
//!
//! Opening `/mcp` needs only a valid token: without one the answer is `401` with
//! `WWW-Authenticate` pointing at the protected-resource metadata of RFC 9728
//! (`/.well-known/oauth-protected-resource`). A request from a browser page of
//! another origin is refused (`403`), so that no page can make a visitor's MCP client
//! act. Each tool then needs the scope its route needs.

mod handler;
pub mod listen;
mod progress;
mod resources;
mod schema;
mod server;
pub mod status;
mod tools;
pub mod upstream;
pub mod watches;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::api::AppState;
use crate::ApiError;

pub use server::TOOL_ANSWER_BYTES_MAX;
pub use status::McpStatus;

/// Largest JSON-RPC message `/mcp` reads.
pub const MCP_MESSAGE_BYTES_MAX: usize = 1 << 20;

/// `/mcp` and the protected-resource metadata, added to the node's `router` (whose
/// routes the tools call).
pub fn mount(
    app: AppState,
    router: axum::Router,
    tls: bool,
    status: Arc<McpStatus>,
    upstreams: Arc<upstream::Upstreams>,
) -> Result<axum::Router, String> {
    let watches = Arc::clone(&status.watches);
    let _ = status.upstreams.set(Arc::clone(&upstreams));
    let tools = Arc::new(server::build()?);
    let handler = server::ColonyMcp {
        app: app.clone(),
        router: router.clone(),
        tools,
        upstreams,
        watches,
        status,
    };
    // Hosts and origins are checked by `gate` (any host may name a node; a page of
    // another origin may not call it).
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MCP_MESSAGE_BYTES_MAX)
        .with_legacy_session_mode(false)
        .with_json_response(true);
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let at = Mcp { app, tls };
    let mcp = axum::Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(at.clone(), gate))
        .route(
            "/.well-known/oauth-protected-resource",
            axum::routing::get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            axum::routing::get(protected_resource),
        )
        .with_state(at);
    Ok(router.merge(mcp))
}

/// What `/mcp`'s gate and metadata need.
#[derive(Clone)]
struct Mcp {
    app: AppState,
    tls: bool,
}

/// The node's own URL, as the client reached it.
fn base(request_headers: &axum::http::HeaderMap, tls: bool) -> String {
    let host = request_headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", if tls { "https" } else { "http" })
}

/// RFC 9728: where `/mcp` is and how to present a token to it.
async fn protected_resource(State(mcp): State<Mcp>, request: Request) -> Json<serde_json::Value> {
    let base = base(request.headers(), mcp.tls);
    Json(serde_json::json!({
        "resource": format!("{base}/mcp"),
        "resource_name": "Colony",
        "bearer_methods_supported": ["header"],
        "authorization_servers": [],
        "scopes_supported": ["read", "tasks", "ledger", "governance", "bus", "llm", "spawn", "tokens", "admin"],
    }))
}

/// Before `/mcp`: a valid token (`401` with `WWW-Authenticate` otherwise), and no
/// browser page of another origin.
async fn gate(State(mcp): State<Mcp>, request: Request, next: Next) -> Response {
    let (app, base) = (&mcp.app, base(request.headers(), mcp.tls));
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let same = origin.to_str().is_ok_and(|origin| origin == base);
        if !same {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin",
                format!("requests to /mcp from a page of another origin are refused (this node is {base})"),
            )
            .into_response();
        }
    }
    let authenticated = crate::auth::bearer_token(request.headers())
        .map(|token| crate::auth::authenticate(&app.shared.state, token));
    let refusal = match authenticated {
        Some(Ok(_)) => {
            crate::listener::mark_authenticated(request.extensions());
            return next.run(request).await;
        }
        Some(Err(error)) => error,
        None => ApiError::unauthenticated("send your token as `Authorization: Bearer <token>`"),
    };
    let mut response = refusal.into_response();
    let challenge =
        format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
