//! The cluster test's bus clients: WebSocket publishers and readers, the CLI's
//! `bus pub` and `bus sub`, and NATS's own protocol.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::nodes::get;
use crate::common::COLONY;

/// The AI accounts' io_ops in this test, a window of an hour.
pub(super) const AI_IO_OPS: u64 = 3_000;

pub(super) type BusSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bus connection to the node at `url` with `token`.
pub(super) async fn bus_connect(url: &str, token: &str) -> BusSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/v1/bus", url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Publishes of one principal through one bus connection, until `stop`: how many
/// the node let through.
pub(super) async fn publisher(
    url: String,
    token: String,
    subject: String,
    stop: Arc<AtomicBool>,
) -> u64 {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = bus_connect(&url, &token).await;
    let mut accepted = 0;
    let mut id = 0u64;
    while !stop.load(Ordering::SeqCst) {
        id += 1;
        let frame = json!({"op": "pub", "subject": subject, "data": id, "id": id});
        ws.send(Message::text(frame.to_string())).await.unwrap();
        loop {
            let Message::Text(text) = ws.next().await.unwrap().unwrap() else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] != id {
                continue;
            }
            if answer["op"] == "ok" {
                accepted += 1;
            } else {
                // Refused until this node's next lease (`lease_spent`, the cluster
                // has room) or for good (`insufficient_resource`): try again shortly.
                let code = answer["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    ["lease_spent", "insufficient_resource"].contains(&code),
                    "{answer}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            break;
        }
    }
    accepted
}

pub(super) async fn publishes_hold_to_the_quota(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    address: &str,
) {
    let io_ops = |me: &Value| me["balances"]["io_ops"].clone();
    let me_url = format!("{}/v1/ledger/me", urls[0]);
    let before = io_ops(&get(http, &me_url, token).await);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<_> = urls
        .iter()
        .map(|url| {
            tokio::spawn(publisher(
                url.clone(),
                token.to_string(),
                format!("agents.{address}.load"),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Until the quota is spent: the charged usage stops growing for three rounds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    loop {
        let used = io_ops(&get(http, &me_url, token).await)["used"]
            .as_u64()
            .unwrap();
        if used != last.0 {
            last = (used, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing never ran dry: {used}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut accepted = 0;
    for count in counts {
        accepted += count.await.unwrap();
    }
    // Every publish let through is charged (by each node's next round).
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let balance = io_ops(&get(http, &me_url, token).await);
        if balance["used"].as_u64() == Some(accepted) {
            break balance;
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} publishes let through, {balance} charged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        after["shortfall"], 0,
        "nothing spent past the quota: {after}"
    );
    if before["refill_at"] == after["refill_at"] {
        assert!(
            (AI_IO_OPS - 10..=AI_IO_OPS).contains(&accepted),
            "{accepted} publishes of a quota of {AI_IO_OPS} on three nodes"
        );
    } else {
        // The hour turned meanwhile: two windows' worth at most.
        assert!(accepted <= 2 * AI_IO_OPS, "{accepted}");
    }
}

/// The first `count` messages of stream `name` read through a bus connection to
/// `url`: their numbers and data.
pub(super) async fn stream_read(
    url: &str,
    token: &str,
    name: &str,
    count: usize,
) -> Vec<(u64, String)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = bus_connect(url, token).await;
    let sub = json!({"op": "sub", "sid": "s", "subject": ">", "stream": name, "from_seq": 1});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while read.len() < count {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{url}: only {read:?} of stream {name}"))
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["op"] == "msg" {
            read.push((frame["seq"].as_u64().unwrap(), frame["data"].to_string()));
        }
    }
    read
}

/// `colony bus sub ARGS` against a node, its lines gathered as they come.
pub(super) struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    /// Starts it and waits until it says it is subscribed.
    pub(super) fn start(url: &str, token: &str, args: &[&str]) -> Subscriber {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(COLONY)
            .args(["bus", "sub"])
            .args(args)
            .env("COLONY_URL", url)
            .env("COLONY_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("subscribed to"), "{line}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let gathered = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                gathered.lock().unwrap().push(line);
            }
        });
        Subscriber { child, lines }
    }

    pub(super) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub(super) async fn wait_for(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lines().len() < count {
            assert!(Instant::now() < deadline, "got only {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `colony bus pub SUBJECT DATA` against a node.
/// A refusal a client tries again after (a node's first lease of allowance can take
/// a few rounds on a loaded machine; a stream's leader may be being elected).
pub(super) fn bus_pub(url: &str, token: &str, subject: &str, data: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(COLONY)
            .args(["bus", "pub", subject, data])
            .env("COLONY_URL", url)
            .env("COLONY_TOKEN", token)
            .output()
            .unwrap();
        if output.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let retryable = [
            "hard_limit",
            "insufficient_resource",
            "lease_spent",
            "cluster_unavailable",
        ]
        .iter()
        .any(|code| stderr.contains(code));
        assert!(retryable && Instant::now() < deadline, "{stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Publishes `payload` on `subject` with NATS's own text protocol.
pub(super) fn publish_raw(port: u16, subject: &str, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    let mut writer = stream;
    write!(
        writer,
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )
    .unwrap();
    writer.write_all(payload).unwrap();
    writer.write_all(b"\r\nPING\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.starts_with("-ERR"), "{line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

/// The bytes of the newest signed message of the cluster's command stream (the
/// wire format's version 4, past the junk a test published), as a client with
/// access to NATS reads them.
pub(super) async fn last_command(port: u16) -> Vec<u8> {
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("COLONY_COMMANDS").await.unwrap();
    let mut seq = stream.info().await.unwrap().state.last_sequence;
    loop {
        let payload = stream.get_raw_message(seq).await.unwrap().payload.to_vec();
        if payload.first() == Some(&4) && payload.len() > 100 {
            return payload;
        }
        seq -= 1;
    }
}
