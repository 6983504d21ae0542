//! Starting a real node for the node's integration tests.
#![allow(dead_code, unused_imports)]

pub mod bus;
pub mod tools;

pub use tools::*;

use std::path::Path;

use colony_node::{Node, NodeConfig};

/// The shipped genesis files copied to a new directory, with some replaced.
pub fn genesis_dir(replaced: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in [
        "limits.toml",
        "quotas.toml",
        "governance.toml",
        "tasks.toml",
    ] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    for (file, text) in replaced {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    dir
}

/// The shipped `governance.toml` with a review period of `period` (such as "2s"), so
/// that a proposal is decided on the node's own clock within a test.
pub fn governance_reviewed_in(period: &str) -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    std::fs::read_to_string(shipped.join("governance.toml"))
        .unwrap()
        .replace(
            "review_period = \"24h\"",
            &format!("review_period = \"{period}\""),
        )
}

/// A node on a free loopback port over `data`, with genesis from `config`.
pub fn node_config(data: &Path, config: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        config_dir: config.to_path_buf(),
        config_dir_required: true,
        ..NodeConfig::default()
    }
}

/// Starts a node; returns it with its base URL and the admin token.
pub async fn start(data: &Path, config: &Path) -> (Node, String, String) {
    let node = Node::start(node_config(data, config)).await.unwrap();
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let base = format!("http://{}", node.local_addr());
    (node, base, admin)
}

/// A running node whose gateway is configured by `providers` (the text of a
/// providers.toml; keys from `env`), with shipped genesis files.
pub struct GatewayNode {
    pub node: Node,
    pub base: String,
    pub admin: String,
    pub dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub async fn start_with_gateway(
    providers: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> GatewayNode {
    start_with_gateway_traced(providers, env, None).await
}

/// [`start_with_gateway`], exporting the gateway's spans as `telemetry` says.
pub async fn start_with_gateway_traced(
    providers: &str,
    env: &dyn Fn(&str) -> Option<String>,
    telemetry: Option<colony_node::telemetry::TelemetryConfig>,
) -> GatewayNode {
    let gateway =
        colony_node::gateway::GatewayConfig::parse(Path::new("providers.toml"), providers, env)
            .unwrap();
    let config = genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        gateway: Some(gateway),
        telemetry,
        ..node_config(data.path(), config.path())
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    GatewayNode {
        base: format!("http://{}", node.local_addr()),
        node,
        admin,
        dirs: (config, data),
    }
}

/// `GET base+path` with a bearer token, as JSON.
/// The value of the unlabelled family `name` in a `/metrics` text.
pub fn figure(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
        .parse()
        .unwrap()
}

/// The node's `/metrics` text, read with `token`.
pub async fn metrics(base: &str, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn get_json(base: &str, token: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST base+path` with a bearer token and a JSON body, as JSON.
pub async fn post_json(
    base: &str,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `METHOD base+path` with a bearer token and an optional JSON body: the status and
/// the JSON answered (`null` when none).
pub async fn send(
    method: reqwest::Method,
    base: &str,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Creates a principal over HTTP as the admin; returns its address and token.
pub async fn create_principal(
    base: &str,
    admin: &str,
    name: &str,
    kind: &str,
    roles: &[&str],
) -> (String, String) {
    let body = serde_json::json!({"name": name, "kind": kind, "roles": roles, "justification": "a test needs it"});
    let response = post_json(base, admin, "/v1/principals", &body).await;
    let address = response["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"))
        .to_string();
    (address, response["token"].as_str().unwrap().to_string())
}

/// Serves the mock upstream on `listener` (plain HTTP) until the test ends.
pub async fn serve_mock(listener: tokio::net::TcpListener, mock: colony_mock_llm::MockState) {
    colony_node::listener::serve_router(listener, colony_mock_llm::router(mock), None)
        .await
        .unwrap();
}

/// Serves the mock upstream over HTTPS with the test CA's server certificate;
/// returns its base URL (`https://localhost:PORT/v1`).
pub async fn serve_mock_tls(ca: &TestCa, mock: colony_mock_llm::MockState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = colony_node::tls::ServerTls::load(
        &colony_node::tls::TlsSource::Files {
            cert: ca.cert_file.clone(),
            key: ca.key_file.clone(),
        },
        ca.dir.path(),
    )
    .unwrap();
    tokio::spawn(colony_node::listener::serve_router(
        listener,
        colony_mock_llm::router(mock),
        Some(tls.config),
    ));
    format!("https://localhost:{port}/v1")
}
