//! One principal's share of the HTTP requests: requests whose bodies trickle in are
//! cut off at the body deadline, and one principal's requests in flight are bounded,
//! so that one agent cannot hold the request slots every principal shares.

use crate::common;

use std::time::Duration;

use colony_node::listener::ListenConfig;
use colony_node::Node;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(20);

/// A request to post a task whose head and first body byte are sent, the rest never.
async fn trickling(node: &Node, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(node.local_addr()).await.unwrap();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// The status line and body of the answer on `tcp`.
async fn answer(tcp: &mut TcpStream) -> (String, Value) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buffer))
            .await
            .expect("an answer in time")
            .unwrap();
        bytes.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&bytes).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if let Ok(body) = serde_json::from_str::<Value>(body) {
                return (head.lines().next().unwrap().to_string(), body);
            }
        }
        assert!(n > 0, "closed before a whole answer: {text}");
    }
}

/// How many requests the node is serving now (this one included).
async fn in_flight(base: &str, admin: &str) -> u64 {
    let limit = common::get_json(base, admin, "/v1/limits/concurrent_api_requests").await;
    limit["usage"].as_u64().unwrap_or_else(|| panic!("{limit}"))
}

/// A body that does not arrive whole within `body_timeout_ms` gets `408
/// body_timeout`, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_at_the_deadline() {
    let started = crate::safety::start(&[], |config| {
        config.listen_limits = Some(ListenConfig {
            body_timeout_ms: 300,
            ..Default::default()
        });
    })
    .await;
    let mut tcp = trickling(&started.node, &started.admin).await;
    let (status, body) = answer(&mut tcp).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status} {body}");
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    assert_eq!(body["error"]["timeout_ms"], 300, "{body}");
}

/// An agent with `requests_in_flight_per_principal_max` requests being served gets
/// `429 too_many_requests` for one more, while another principal is served; once
/// one of its requests ends, it is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_hold_every_request_slot() {
    let started = crate::safety::start(&[], |config| {
        config.listen_limits = Some(ListenConfig {
            requests_in_flight_per_principal_max: 2,
            ..Default::default()
        });
    })
    .await;
    let (node, base, admin) = (&started.node, started.base.as_str(), started.admin.as_str());
    let (_, hog) = common::create_principal(base, admin, "hog", "ai", &["member"]).await;
    let mut first = trickling(node, &hog).await;
    let _second = trickling(node, &hog).await;
    // Both are being served (counted in concurrent_api_requests), this read too.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while in_flight(base, admin).await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow requests never arrived"
        );
        tokio::task::yield_now().await;
    }
    let (status, body) = common::send(reqwest::Method::GET, base, &hog, "/v1/tasks", None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    assert_eq!(body["error"]["max"], 2, "{body}");
    // Everyone else is served.
    let (status, _) = common::send(reqwest::Method::GET, base, admin, "/v1/tasks", None).await;
    assert_eq!(status, 200);
    // The first slow request ends (its body completes): the hog is served again.
    let fields = r#""title":"t","justification":"j""#;
    let rest = format!("{fields}{}}}", " ".repeat(100 - 1 - fields.len() - 1));
    assert_eq!(rest.len(), 99);
    first.write_all(rest.as_bytes()).await.unwrap();
    let (status, body) = answer(&mut first).await;
    assert!(status.starts_with("HTTP/1.1 20"), "{status} {body}");
    let (status, body) = common::send(reqwest::Method::GET, base, &hog, "/v1/tasks", None).await;
    assert_eq!(status, 200, "{body}");
    let metrics = common::metrics(base, admin).await;
    assert!(
        metrics.contains("colony_http_refused_per_principal_total 1"),
        "{metrics}"
    );
}

/// A request without a valid token is answered `401` at once: the node does not
/// wait for, nor hold, the body of someone it does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_callers_body_is_never_waited_for() {
    let started = crate::safety::start(&[], |_| {}).await;
    let mut tcp = trickling(&started.node, "not-a-token").await;
    let (status, body) = answer(&mut tcp).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status} {body}");
}

/// The bytes of one principal's large bodies (here the gateway's) being read or
/// served are bounded: past its budget its next body is refused `429 body_budget`
/// while others' are read; once its held body is answered, it may send again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_have_the_node_hold_its_bodies_without_bound() {
    let started = crate::safety::start(&[], |config| {
        config.listen_limits = Some(ListenConfig {
            body_bytes_in_flight_per_principal_max: 100_000,
            ..Default::default()
        });
    })
    .await;
    let (node, base, admin) = (&started.node, started.base.as_str(), started.admin.as_str());
    let (_, hog) = common::create_principal(base, admin, "hog", "ai", &["member"]).await;
    // 60 000 bytes of a 64 000-byte body, and then nothing.
    let mut held = TcpStream::connect(node.local_addr()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {hog}\r\n\
         content-type: application/json\r\ncontent-length: 64000\r\n\r\n"
    );
    held.write_all(head.as_bytes()).await.unwrap();
    held.write_all(&[b' '; 60_000]).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = common::metrics(base, admin).await;
        if common::figure(&metrics, "colony_http_body_bytes_held") >= 60_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::task::yield_now().await;
    }
    let big = serde_json::json!({
        "model": "auto",
        "messages": [{"role": "user", "content": " ".repeat(50_000)}],
    });
    let (status, body) = common::send(
        reqwest::Method::POST,
        base,
        &hog,
        "/v1/chat/completions",
        Some(big.clone()),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "body_budget", "{body}");
    assert_eq!(body["error"]["scope"], "principal", "{body}");
    // Another principal's body is read.
    let (_, body) = common::send(
        reqwest::Method::POST,
        base,
        admin,
        "/v1/chat/completions",
        Some(big.clone()),
    )
    .await;
    assert_ne!(body["error"]["code"], "body_budget", "{body}");
    // The held body ends (it is not valid JSON: 400); the hog may send again.
    held.write_all(&[b' '; 4_000]).await.unwrap();
    let (status, body) = answer(&mut held).await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status} {body}");
    let (_, body) = common::send(
        reqwest::Method::POST,
        base,
        &hog,
        "/v1/chat/completions",
        Some(big),
    )
    .await;
    assert_ne!(body["error"]["code"], "body_budget", "{body}");
}
