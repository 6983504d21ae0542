//! The cluster test's nodes: starting them, reading them, writing to them, stopping them.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::start_with_args;

pub(super) fn start_node(data: &Path, config: &Path, nats: &str, name: &str) -> (Child, String) {
    start_node_with(data, config, nats, name, &[])
}

/// A node with extra environment (a NATS password).
pub(super) fn start_node_with(
    data: &Path,
    config: &Path,
    nats: &str,
    name: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    start_with_args(data, config, &["--cluster", nats, "--node-name", name], env)
}

/// Admits the node whose data directory is `data` (its `node.pub`) through the node
/// at `url`, as the admin.
pub(super) async fn admit(http: &reqwest::Client, url: &str, token: &str, name: &str, data: &Path) {
    let key = std::fs::read_to_string(data.join("node.pub")).unwrap();
    let response = http
        .post(format!("{url}/v1/cluster/nodes"))
        .bearer_auth(token)
        .json(&json!({"name": name, "public_key": key.trim(), "justification": "a node of the test's cluster"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "admitting {name}: {status} {body}");
}

pub(super) async fn get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Waits (at most 30 s) until `check` holds for what every node answers at `path`.
pub(super) async fn until_all(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    path: &str,
    check: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in urls {
        loop {
            let answer = get(http, &format!("{url}{path}"), token).await;
            if check(&answer) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url}{path} never got there: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The hash of decision record `index` on the node at `url`.
pub(super) async fn record_hash(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    index: u64,
) -> String {
    let page = get(
        http,
        &format!("{url}/v1/audit?after={}&limit=1", index - 1),
        token,
    )
    .await;
    page["records"][0]["hash"].as_str().unwrap().to_string()
}

/// Reserves and commits in a loop on `url` until `stop`, recording each commit the
/// node acknowledged.
pub(super) fn writer(
    http: reqwest::Client,
    url: String,
    token: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    count: Arc<AtomicUsize>,
    node_count: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut refusals = 0;
        while !stop.load(Ordering::SeqCst) {
            let reserve = http
                .post(format!("{url}/v1/ledger/reserve"))
                .bearer_auth(&token)
                .json(&json!({"resource": "disk_bytes", "amount": 10, "justification": "load"}))
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            // A node killed, or a request that outlived its timeout while a NATS
            // server was lost: try again shortly.
            let Ok(response) = reserve else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(body) = response.json::<Value>().await else {
                continue;
            };
            let Some(reservation) = body["reservation"].as_u64() else {
                // Refused (a 503 while a NATS server is lost): shown if the test
                // fails, and tried again shortly.
                if refusals < 3 {
                    eprintln!("a reserve on {url} refused: {body}");
                }
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let commit = http
                .post(format!("{url}/v1/ledger/commit"))
                .bearer_auth(&token)
                .json(&json!({"reservation": reservation, "actual": 7}))
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let Ok(response) = commit else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if response.status().is_success() {
                acknowledged.lock().unwrap().push(reservation);
                count.fetch_add(1, Ordering::SeqCst);
                node_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// Waits until `count` has grown by `more` (at most 120 s: on a machine loaded by
/// other work, JetStream's servers may take a while to elect a leader again).
pub(super) async fn acks_grow(count: &AtomicUsize, more: usize) {
    let target = count.load(Ordering::SeqCst) + more;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "writes stalled at {} acknowledged commits",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The nodes' processes, killed if the test ends before stopping them.
pub(super) struct Nodes(pub(super) Vec<Option<Child>>);

impl std::ops::Deref for Nodes {
    type Target = Vec<Option<Child>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Nodes {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn stop_gracefully(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "colony up stopped with {status}");
}

/// Node `url`'s `/metrics` text.
pub(super) async fn metrics(http: &reqwest::Client, url: &str, token: &str) -> String {
    http.get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (at most 30 s) until `holds` is true of what `url` answers at `/metrics`,
/// and answers that; fails saying `what` never came.
pub(super) async fn until_metrics(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    what: &str,
    holds: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(http, url, token).await;
        if holds(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The figure `name` of a `/metrics` text.
pub(super) fn figure(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}
