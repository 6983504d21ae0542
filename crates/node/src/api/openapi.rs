//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! annotations and `colony-api`'s types, served at `GET /v1/openapi.json` (no token
//! needed) and checked into `docs/openapi.json` by a test that fails when they differ.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use super::{
    alerts, artifacts, audit, bus, cluster, dashboard, gateway, governance, grants, hypernet_tasks,
    ledger, limits, metrics, principals, reports, tasks, tokens, workers,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Colony",
        description = "A runtime for swarms of AI agents: every action through one kernel that checks limits and quotas before and charges after, limits changed by human and AI consensus, a task board, a bus, and an LLM gateway. Every route but /healthz and /v1/openapi.json takes `Authorization: Bearer <token>`; every error is `{\"error\":{\"code\",\"message\",...}}` (docs/api.md).",
        license(name = "Apache-2.0")
    ),
    paths(
        super::healthz, serve, metrics::render, cluster::view,
        limits::list, limits::one,
        principals::create, principals::list, principals::one, principals::remove, principals::release,
        tokens::create, tokens::list, tokens::revoke,
        ledger::reserve, ledger::commit, ledger::release, ledger::grant, ledger::free, ledger::me,
        audit::list, reports::summary, dashboard::overview, alerts::list, alerts::dead_letters,
        governance::propose, governance::list, governance::one, governance::vote,
        grants::request, grants::list, grants::one, grants::approve, grants::deny,
        tasks::post, tasks::list, tasks::claim, tasks::dead, tasks::one, tasks::act, tasks::decompose, tasks::requeue, tasks::cancel, tasks::priority,
        workers::register, workers::list, workers::one, workers::heartbeat, workers::leave, workers::supervisor,
        artifacts::deploy, artifacts::list, artifacts::one, artifacts::stop, artifacts::start, artifacts::logs,
        bus::upgrade, bus::create_stream, bus::list_streams, bus::one_stream, bus::delete_stream,
        gateway::chat_completions, gateway::models, gateway::messages,
        limits::hypernet_list, limits::hypernet_one, limits::hypernet_check,
        hypernet_tasks::post, hypernet_tasks::list, hypernet_tasks::mine, hypernet_tasks::act,
    ),
    modifiers(&Security),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// The two ways to present a token: a bearer header, or Anthropic's `x-api-key`.
struct Security;

impl Modify for Security {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// The document as pretty JSON with a trailing newline (as `docs/openapi.json`).
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node", security(()),
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
pub(crate) async fn serve() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(CONTENT_TYPE, "application/json")],
        DOCUMENT.get_or_init(document).clone(),
    )
}
