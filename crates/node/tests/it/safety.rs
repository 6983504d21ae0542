//! Issue 12 over HTTP: a real node attacked as one hostile agent would, through its
//! real listener. Each test is an attack that worked before.

use crate::common;

use std::time::{Duration, Instant};

use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) struct Started {
    pub(crate) node: Node,
    pub(crate) base: String,
    pub(crate) admin: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A node over the shipped genesis with `replaced` files, its config tweaked.
pub(crate) async fn start(
    replaced: &[(&str, &str)],
    tweak: impl FnOnce(&mut NodeConfig),
) -> Started {
    let config = common::genesis_dir(replaced);
    let data = tempfile::tempdir().unwrap();
    let mut node_config = common::node_config(data.path(), config.path());
    tweak(&mut node_config);
    let node = Node::start(node_config).await.unwrap();
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    Started {
        base: node.base_url(),
        node,
        admin,
        _dirs: (config, data),
    }
}

async fn request(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    request(base, reqwest::Method::GET, path, token, None).await
}

async fn post(base: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    request(base, reqwest::Method::POST, path, token, Some(body)).await
}

fn brake(limit: &str, soft: u64, hard: u64) -> Value {
    json!({"limit": limit, "soft": soft, "hard": hard, "brake": true,
           "justification": "an agent slams the brake"})
}

fn limit_values(limits: &Value, name: &str) -> (Value, Value) {
    let limit = limits["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("{limits}"));
    (limit["soft"].clone(), limit["hard"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_brake_cannot_lock_the_node() {
    let node = start(&[], |_| {}).await;
    let (_, ai) =
        common::create_principal(&node.base, &node.admin, "brakeman", "ai", &["member"]).await;
    // Below the shipped floor (16): refused, with the floor named.
    let (status, body) = post(
        &node.base,
        "/v1/proposals",
        &ai,
        brake("concurrent_api_requests", 0, 0),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "brake_floor", "{body}");
    assert_eq!(body["error"]["floor"], 16, "{body}");
    let (status, limits) = get(&node.base, "/v1/limits", &node.admin).await;
    assert_eq!(status, 200);
    assert_eq!(
        limit_values(&limits, "concurrent_api_requests"),
        (json!(512), json!(1024))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_floor_a_brake_to_zero_still_leaves_governance_working() {
    // An operator who removed the floor, and a brake that expires in 2 s.
    let limits = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/limits.toml"),
    )
    .unwrap()
    .replace(
        "hard = 1024\nbrake_floor = 16",
        "hard = 1024\nbrake_floor = 0",
    );
    let governance = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/genesis/governance.toml"),
    )
    .unwrap()
    .replace("brake_ttl = \"1h\"", "brake_ttl = \"2s\"");
    let node = start(
        &[("limits.toml", &limits), ("governance.toml", &governance)],
        |_| {},
    )
    .await;
    let (_, ai) =
        common::create_principal(&node.base, &node.admin, "brakeman", "ai", &["member"]).await;
    let (status, body) = post(
        &node.base,
        "/v1/proposals",
        &ai,
        brake("concurrent_api_requests", 0, 0),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Ordinary work is refused...
    let (status, body) = get(&node.base, "/v1/ledger/me", &ai).await;
    assert_eq!(status, 503, "{body}");
    // ...but health, the limits, proposals and votes are a lane of their own.
    let health = reqwest::get(format!("{}/healthz", node.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, limits) = get(&node.base, "/v1/limits", &node.admin).await;
    assert_eq!(status, 200);
    assert_eq!(
        limit_values(&limits, "concurrent_api_requests"),
        (json!(0), json!(0))
    );
    let raise = json!({"limit": "concurrent_api_requests", "soft": 600, "hard": 1200,
                       "justification": "undo the brake"});
    let (status, opened) = post(&node.base, "/v1/proposals", &node.admin, raise).await;
    assert_eq!(status, 201, "{opened}");
    let id = opened["id"].as_u64().unwrap_or_else(|| panic!("{opened}"));
    let (status, voted) = post(
        &node.base,
        &format!("/v1/proposals/{id}/votes"),
        &ai,
        json!({"vote": "approve", "justification": "yes"}),
    )
    .await;
    assert_eq!(status, 201, "{voted}");
    // Nobody confirms the brake: it lifts by itself, as a logged decision.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, limits) = get(&node.base, "/v1/limits", &node.admin).await;
        if limit_values(&limits, "concurrent_api_requests") == (json!(512), json!(1024)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the brake never expired: {limits}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = get(&node.base, "/v1/ledger/me", &ai).await;
    assert_eq!(status, 200);
    let (_, audit) = get(&node.base, "/v1/audit?limit=1000", &node.admin).await;
    let expired: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .filter(|r| r["action"] == "governance.brake_expired")
        .collect();
    assert_eq!(expired.len(), 1, "{audit}");
    assert_eq!(expired[0]["reason"]["code"], "brake_expired", "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_a_whole_oversized_body_gets_the_413() {
    let node = start(&[], |_| {}).await;
    let address = node.node.local_addr();
    // As Python's urllib and most SDKs do: the whole body, then read the answer.
    let body = format!(
        r#"{{"name":"big","kind":"ai","justification":"{}"}}"#,
        "x".repeat(200_000)
    );
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/principals HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        node.admin,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("no connection reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_the_edge_did_not_read_is_bounded_by_its_route() {
    // `/v1/messages` takes its key in `x-api-key`, so the edge does not know the
    // caller and leaves the body to the route; no length is declared, so only the
    // bound on the body itself (the gateway's 4 MiB) can refuse it.
    let node = start(&[], |_| {}).await;
    let address = node.node.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {address}\r\nx-api-key: {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        node.admin,
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    // 5 MiB, or until the node stops reading.
    for _ in 0..80 {
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(PATIENCE, tcp.read(&mut answer))
        .await
        .expect("answered")
        .expect("an answer before the connection closes");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_cannot_keep_the_admin_out() {
    let node = start(&[], |config| {
        config.listen_limits = Some(colony_node::listener::ListenConfig {
            header_timeout_ms: 1_000,
            unauthenticated_connections_max: 50,
            ..Default::default()
        });
    })
    .await;
    let address = node.node.local_addr();
    // 300 connections that start a request and never finish its head.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        tcp.write_all(b"GET /v1/limits HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    // The admin still gets in, at once.
    let started = Instant::now();
    let (status, _) = get(&node.base, "/v1/limits", &node.admin).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the admin waited"
    );
    let metrics = common::metrics(&node.base, &node.admin).await;
    let gauge = |name: &str| common::figure(&metrics, name);
    assert!(gauge("colony_http_connections_unauthenticated") <= 50);
    assert!(gauge("colony_http_connections_evicted_total") >= 250);
    // Every half-open connection is closed: evicted, or at its header deadline.
    for mut tcp in slow {
        let mut buffer = [0u8; 1024];
        let read = tokio::time::timeout(PATIENCE, tcp.read(&mut buffer))
            .await
            .expect("closed within the deadline");
        // EOF, an error (reset), or a 408 before the close are all a close.
        if let Ok(n) = read {
            if n > 0 {
                assert!(
                    buffer.starts_with(b"HTTP/1.1 408"),
                    "{:?}",
                    String::from_utf8_lossy(&buffer[..n])
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_call_itself_critical() {
    // Soft 0, hard 1: at no load only `critical` is admitted past soft.
    let limits = "[limits.concurrent_api_requests]\nsoft = 0\nhard = 1\n";
    let node = start(&[("limits.toml", limits)], |_| {}).await;
    let (_, ai) =
        common::create_principal(&node.base, &node.admin, "pushy", "ai", &["member"]).await;
    let call = |token: String| {
        let base = node.base.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{base}/v1/ledger/me"))
                .bearer_auth(token)
                .header("x-colony-priority", "critical")
                .send()
                .await
                .unwrap()
        }
    };
    let pushy = call(ai.clone()).await;
    assert_eq!(pushy.status(), 503, "a member's critical is capped to high");
    let body: Value = pushy.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shed");
    assert_eq!(body["error"]["priority"], "high");
    assert_eq!(
        call(node.admin.clone()).await.status(),
        200,
        "an admin's is not"
    );
    let metrics = common::metrics(&node.base, &node.admin).await;
    assert!(
        metrics.contains("colony_http_priority_capped_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upgrades_cannot_pass_connections_max() {
    let bus = colony_node::bus::BusConfig {
        connections_max: 5,
        ..Default::default()
    };
    let node = start(&[], move |config| config.bus = Some(bus)).await;
    let url = format!(
        "ws://{}/v1/bus?token={}",
        node.node.local_addr(),
        node.admin
    );
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tokio_tungstenite::connect_async(url).await })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok((socket, _)) => open.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(open.len(), 5, "exactly connections_max are open");
    assert_eq!(refused, 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_says_so_on_healthz_and_answers_nothing_else() {
    let node = start(&[], |config| {
        config.sequencer.fault_panic_on_justification = Some("boom".into());
    })
    .await;
    let (status, _) = post(
        &node.base,
        "/v1/principals",
        &node.admin,
        json!({"name": "x", "kind": "ai", "justification": "boom"}),
    )
    .await;
    assert_eq!(status, 503);
    let health = reqwest::get(format!("{}/healthz", node.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "failed");
    assert!(
        health["reason"].as_str().unwrap().contains("panicked"),
        "{health}"
    );
    let (status, body) = get(&node.base, "/v1/limits", &node.admin).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("node_failed"))
    );
    let reason = tokio::time::timeout(PATIENCE, node.node.failed())
        .await
        .unwrap();
    assert!(reason.contains("fault injected"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomalous_agent_is_quarantined_and_a_human_releases_it() {
    let anomaly = "[anomaly]\nwindow = \"1h\"\n[anomaly.signals.denials]\nceiling = 20\nmin = 5\n";
    let node = start(&[("anomaly.toml", anomaly)], |_| {}).await;
    let (address, agent) =
        common::create_principal(&node.base, &node.admin, "prober", "ai", &["member"]).await;
    let (_, other_ai) =
        common::create_principal(&node.base, &node.admin, "peer", "ai", &["member"]).await;
    let (_, human) =
        common::create_principal(&node.base, &node.admin, "operator", "human", &["member"]).await;
    // Probing tasks that do not exist: each claim is denied.
    let mut refused_as_quarantined = false;
    for _ in 0..30 {
        let (status, body) = post(
            &node.base,
            "/v1/tasks/0.7.1.99999/heartbeat",
            &agent,
            json!({"lease_token": 1, "justification": "probe"}),
        )
        .await;
        if status == 403 && body["error"]["code"] == "quarantined" {
            refused_as_quarantined = true;
            break;
        }
    }
    assert!(refused_as_quarantined, "the prober was never quarantined");
    let (status, shown) = get(
        &node.base,
        &format!("/v1/principals/{address}"),
        &node.admin,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(shown["state"], "quarantined", "{shown}");
    assert_eq!(
        shown["quarantine"]["evidence"]["signal"], "denials",
        "{shown}"
    );
    assert_eq!(
        shown["quarantine"]["evidence"]["rule"], "ceiling",
        "{shown}"
    );
    // It may still read.
    let (status, _) = get(&node.base, "/v1/ledger/me", &agent).await;
    assert_eq!(status, 200);
    // An AI cannot release it; a human member can.
    let release = json!({"justification": "I looked: it was a bug in its prompt"});
    let path = format!("/v1/principals/{address}/release");
    let (status, body) = post(&node.base, &path, &other_ai, release.clone()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(&node.base, &path, &human, release).await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = get(
        &node.base,
        &format!("/v1/principals/{address}"),
        &node.admin,
    )
    .await;
    assert_eq!(shown["state"], "active", "{shown}");
    let (status, body) = post(
        &node.base,
        "/v1/tasks",
        &agent,
        json!({"title": "back to work", "justification": "released"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_messages_and_names_count_toward_data_creation() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let bus = colony_node::bus::BusConfig {
        edge_flush_ms: 50,
        ..Default::default()
    };
    let node = start(&[], move |config| config.bus = Some(bus)).await;
    let usage = |limits: &Value| {
        limits["usage"]
            .as_u64()
            .unwrap_or_else(|| panic!("{limits}"))
    };
    let (_, before) = get(&node.base, "/v1/limits/data_creation_bytes", &node.admin).await;
    // A name and a justification are kept: they count.
    let name = "n".repeat(100);
    let justification = "j".repeat(300);
    let (status, _) = post(
        &node.base,
        "/v1/principals",
        &node.admin,
        json!({"name": name, "kind": "ai", "justification": justification}),
    )
    .await;
    assert_eq!(status, 201);
    let (_, after_name) = get(&node.base, "/v1/limits/data_creation_bytes", &node.admin).await;
    assert!(
        usage(&after_name) >= usage(&before) + 400,
        "{before} -> {after_name}"
    );
    // A message stored in a durable stream counts, once the edge reports it.
    let (status, body) = post(
        &node.base,
        "/v1/streams",
        &node.admin,
        json!({"name": "kept", "subjects": ["kept.>"], "justification": "keep them"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, before_publish) = get(&node.base, "/v1/limits/data_creation_bytes", &node.admin).await;
    let url = format!(
        "ws://{}/v1/bus?token={}",
        node.node.local_addr(),
        node.admin
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let payload = "p".repeat(5_000);
    ws.send(Message::Text(
        json!({"op": "pub", "subject": "kept.one", "data": payload, "id": 1})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let answer = ws.next().await.unwrap().unwrap();
    assert!(answer.to_text().unwrap().contains("\"ok\""), "{answer}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, now) = get(&node.base, "/v1/limits/data_creation_bytes", &node.admin).await;
        if usage(&now) >= usage(&before_publish) + 5_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream message was never counted: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
