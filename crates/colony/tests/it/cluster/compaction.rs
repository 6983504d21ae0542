//! The command log's compaction, seen from outside: the stream drops what every node
//! has applied; a new node on an empty data directory is turned away with what to
//! do (as is one on an embedded node's data), and starts once seeded from a copy of
//! a member's data directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::nodes::{figure, get, metrics, start_node, stop_gracefully, until_all, Nodes};
use crate::common::COLONY;

/// The test's `cluster.toml`: compaction every 250 ms, keeping the last 10 commands.
pub(super) const CLUSTER_TOML: &str = "[cluster]\nkeep_commands = 10\ncompact_every = \"250ms\"\n";

/// The stream's first command as node `url` sees it.
async fn stream_first(http: &reqwest::Client, url: &str, token: &str) -> u64 {
    let view = get(http, &format!("{url}/v1/cluster"), token).await;
    view["stream"]["first_seq"].as_u64().unwrap_or(0)
}

/// `colony up` of a cluster's node on `data`, which must refuse to start: what it
/// said on stderr.
async fn refused_start(data: &Path, config: &Path, servers: &str, name: &str) -> String {
    let mut child = Command::new(COLONY)
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(["--cluster", servers, "--node-name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} on {} did not stop", data.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

/// Compaction under the test's load, then node-4: refused on an empty data
/// directory, started from a copy of node-3's. Returns node-4's data directory.
pub(super) async fn compaction_and_seeding(
    http: &reqwest::Client,
    nodes: &mut Nodes,
    urls: &mut Vec<String>,
    node3_data: &Path,
    config: &Path,
    servers: &str,
    token: &str,
) -> tempfile::TempDir {
    // Every node has applied all but the last few commands: the stream drops them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_first(http, &urls[0], token).await <= 1 {
        assert!(Instant::now() < deadline, "the stream was never compacted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ...and /metrics says where it starts now.
    let first = figure(
        &metrics(http, &urls[0], token).await,
        "colony_cluster_stream_first_seq",
    );
    assert!(first > 1, "{first}");

    // A new node on an empty data directory cannot follow a log whose start is
    // gone: it stops at once, saying what to do.
    let fresh = tempfile::tempdir().unwrap();
    let stderr = refused_start(fresh.path(), config, servers, "node-4").await;
    assert!(
        stderr.contains("was compacted") && stderr.contains("copy its data directory"),
        "{stderr}"
    );
    // Nor can a node on an embedded node's data (its own genesis, no place in the
    // cluster's log): following the log from its own numbers would diverge.
    let embedded = tempfile::tempdir().unwrap();
    let node = colony_node::Node::start(colony_node::NodeConfig {
        data_dir: embedded.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        config_dir: config.to_path_buf(),
        config_dir_required: true,
        ..colony_node::NodeConfig::default()
    })
    .await
    .unwrap();
    node.shutdown().await.unwrap();
    let stderr = refused_start(embedded.path(), config, servers, "node-5").await;
    assert!(
        stderr.contains("of a node of its own") && stderr.contains("empty data directory"),
        "{stderr}"
    );

    // Seeded from a copy of node-3's data directory (node-3 stopped meanwhile), it
    // starts and catches up; node-3 comes back on its own.
    stop_gracefully(nodes[2].take().unwrap());
    let copied = Command::new("cp")
        .arg("-a")
        .arg(node3_data.join("."))
        .arg(fresh.path())
        .status()
        .unwrap();
    assert!(copied.success());
    // The copy is a node of its own: not node-3's key.
    std::fs::remove_file(fresh.path().join("node.key")).unwrap();
    std::fs::remove_file(fresh.path().join("node.pub")).unwrap();
    let (child, url) = start_node(node3_data, config, servers, "node-3");
    nodes[2] = Some(child);
    urls[2] = url;
    let (child, url) = start_node(fresh.path(), config, servers, "node-4");
    nodes.push(Some(child));
    urls.push(url);
    super::nodes::admit(http, &urls[0], token, "node-4", fresh.path()).await;
    let view = get(http, &format!("{}/v1/cluster", urls[0]), token).await;
    let last = view["stream"]["last_seq"].as_u64().unwrap();
    until_all(http, urls, token, "/v1/cluster", |view| {
        view["applied_seq"].as_u64() >= Some(last)
    })
    .await;
    fresh
}

/// A message of the log gone while node-4 was away (deleted by hand on the NATS
/// servers, say): node-4 comes back, finds the message after its place followed by
/// a later one, and stops loudly naming the gap instead of applying what follows.
/// Node-4 was stopped by the caller, and stays stopped.
pub(super) async fn a_gap_stops_a_returning_node(
    http: &reqwest::Client,
    urls: &[String],
    node4_data: &Path,
    config: &Path,
    servers: &str,
    nats_port: u16,
    token: &str,
) {
    // Commands while it is away: each a message of the log (a refusal is decided
    // and logged too).
    for n in 0..3 {
        let response = http
            .post(format!("{}/v1/ledger/reserve", urls[0]))
            .bearer_auth(token)
            .json(&serde_json::json!({"resource": "compute_ms", "amount": 1,
                                      "justification": format!("while node-4 is away ({n})")}))
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() < 500, "{}", response.status());
    }
    let client = async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream("COLONY_COMMANDS").await.unwrap();
    // The one before the last: made after node-4 stopped (three were), so node-4
    // never applied it, and followed by another.
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let missing = last - 1;
    assert!(stream.delete_message(missing).await.unwrap());

    let stderr = refused_start(node4_data, config, servers, "node-4").await;
    assert!(
        stderr.contains(&format!(
            "gave message {} after message {}",
            missing + 1,
            missing - 1
        )) && stderr.contains("a gap"),
        "{stderr}"
    );
}
