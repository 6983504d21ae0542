//! The head of the HTTP API's OpenAPI 3.1 document: its info and its security
//! schemes. The paths come from the handlers' annotations (every route of the table
//! in `routes.rs`, which puts the two together and serves the document at
//! `GET /v1/openapi.json`, no token needed); `docs/openapi.json` is checked against it
//! by a test that fails when they differ.

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
