//! Issue 26: what carries money is never dropped. A gateway call's settlement that
//! meets a full command queue (the decider held, the queue filled) is sent again
//! until decided, and lands exactly once when the queue drains.

use crate::common;

use std::time::Duration;

use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(20);

/// An upstream the test answers by hand, when it chooses.
struct HeldUpstream {
    listener: tokio::net::TcpListener,
}

impl HeldUpstream {
    /// Takes the next request (read whole) and gives back its connection.
    async fn take_request(&self) -> tokio::net::TcpStream {
        let (mut stream, _) = self.listener.accept().await.unwrap();
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
                    return stream;
                }
            }
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream, body: Value) {
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
}

async fn post(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_26_a_settlement_refused_by_a_full_queue_lands_exactly_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = HeldUpstream { listener };
    let providers = format!(
        r#"
[gateway]
default_model = "held"
timeout = "30s"

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
        upstream.listener.local_addr().unwrap()
    );
    let env = |name: &str| (name == "HELD_KEYS").then(|| "key-1".to_string());
    let gateway = colony_node::gateway::GatewayConfig::parse(
        std::path::Path::new("providers.toml"),
        &providers,
        &env,
    )
    .unwrap();
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let mut node_config = NodeConfig {
        gateway: Some(gateway),
        ..common::node_config(data.path(), config.path())
    };
    // A small queue, so that the test can fill it.
    node_config.sequencer.submit_queue_max = 4;
    let node = Node::start(node_config).await.unwrap();
    let base = format!("http://{}", node.local_addr());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let (address, token) =
        common::create_principal(&base, &admin, "caller", "ai", &["member"]).await;

    // The call: reserved, then sent upstream, where the test holds it.
    let call = {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            post(
                &base,
                &token,
                "/v1/chat/completions",
                json!({"model": "held", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}),
            )
            .await
        })
    };
    let held_call = tokio::time::timeout(PATIENCE, upstream.take_request())
        .await
        .expect("the gateway called the upstream");

    // Nothing is decided from here, and the queue fills up.
    let held = node.hold_decisions_for_tests();
    let mut fillers = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never filled"
        );
        let (base, admin) = (base.clone(), admin.clone());
        let filler = tokio::spawn(async move {
            post(
                &base,
                &admin,
                "/v1/ledger/reserve",
                json!({"resource": "io_ops", "amount": 1, "justification": "filling the queue"}),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        if filler.is_finished() {
            let (status, body) = filler.await.unwrap();
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "overloaded", "{body}");
            break;
        }
        fillers.push(filler);
    }

    // The upstream answers: the settlement meets the full queue and is sent again.
    answer(
        held_call,
        json!({
            "id": "chatcmpl-held", "object": "chat.completion", "created": 0, "model": "held",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}
        }),
    )
    .await;
    let (status, answered) = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call is answered")
        .unwrap();
    assert_eq!(status, 200, "{answered}");
    loop {
        let metrics = common::metrics(&base, &admin).await;
        if common::figure(&metrics, "colony_outbox_retries_total") > 0 {
            assert_eq!(common::figure(&metrics, "colony_outbox_pending"), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The queue drains: the settlement lands, once, at the exact cost.
    drop(held);
    for filler in fillers {
        assert_eq!(filler.await.unwrap().0, 201, "a reservation made");
    }
    loop {
        let me = common::get_json(&base, &token, "/v1/ledger/me").await;
        let budget = &me["balances"]["llm_budget_usd"];
        // 10 input tokens at $1/M and 12 output at $2/M: 34 micro-dollars.
        if budget["used"] == json!(34) && budget["reserved"] == json!(0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{budget}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let audit = common::get_json(
        &base,
        &admin,
        &format!("/v1/audit?actor={address}&limit=1000"),
    )
    .await;
    let settles: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| record["action"] == "llm.settle")
        .collect();
    assert_eq!(settles.len(), 1, "{audit}");
    assert_eq!(settles[0]["decision"], "allowed", "{audit}");
    let metrics = common::metrics(&base, &admin).await;
    assert_eq!(common::figure(&metrics, "colony_outbox_pending"), 0);
    assert_eq!(common::figure(&metrics, "colony_outbox_abandoned_total"), 0);
}
