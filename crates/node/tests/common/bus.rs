//! A WebSocket client of the bus and the nodes the bus tests start.

use colony_node::bus::BusConfig;
use colony_node::{Node, NodeConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(node: &Node, token: &str) -> Client {
        match Client::try_connect(node, token).await {
            Ok(client) => client,
            Err((status, body)) => panic!("the bus refused the connection: {status} {body}"),
        }
    }

    /// A connection, or the HTTP status and error body of the refusal.
    pub async fn try_connect(node: &Node, token: &str) -> Result<Client, (u16, Value)> {
        let mut request = format!("ws://{}/v1/bus", node.local_addr())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(other) => panic!("{other}"),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame (fails the test after PATIENCE).
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends a frame with an `id` and returns the answer to it.
    pub async fn request(&mut self, mut frame: Value, id: &str) -> Value {
        frame["id"] = json!(id);
        self.send(frame).await;
        loop {
            let answer = self.recv().await;
            if answer["id"] == json!(id) {
                return answer;
            }
        }
    }

    pub async fn sub(&mut self, sid: &str, subject: &str) {
        let answer = self
            .request(
                json!({"op": "sub", "sid": sid, "subject": subject}),
                &format!("sub-{sid}"),
            )
            .await;
        assert_eq!(answer["op"], "ok", "{answer}");
    }

    pub async fn publish(&mut self, subject: &str, data: Value) -> Value {
        self.request(json!({"op": "pub", "subject": subject, "data": data}), "p")
            .await
    }
}

pub fn test_bus() -> BusConfig {
    BusConfig {
        edge_flush_ms: 100,
        frame_bytes_max: 256 << 10,
        ..BusConfig::default()
    }
}

pub async fn start_with(
    data: &std::path::Path,
    config: &std::path::Path,
    bus: BusConfig,
) -> (Node, String, String) {
    let node = Node::start(NodeConfig {
        bus: Some(bus),
        ..super::node_config(data, config)
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let base = format!("http://{}", node.local_addr());
    (node, base, admin)
}

pub async fn create_stream(base: &str, admin: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/streams"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    body
}

/// Publishes enough low-priority filler to a subscriber that does not read that
/// the node's queue for it stays full, then markers of every priority.
pub async fn fill_then_mark(publisher: &mut Client, subject: &str, filler: usize) {
    let chunk = "f".repeat(32 << 10);
    for _ in 0..filler {
        publisher
            .send(json!({"op": "pub", "subject": subject, "data": chunk, "priority": "low"}))
            .await;
    }
    for (n, priority) in [
        "low", "normal", "critical", "high", "normal", "critical", "low", "high",
    ]
    .iter()
    .enumerate()
    {
        publisher
            .send(json!({"op": "pub", "subject": subject, "data": {"marker": n, "priority": priority}, "priority": priority}))
            .await;
    }
    // A round trip makes sure the node has routed all of it.
    assert_eq!(
        publisher.request(json!({"op": "ping"}), "sync").await["op"],
        "pong"
    );
}

/// Waits until the node has seen connections close down to `open`.
pub async fn wait_for_connections(base: &str, token: &str, open: u64) {
    wait_for_figure(base, token, "colony_bus_connections", open).await
}

/// Waits until `/metrics` shows `name` at `value`.
pub async fn wait_for_figure(base: &str, token: &str, name: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = super::metrics(base, token).await;
        let now = super::figure(&text, name);
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stays at {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the decision log holds a record with `action` about `subject`.
pub async fn wait_for_decision(base: &str, token: &str, action: &str, subject: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = super::get_json(base, token, "/v1/audit?limit=1000").await;
        if let Some(record) = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == action && r["subject"] == subject)
        {
            return record.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {action} for {subject}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
