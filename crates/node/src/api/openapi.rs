//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! annotations (every route of the table in `routes.rs`) and `colony-api`'s types, served at `GET /v1/openapi.json` (no token
//! needed) and checked into `docs/openapi.json` by a test that fails when they differ.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Colony",
        description = "A runtime for swarms of AI agents: every action through one kernel that checks limits and quotas before and charges after, limits changed by human and AI consensus, a task board, a bus, and an LLM gateway. Every route but /healthz and /v1/openapi.json takes `Authorization: Bearer <token>`; every error is `{\"error\":{\"code\",\"message\",...}}` (docs/api.md).",
        license(name = "Apache-2.0")
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

/// The document as pretty JSON with a trailing newline (as `docs/openapi.json`): the
/// info and security here, every path from the route table (`routes.rs`).
pub fn document() -> String {
    let mut document = ApiDoc::openapi();
    document.merge(super::routes::openapi_paths());
    let mut text = document
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
