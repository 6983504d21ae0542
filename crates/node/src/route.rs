//! What the route table says of a route (its method, path, scope, lane and body
//! bound), and the lookup the edge and the authentication use on every request.
//! The table itself is declared with the handlers (`api/routes.rs`); it lives here
//! as data, handed to the node's `Shared` (`app.rs`) at start, so that the edge
//! and the scope checks never import the handlers.

use std::collections::HashMap;

use axum::http::Method;

/// Bound on request bodies, in bytes; larger bodies get 413.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 << 10;

/// Largest deploy body, in bytes: a module of up to about 6 MiB in base64.
pub const ARTIFACT_BODY_BYTES_MAX: usize = 8 << 20;

/// Which middleware a route is served under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Health, the OpenAPI document and the dashboard's page: no token, no gate.
    Open,
    /// Governance, health of the colony and administration: counted but never shed
    /// by `concurrent_api_requests`, so that no load and no brake can keep the
    /// colony from being governed (as Kubernetes exempts its system priority level).
    Governance,
    /// Everything else: gated by `concurrent_api_requests` and the principal's
    /// requests in flight.
    Gated,
}

/// How large a body a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyBound {
    /// [`REQUEST_BODY_BYTES_MAX`] (64 KiB).
    Small,
    /// [`ARTIFACT_BODY_BYTES_MAX`] (a WebAssembly module).
    Artifact,
    /// The gateway's `request_bytes_max` (providers.toml).
    Gateway,
}

impl BodyBound {
    /// The bound in bytes, given the gateway's `request_bytes_max`.
    pub fn bytes(self, gateway_request_bytes_max: usize) -> usize {
        match self {
            BodyBound::Small => REQUEST_BODY_BYTES_MAX,
            BodyBound::Artifact => ARTIFACT_BODY_BYTES_MAX,
            BodyBound::Gateway => gateway_request_bytes_max,
        }
    }
}

/// What the table says of one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The template, as axum matches it (`/v1/tasks/{address}/cancel`).
    pub path: String,
    /// The scope a token needs; `None` for the routes anyone may call.
    pub scope: Option<&'static str>,
    pub lane: Lane,
    pub body: BodyBound,
    /// Whether the OpenAPI document has it (the dashboard's page does not).
    pub documented: bool,
}

/// Whether the route template serves `path`: the same segments, a `{parameter}`
/// matching any one that is not empty.
pub fn serves(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template.split('/'), path.split('/'));
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(wanted), Some(given)) => {
                let parameter = wanted.starts_with('{') && !given.is_empty();
                if wanted != given && !parameter {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Every route, indexed by template: what a request's matched route is.
pub struct Routes {
    table: &'static [Route],
    by_template: HashMap<&'static str, Vec<&'static Route>>,
}

impl Routes {
    pub fn new(table: &'static [Route]) -> Routes {
        let mut by_template: HashMap<&'static str, Vec<&'static Route>> = HashMap::new();
        for route in table {
            by_template
                .entry(route.path.as_str())
                .or_default()
                .push(route);
        }
        Routes { table, by_template }
    }

    /// Every route, as the table declares it.
    pub fn table(&self) -> &'static [Route] {
        self.table
    }

    /// The entry for a request on `template` (the path the router matched); `HEAD`
    /// is `GET`'s. On every request's path: no allocation.
    pub fn find(&self, method: &Method, template: &str) -> Option<&'static Route> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.by_template
            .get(template)?
            .iter()
            .find(|route| route.method == *method)
            .copied()
    }

    /// The entry whose template serves the concrete `path` (`/v1/tasks/0.1`), a
    /// static template first.
    pub fn serving(&self, method: &Method, path: &str) -> Option<&'static Route> {
        self.find(method, path).or_else(|| {
            self.table
                .iter()
                .find(|route| route.method == *method && serves(&route.path, path))
        })
    }
}
