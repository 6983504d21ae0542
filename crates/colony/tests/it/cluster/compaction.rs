//! The command log's compaction, seen from outside: the stream drops what every node
//! has applied; a new node on an empty data directory is turned away with what to
//! do, and starts once seeded from a copy of a member's data directory.

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
    let mut child = Command::new(COLONY)
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(fresh.path())
        .arg("--config")
        .arg(config)
        .args(["--cluster", servers, "--node-name", "node-4"])
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
            panic!("a node on an empty data directory did not stop");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("was compacted") && stderr.contains("copy its data directory"),
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
