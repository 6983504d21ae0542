//! The one declaration of every HTTP route: its handler (whose `#[utoipa::path]`
//! annotation gives the method, the path and the OpenAPI operation), the scope a
//! token needs for it, its lane and its body bound. The router, the scope checks
//! (`auth.rs`), the body bounds (`edge.rs`, `body.rs`), the OpenAPI document and the
//! authorization matrix's coverage test all come from [`entries`], so that a route is
//! written in one place. (MCP tools are to come from the same table: a route's
//! handler, scope and types are what a tool needs.)

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use crate::route::{serves, BodyBound, Lane, Route, Routes};

use super::{
    alerts, artifacts, audit, bus, bus_http, cluster, dashboard, gateway, governance, grants,
    hypernet_tasks, inbox, ledger, limits, metrics, openapi, principals, reports, tasks, tokens,
    workers, AppState,
};

/// One declaration: the route's handler, as documented (`routes!`) or not.
pub(crate) struct Entry {
    scope: Option<&'static str>,
    lane: Lane,
    body: BodyBound,
    handler: Handler,
}

enum Handler {
    Documented(utoipa_axum::router::UtoipaMethodRouter<AppState>),
    Plain(Method, &'static str, MethodRouter<AppState>),
}

fn documented(
    handler: utoipa_axum::router::UtoipaMethodRouter<AppState>,
    scope: Option<&'static str>,
    lane: Lane,
    body: BodyBound,
) -> Entry {
    Entry {
        scope,
        lane,
        body,
        handler: Handler::Documented(handler),
    }
}

/// Every route, once. Static segments are matched before parameters
/// (`/v1/tasks/claim` before `/v1/tasks/{address}`), whatever the order here.
/// Over 120 lines because it is the route table itself, a line or two per route.
pub(crate) fn entries() -> Vec<Entry> {
    use BodyBound::*;
    use Lane::*;
    let page = || axum::routing::get(dashboard::page);
    vec![
        documented(routes!(super::healthz), None, Open, Small),
        documented(routes!(serve), None, Open, Small),
        Entry {
            scope: None,
            lane: Open,
            body: Small,
            handler: Handler::Plain(Method::GET, "/", page()),
        },
        Entry {
            scope: None,
            lane: Open,
            body: Small,
            handler: Handler::Plain(Method::GET, "/dashboard/{file}", page()),
        },
        // The governance lane.
        documented(
            routes!(dashboard::overview),
            Some("read"),
            Governance,
            Small,
        ),
        documented(routes!(cluster::view), Some("read"), Governance, Small),
        documented(routes!(cluster::admit), Some("admin"), Governance, Small),
        documented(routes!(cluster::remove), Some("admin"), Governance, Small),
        documented(routes!(alerts::list), Some("read"), Governance, Small),
        documented(
            routes!(alerts::dead_letters),
            Some("read"),
            Governance,
            Small,
        ),
        documented(routes!(limits::list), Some("read"), Governance, Small),
        documented(routes!(limits::one), Some("read"), Governance, Small),
        documented(
            routes!(principals::create),
            Some("spawn"),
            Governance,
            Small,
        ),
        documented(routes!(principals::list), Some("read"), Governance, Small),
        documented(routes!(principals::one), Some("read"), Governance, Small),
        documented(
            routes!(principals::remove),
            Some("spawn"),
            Governance,
            Small,
        ),
        documented(
            routes!(principals::release),
            Some("governance"),
            Governance,
            Small,
        ),
        documented(routes!(tokens::create), Some("tokens"), Governance, Small),
        documented(routes!(tokens::list), Some("read"), Governance, Small),
        documented(routes!(tokens::revoke), Some("tokens"), Governance, Small),
        documented(
            routes!(governance::propose),
            Some("governance"),
            Governance,
            Small,
        ),
        documented(routes!(governance::list), Some("read"), Governance, Small),
        documented(routes!(governance::one), Some("read"), Governance, Small),
        documented(
            routes!(governance::vote),
            Some("governance"),
            Governance,
            Small,
        ),
        documented(
            routes!(grants::request),
            Some("governance"),
            Governance,
            Small,
        ),
        documented(routes!(grants::list), Some("read"), Governance, Small),
        documented(routes!(grants::one), Some("read"), Governance, Small),
        documented(
            routes!(grants::approve),
            Some("governance"),
            Governance,
            Small,
        ),
        documented(routes!(grants::deny), Some("governance"), Governance, Small),
        documented(routes!(metrics::render), Some("read"), Governance, Small),
        // The gated lane.
        documented(routes!(ledger::reserve), Some("ledger"), Gated, Small),
        documented(routes!(ledger::commit), Some("ledger"), Gated, Small),
        documented(routes!(ledger::release), Some("ledger"), Gated, Small),
        documented(routes!(ledger::grant), Some("ledger"), Gated, Small),
        documented(routes!(ledger::free), Some("ledger"), Gated, Small),
        documented(routes!(ledger::me), Some("read"), Gated, Small),
        documented(routes!(audit::list), Some("read"), Gated, Small),
        documented(routes!(audit::head), Some("read"), Gated, Small),
        documented(routes!(reports::summary), Some("read"), Gated, Small),
        documented(routes!(workers::register), Some("tasks"), Gated, Small),
        documented(routes!(workers::list), Some("read"), Gated, Small),
        documented(routes!(workers::supervisor), Some("read"), Gated, Small),
        documented(routes!(workers::one), Some("read"), Gated, Small),
        documented(routes!(workers::leave), Some("tasks"), Gated, Small),
        documented(routes!(workers::heartbeat), Some("tasks"), Gated, Small),
        documented(routes!(tasks::post), Some("tasks"), Gated, Small),
        documented(routes!(tasks::list), Some("read"), Gated, Small),
        documented(routes!(tasks::claim), Some("tasks"), Gated, Small),
        documented(routes!(tasks::dead), Some("read"), Gated, Small),
        documented(routes!(tasks::one), Some("read"), Gated, Small),
        documented(routes!(tasks::decompose), Some("tasks"), Gated, Small),
        documented(routes!(tasks::requeue), Some("tasks"), Gated, Small),
        documented(routes!(tasks::cancel), Some("tasks"), Gated, Small),
        documented(routes!(tasks::priority), Some("tasks"), Gated, Small),
        documented(routes!(tasks::act), Some("tasks"), Gated, Small),
        documented(routes!(bus::upgrade), Some("bus"), Gated, Small),
        documented(routes!(bus_http::publish), Some("bus"), Gated, Small),
        documented(routes!(bus_http::read), Some("bus"), Gated, Small),
        documented(routes!(inbox::read), Some("bus"), Gated, Small),
        documented(routes!(artifacts::deploy), Some("spawn"), Gated, Artifact),
        documented(routes!(artifacts::list), Some("read"), Gated, Small),
        documented(routes!(artifacts::one), Some("read"), Gated, Small),
        documented(routes!(artifacts::stop), Some("spawn"), Gated, Small),
        documented(routes!(artifacts::start), Some("spawn"), Gated, Small),
        documented(routes!(artifacts::logs), Some("read"), Gated, Small),
        documented(
            routes!(gateway::chat_completions),
            Some("llm"),
            Gated,
            Gateway,
        ),
        documented(routes!(gateway::models), Some("read"), Gated, Small),
        documented(routes!(gateway::messages), Some("llm"), Gated, Gateway),
        documented(routes!(gateway::embeddings), Some("llm"), Gated, Gateway),
        documented(routes!(gateway::responses), Some("llm"), Gated, Gateway),
        documented(routes!(gateway::response_get), Some("read"), Gated, Small),
        documented(routes!(gateway::response_delete), Some("llm"), Gated, Small),
        documented(routes!(bus::create_stream), Some("admin"), Gated, Small),
        documented(routes!(bus::list_streams), Some("read"), Gated, Small),
        documented(routes!(bus::one_stream), Some("read"), Gated, Small),
        documented(routes!(bus::delete_stream), Some("admin"), Gated, Small),
        // The Hypernet swarm's routes, in their old shapes (HYPERNET.md).
        documented(routes!(limits::hypernet_list), Some("read"), Gated, Small),
        documented(routes!(limits::hypernet_one), Some("read"), Gated, Small),
        documented(routes!(limits::hypernet_check), Some("read"), Gated, Small),
        documented(routes!(hypernet_tasks::post), Some("tasks"), Gated, Small),
        documented(routes!(hypernet_tasks::list), Some("read"), Gated, Small),
        documented(routes!(hypernet_tasks::mine), Some("read"), Gated, Small),
        documented(routes!(hypernet_tasks::act), Some("tasks"), Gated, Small),
    ]
}

impl Entry {
    /// The method and path of each operation this entry serves.
    fn routes(&self) -> Vec<Route> {
        let route = |method: Method, path: String, documented: bool| Route {
            method,
            path,
            scope: self.scope,
            lane: self.lane,
            body: self.body,
            documented,
        };
        match &self.handler {
            Handler::Plain(method, path, _) => vec![route(method.clone(), path.to_string(), false)],
            Handler::Documented((_, paths, _)) => paths
                .paths
                .iter()
                .flat_map(|(path, item)| {
                    operations(item)
                        .into_iter()
                        .map(|method| route(method, path.clone(), true))
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }
}

/// The methods a path item has operations for.
fn operations(item: &utoipa::openapi::path::PathItem) -> Vec<Method> {
    [
        (item.get.is_some(), Method::GET),
        (item.post.is_some(), Method::POST),
        (item.put.is_some(), Method::PUT),
        (item.delete.is_some(), Method::DELETE),
        (item.patch.is_some(), Method::PATCH),
    ]
    .into_iter()
    .filter_map(|(present, method)| present.then_some(method))
    .collect()
}

/// Every route, as the table declares it.
pub fn table() -> &'static [Route] {
    static TABLE: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| entries().iter().flat_map(Entry::routes).collect())
}

/// The table, indexed (what `Shared` (`app.rs`) holds).
pub fn routes() -> &'static Routes {
    static ROUTES: std::sync::OnceLock<Routes> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| Routes::new(table()))
}

/// The routes of one lane, with their body bounds.
pub(crate) fn lane(app: &AppState, lane: Lane) -> Router<AppState> {
    let mut router = OpenApiRouter::<AppState>::new();
    let mut plain = Router::<AppState>::new();
    for entry in entries().into_iter().filter(|entry| entry.lane == lane) {
        let limit = entry
            .body
            .bytes(app.shared.gateway.config.request_bytes_max);
        let bounded = entry.body != BodyBound::Small;
        match entry.handler {
            Handler::Documented(handler) if bounded => {
                router = router.routes(handler.layer(DefaultBodyLimit::max(limit)));
            }
            Handler::Documented(handler) => router = router.routes(handler),
            Handler::Plain(_, path, handler) => plain = plain.route(path, handler),
        }
    }
    Router::from(router).merge(plain)
}

/// The OpenAPI paths of every documented route.
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    let mut router = OpenApiRouter::<AppState>::new();
    for entry in entries() {
        if let Handler::Documented(handler) = entry.handler {
            router = router.routes(handler);
        }
    }
    router.into_openapi()
}

/// The document as pretty JSON with a trailing newline (as `docs/openapi.json`): the
/// info and security here, every path from the route table (`routes.rs`).
pub fn openapi_document() -> String {
    let mut document = <openapi::ApiDoc as utoipa::OpenApi>::openapi();
    document.merge(openapi_paths());
    let mut text = document
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node", security(()),
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
pub(crate) async fn serve() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get_or_init(openapi_document).clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(method: Method, path: &str) -> Option<&'static str> {
        routes().find(&method, path).and_then(|route| route.scope)
    }

    #[test]
    fn routes_need_their_scopes() {
        assert_eq!(scope(Method::GET, "/v1/tasks"), Some("read"));
        assert_eq!(scope(Method::HEAD, "/v1/tasks"), Some("read"));
        assert_eq!(scope(Method::POST, "/v1/ledger/reserve"), Some("ledger"));
        assert_eq!(
            scope(Method::POST, "/v1/tasks/{address}/{action}"),
            Some("tasks")
        );
        assert_eq!(scope(Method::DELETE, "/v1/streams/{name}"), Some("admin"));
        assert_eq!(scope(Method::GET, "/v1/bus"), Some("bus"));
        assert_eq!(scope(Method::GET, "/healthz"), None);
        assert!(routes().find(&Method::GET, "/healthz").is_some());
    }

    #[test]
    fn every_route_is_declared_once_and_reads_need_read() {
        let mut seen = std::collections::BTreeSet::new();
        for route in table() {
            assert!(
                seen.insert((route.method.to_string(), route.path.clone())),
                "{} {} is declared twice",
                route.method,
                route.path
            );
            // Every GET but the bus's (the socket, a stream's messages, one's inbox)
            // and the open lane is a read.
            let bus = ["/v1/bus", "/v1/streams/{name}/messages", "/v1/inbox"]
                .contains(&route.path.as_str());
            if route.method == Method::GET && route.lane != Lane::Open && !bus {
                assert_eq!(route.scope, Some("read"), "{} {}", route.method, route.path);
            }
            assert_eq!(route.lane == Lane::Open, route.scope.is_none());
        }
        assert!(seen.len() > 70, "{} routes", seen.len());
    }
}
