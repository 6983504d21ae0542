//! Worker death to task claimed by another, on a real node and its own clock.
//! Prints the distribution; asserts nothing.
//!
//! Heartbeat 200 ms, timeout 600 ms, bus grace 300 ms. Each trial: worker A takes a
//! task under its session and dies; worker B asks for work every 20 ms (and
//! heartbeats); the time from A's death to B's claim is recorded.
//! - silent: A stops heartbeating over HTTP (death = its last heartbeat);
//! - dropped: A holds its session on the bus and its connection drops
//!   (death = the drop).
//!
//! A third worker heartbeats at 90% of the timeout throughout: it must never be
//! declared lost (false positives).
//!
//! Run: `cargo bench -p colony-node --bench failover_node [-- quick]`.

use std::path::Path;
use std::time::{Duration, Instant};

use colony_node::bus::BusConfig;
use colony_node::{Node, NodeConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The allocator the `colony` binary ships with (`crates/colony/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEARTBEAT_MS: u64 = 200;
const TIMEOUT_MS: u64 = 600;
const GRACE_MS: u64 = 300;
const POLL: Duration = Duration::from_millis(20);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        serde_json::from_str(&text)
            .unwrap_or_else(|_| json!({"status": status.as_u16(), "body": text}))
    }

    async fn principal(&self, admin: &str, name: &str) -> String {
        let created = self
            .post(
                "/v1/principals",
                admin,
                json!({"name": name, "kind": "ai", "roles": ["member"], "justification": "failover bench"}),
            )
            .await;
        created["token"].as_str().unwrap().to_string()
    }

    async fn register(&self, token: &str) -> u64 {
        let session = self
            .post(
                "/v1/workers",
                token,
                json!({"capabilities": ["bench"], "justification": "bench"}),
            )
            .await;
        session["worker"]
            .as_u64()
            .unwrap_or_else(|| panic!("{session}"))
    }
}

fn genesis_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in ["limits.toml", "quotas.toml", "governance.toml"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    let quotas: String = std::fs::read_to_string(dir.path().join("quotas.toml"))
        .unwrap()
        .lines()
        .map(|line| {
            if line.starts_with("io_ops =") && !line.contains('"') {
                "io_ops = \"unlimited\"\n".to_string()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("quotas.toml"), quotas).unwrap();
    std::fs::write(
        dir.path().join("tasks.toml"),
        format!("[workers]\nheartbeat = \"{HEARTBEAT_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\n"),
    )
    .unwrap();
    dir
}

/// B asks for work every POLL (heartbeating its session as it goes) until it gets
/// `address`; returns when.
async fn claim_when_free(api: &Api, token: &str, worker: u64, address: &str) -> Instant {
    let mut last_heartbeat = Instant::now();
    loop {
        let claim = api
            .post(
                "/v1/tasks/claim",
                token,
                json!({"worker": worker, "justification": "bench"}),
            )
            .await;
        if claim["task"]["address"] == json!(address) {
            let at = Instant::now();
            let lease = claim["lease"]["token"].as_u64().unwrap();
            let done = api
                .post(
                    &format!("/v1/tasks/{address}/complete"),
                    token,
                    json!({"lease_token": lease, "result": "done", "justification": "bench"}),
                )
                .await;
            assert_eq!(done["status"], "completed", "{done}");
            return at;
        }
        if last_heartbeat.elapsed() >= Duration::from_millis(HEARTBEAT_MS) {
            api.post(&format!("/v1/workers/{worker}/heartbeat"), token, json!({}))
                .await;
            last_heartbeat = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

fn report(name: &str, mut samples: Vec<Duration>, unit_ms: u64, unit: &str) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let show = |d: Duration| {
        format!(
            "{:.0} ms = {:.2} {unit}",
            d.as_secs_f64() * 1000.0,
            d.as_secs_f64() * 1000.0 / unit_ms as f64
        )
    };
    println!(
        "{name}: {} trials: p50 {}, p99 {}, max {}",
        samples.len(),
        show(at(0.5)),
        show(at(0.99)),
        show(*samples.last().unwrap())
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let trials = if quick { 10 } else { 40 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = genesis_dir();
        let data = tempfile::tempdir().unwrap();
        let node = Node::start(NodeConfig {
            data_dir: data.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config_dir: config.path().to_path_buf(),
            config_dir_required: true,
            bus: Some(BusConfig {
                worker_grace_ms: GRACE_MS,
                ..BusConfig::default()
            }),
            ..NodeConfig::default()
        })
        .await
        .unwrap();
        let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap().trim().to_string();
        let api = Api {
            http: reqwest::Client::new(),
            base: format!("http://{}", node.local_addr()),
        };
        let (a, b, c) = (
            api.principal(&admin, "dies").await,
            api.principal(&admin, "takes-over").await,
            api.principal(&admin, "slow-but-alive").await,
        );
        let b_worker = api.register(&b).await;

        // The slow but alive worker: a heartbeat at 90% of the timeout, all along.
        let c_worker = api.register(&c).await;
        let slow = {
            let (http, base, c) = (api.http.clone(), api.base.clone(), c.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 9 / 10)).await;
                    let _ = http
                        .post(format!("{base}/v1/workers/{c_worker}/heartbeat"))
                        .bearer_auth(&c)
                        .json(&json!({}))
                        .send()
                        .await;
                }
            })
        };

        let mut silent = Vec::new();
        for n in 0..trials {
            let a_worker = api.register(&a).await;
            let task = api
                .post("/v1/tasks", &admin, json!({"title": format!("silent {n}"), "capabilities": ["bench"], "justification": "bench"}))
                .await;
            let address = task["address"].as_str().unwrap().to_string();
            let claim = api.post("/v1/tasks/claim", &a, json!({"worker": a_worker, "justification": "bench"})).await;
            assert_eq!(claim["task"]["address"], json!(address), "{claim}");
            api.post(&format!("/v1/workers/{a_worker}/heartbeat"), &a, json!({})).await;
            let death = Instant::now();
            let claimed = claim_when_free(&api, &b, b_worker, &address).await;
            silent.push(claimed - death);
        }
        report("silent worker (HTTP heartbeats stop)", silent, TIMEOUT_MS, "timeouts");

        let mut dropped = Vec::new();
        for n in 0..trials {
            let mut request = format!("ws://{}/v1/bus", node.local_addr()).into_client_request().unwrap();
            request.headers_mut().insert("authorization", format!("Bearer {a}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            ws.send(Message::Text(r#"{"op":"hello","id":1,"capabilities":["bench"]}"#.into())).await.unwrap();
            let hello: Value = loop {
                if let Some(Ok(Message::Text(text))) = ws.next().await {
                    break serde_json::from_str(&text).unwrap();
                }
            };
            let a_worker = hello["worker"].as_u64().unwrap_or_else(|| panic!("{hello}"));
            let task = api
                .post("/v1/tasks", &admin, json!({"title": format!("dropped {n}"), "capabilities": ["bench"], "justification": "bench"}))
                .await;
            let address = task["address"].as_str().unwrap().to_string();
            let claim = api.post("/v1/tasks/claim", &a, json!({"worker": a_worker, "justification": "bench"})).await;
            assert_eq!(claim["task"]["address"], json!(address), "{claim}");
            drop(ws);
            let death = Instant::now();
            let claimed = claim_when_free(&api, &b, b_worker, &address).await;
            dropped.push(claimed - death);
        }
        report("dropped bus connection (grace 300 ms)", dropped, GRACE_MS, "grace periods");
        slow.abort();
        let c_state = api
            .http
            .get(format!("{}/v1/workers/{c_worker}", api.base))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        println!(
            "false positives: the worker heartbeating at 90% of the timeout is {} after {} trials",
            c_state["state"],
            2 * trials
        );
        node.shutdown().await.unwrap();
    });
}
