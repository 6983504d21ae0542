//! The MCP server's handler: `tools/list` shows the tools the caller's token and
//! roles may call; `tools/call` makes the tool's HTTP call through the node's own
//! router, with the caller's token, and answers what it answered; resources are
//! read (`resources.rs`) and listened to (`listen.rs`) the same way.

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    Implementation, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use super::server::ColonyMcp;

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
        let _counted = self.status.call_started();
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
