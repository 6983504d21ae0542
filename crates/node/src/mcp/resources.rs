//! The colony's MCP resources: what an agent reads as context rather than calls.
//! Each is a `GET` route read with the caller's own token (so every gate of the
//! HTTP call applies), its answer given as JSON text:
//!
//! - `colony://limits`: every system-wide limit with its usage and state;
//! - `colony://ledger/me`: the caller's quotas and balances;
//! - `colony://audit`: the newest signed head of the decision log;
//! - `colony://audit/{after}`: the 100 decision records after `after`;
//! - `colony://tasks/{address}`: one task with its subtasks, lease and history
//!   (subscribable: `subscriptions/listen` sends `notifications/resources/updated`
//!   when it changes, `listen.rs`).

use axum::http::StatusCode;
use rmcp::model::{
    CacheScope, ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};

use super::server::ColonyMcp;

/// One fixed resource.
pub(crate) struct Fixed {
    pub uri: &'static str,
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The route that answers it.
    pub path: &'static str,
}

/// Every fixed resource, as `resources/list` shows them.
pub(crate) const FIXED: &[Fixed] = &[
    Fixed {
        uri: "colony://limits",
        name: "limits",
        title: "The colony's limits",
        description: "Every system-wide limit with its usage, soft and hard values, state, and the proposal that set it.",
        path: "/v1/limits",
    },
    Fixed {
        uri: "colony://ledger/me",
        name: "ledger",
        title: "My quotas and balances",
        description: "Your quota of each resource and what is used and reserved of it (llm_budget_usd in micro-dollars).",
        path: "/v1/ledger/me",
    },
    Fixed {
        uri: "colony://audit",
        name: "audit",
        title: "The decision log's signed head",
        description: "The newest signed head of the hash-chained decision log (seq, chain hash, Ed25519 signature); read records with colony://audit/{after}.",
        path: "/v1/audit/head",
    },
];

/// Where a task resource's URIs start.
pub(crate) const TASK_PREFIX: &str = "colony://tasks/";
const AUDIT_PREFIX: &str = "colony://audit/";

/// The templated resources, as `resources/templates/list` shows them.
pub(crate) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("colony://tasks/{address}", "task")
            .with_title("A task")
            .with_description(
                "One task with its subtasks, attempts, lease, budget and history; subscribe \
                 (subscriptions/listen) to hear when it changes.",
            )
            .with_mime_type("application/json"),
        ResourceTemplate::new("colony://audit/{after}", "audit-records")
            .with_title("Decision records")
            .with_description(
                "The 100 decision records after index `after`, oldest first, each with its \
                 reason, justification and chain hash.",
            )
            .with_mime_type("application/json"),
    ]
}

/// The fixed resources, as listed.
pub(crate) fn listed() -> Vec<Resource> {
    FIXED
        .iter()
        .map(|fixed| {
            Resource::new(fixed.uri, fixed.name)
                .with_title(fixed.title)
                .with_description(fixed.description)
                .with_mime_type("application/json")
        })
        .collect()
}

/// The route (path and query) that answers `uri`; `None` when no resource has it.
pub(crate) fn route_of(uri: &str) -> Option<String> {
    if let Some(fixed) = FIXED.iter().find(|fixed| fixed.uri == uri) {
        return Some(fixed.path.to_string());
    }
    if let Some(address) = task_address(uri) {
        return Some(format!("/v1/tasks/{}", colony_api::percent_encode(address)));
    }
    let after = uri.strip_prefix(AUDIT_PREFIX)?;
    let after: u64 = after.parse().ok()?;
    Some(format!("/v1/audit?after={after}&limit=100"))
}

/// The task a `colony://tasks/{address}` URI names.
pub(crate) fn task_address(uri: &str) -> Option<&str> {
    let address = uri.strip_prefix(TASK_PREFIX)?;
    colony_kernel::validate_address(address)
        .is_ok()
        .then_some(address)
}

impl ColonyMcp {
    /// `resources/list`: the fixed resources the caller's token may read.
    pub(crate) fn list_resources_for(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let (caller, _) = self.caller(context)?;
        let resources = listed()
            .into_iter()
            .filter(|resource| {
                route_of(&resource.uri).is_some_and(|path| ColonyMcp::may_read(&caller, &path))
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources)
            .with_ttl_ms(0)
            .with_cache_scope(CacheScope::Private))
    }

    /// `resources/templates/list`: the templates the caller's token may read.
    pub(crate) fn list_templates_for(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let (caller, _) = self.caller(context)?;
        let templates = templates()
            .into_iter()
            .filter(|template| {
                let example = template
                    .uri_template
                    .replace("{address}", "q.1")
                    .replace("{after}", "0");
                route_of(&example).is_some_and(|path| ColonyMcp::may_read(&caller, &path))
            })
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates)
            .with_ttl_ms(0)
            .with_cache_scope(CacheScope::Private))
    }

    /// `resources/read`: the resource's route, read with the caller's token, as JSON
    /// text. A refusal is the route's, said as a JSON-RPC error.
    pub(crate) async fn read_for(
        &self,
        uri: String,
        context: &RequestContext<RoleServer>,
    ) -> Result<ReadResourceResult, McpError> {
        let (_, token) = self.caller(context)?;
        let Some(path) = route_of(&uri) else {
            return Err(McpError::resource_not_found(
                format!(
                    "no resource {uri:?}: read colony://limits, colony://ledger/me, colony://audit, \
                     colony://audit/{{after}} or colony://tasks/{{address}}"
                ),
                None,
            ));
        };
        let request =
            ColonyMcp::get(&token, &path).map_err(|error| McpError::internal_error(error, None))?;
        let (status, answer) = self
            .answer(request)
            .await
            .map_err(|error| McpError::internal_error(error, None))?;
        if !status.is_success() {
            let message = answer["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| answer.to_string());
            let message = format!("{uri}: {} {message}", status.as_u16());
            return Err(if status == StatusCode::NOT_FOUND {
                McpError::resource_not_found(message, Some(answer))
            } else {
                McpError::invalid_request(message, Some(answer))
            });
        }
        let contents =
            ResourceContents::text(answer.to_string(), uri).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents])
            .with_ttl_ms(0)
            .with_cache_scope(CacheScope::Private))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_their_routes() {
        assert_eq!(route_of("colony://limits").as_deref(), Some("/v1/limits"));
        assert_eq!(
            route_of("colony://tasks/main.12.3").as_deref(),
            Some("/v1/tasks/main.12.3")
        );
        assert_eq!(
            route_of("colony://audit/40").as_deref(),
            Some("/v1/audit?after=40&limit=100")
        );
        for unknown in [
            "colony://nothing",
            "colony://tasks/",
            "colony://tasks/a/../../admin",
            "colony://tasks/a?b",
            "colony://audit/x",
            "file:///etc/passwd",
        ] {
            assert_eq!(route_of(unknown), None, "{unknown}");
        }
    }
}
