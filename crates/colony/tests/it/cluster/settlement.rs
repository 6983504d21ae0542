//! Issue 26 in a cluster: a gateway call's settlement that meets a NATS outage (the
//! JetStream cluster without its quorum) is sent again until the cluster's log takes
//! it, and lands exactly once, at the exact cost.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::nodes::get;
use crate::common;
use common::config_with;
use common::nats::NatsCluster;

const PATIENCE: Duration = Duration::from_secs(60);

/// Reads one whole HTTP request (head and `content-length` bytes of body).
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the gateway hung up");
        seen.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return;
            }
        }
    }
}

fn figure(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_26_a_settlement_across_a_nats_outage_lands_exactly_once() {
    let mut nats = NatsCluster::start(3);
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let providers = format!(
        r#"
[gateway]
default_model = "held"
timeout = "60s"

[[upstreams]]
name = "held"
kind = "openai"
base_url = "http://{}/v1"
api_key_envs = ["HELD_KEYS"]

[[models]]
name = "held"
upstream = "held"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
max_output_tokens = 100
"#,
        upstream.local_addr().unwrap()
    );
    let config = config_with(&[("providers.toml", &providers)]);
    let data = tempfile::tempdir().unwrap();
    let (node, url) = common::start_with_args(
        data.path(),
        config.path(),
        &["--cluster", &nats.urls(), "--node-name", "node-1"],
        &[("HELD_KEYS", "key-1")],
    );
    let _node = super::nodes::Nodes(vec![Some(node)]);
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{url}/v1/principals"))
        .bearer_auth(&admin)
        .json(&json!({"name": "caller", "kind": "ai", "justification": "calls a model"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (address, token) = (
        created["address"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );

    // The call is reserved (the cluster's log is up), then held at the upstream.
    let call = {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&token)
                .json(&json!({"model": "held", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let (mut held, _) = tokio::time::timeout(PATIENCE, upstream.accept())
        .await
        .expect("the gateway called the upstream")
        .unwrap();
    read_request(&mut held).await;

    // NATS loses its quorum; then the upstream answers and the call settles into it.
    nats.servers[1].kill();
    nats.servers[2].kill();
    let body = json!({
        "id": "chatcmpl-held", "object": "chat.completion", "created": 0, "model": "held",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    held.write_all(response.as_bytes()).await.unwrap();
    held.shutdown().await.unwrap();
    assert_eq!(call.await.unwrap(), 200);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = http
            .get(format!("{url}/metrics"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if figure(&metrics, "colony_outbox_retries_total") > 0 {
            assert_eq!(figure(&metrics, "colony_outbox_pending"), 1, "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the settlement never met the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // NATS comes back: the settlement lands once, at the exact cost.
    nats.servers[1].start();
    nats.servers[2].start();
    loop {
        let me = get(&http, &format!("{url}/v1/ledger/me"), &token).await;
        let budget = &me["balances"]["llm_budget_usd"];
        // 10 input tokens at $1/M and 12 output at $2/M: 34 micro-dollars.
        if budget["used"] == json!(34) && budget["reserved"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {budget}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = get(
        &http,
        &format!("{url}/v1/audit?actor={address}&limit=1000"),
        &admin,
    )
    .await;
    let settled: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "llm.settle" && r["decision"] == "allowed")
        .collect();
    assert_eq!(settled.len(), 1, "settled exactly once: {audit}");
}
