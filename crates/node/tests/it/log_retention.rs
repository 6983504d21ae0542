//! Bounded logs on a real node: `retention.toml`'s `[logs]` prunes the command and
//! decision logs after snapshots, the chain verifies from the node's signed cut, and a
//! restart recovers everything from the snapshot.

use colony_log::prune::{audit_cut, commands_cut};
use colony_log::{SegmentOptions, StoreOptions};
use colony_node::Node;
use reqwest::Method;
use serde_json::json;

use crate::common;

const RETENTION: &str = "[logs]\nkeep_bytes = \"16KiB\"\npruned = \"delete\"\n";

fn config(data: &std::path::Path, genesis: &std::path::Path) -> colony_node::NodeConfig {
    let mut config = common::node_config(data, genesis);
    // Small segments and frequent snapshots, so that a few hundred commands prune.
    config.store = StoreOptions {
        segment: SegmentOptions {
            segment_bytes_max: 4 << 10,
            trimmed_start: false,
        },
        ..StoreOptions::default()
    };
    config.sequencer.snapshot_every_commands = 40;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_prunes_its_logs_and_still_verifies_and_recovers() {
    let genesis = common::genesis_dir(&[("retention.toml", RETENTION)]);
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(config(data.path(), genesis.path()))
        .await
        .unwrap();
    let base = format!("http://{}", node.local_addr());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    for n in 0..300 {
        let (status, body) = common::send(
            Method::POST,
            &base,
            &admin,
            "/v1/tasks",
            Some(json!({"title": format!("task {n}"), "justification": "fill the logs"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, before) = common::send(Method::GET, &base, &admin, "/v1/tasks?limit=1000", None).await;
    let metrics = common::metrics(&base, &admin).await;
    assert!(
        common::figure(&metrics, "colony_log_pruned_segments_total") > 0,
        "pruned while running"
    );
    node.shutdown().await.unwrap();

    let commands = commands_cut(data.path())
        .unwrap()
        .expect("the command log was cut");
    let cut = audit_cut(data.path())
        .unwrap()
        .expect("the decision log was cut");
    assert!(commands.first_kept > 1 && cut.seq > 0);
    let public = std::fs::read_to_string(data.path().join("node.pub")).unwrap();
    cut.verify(&[colony_log::heads::decode_key(&public).unwrap()])
        .expect("the cut is signed by the node's own key");
    let audit_bytes: u64 = std::fs::read_dir(data.path().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        audit_bytes < 32 << 10,
        "the decision log holds {audit_bytes} bytes"
    );
    let verified = colony_log::verify_audit(data.path()).unwrap();
    assert_eq!(
        verified.from,
        cut.seq + 1,
        "verified from the first record kept"
    );

    // A restart loads the newest snapshot and replays the kept tail.
    let node = Node::start(config(data.path(), genesis.path()))
        .await
        .unwrap();
    let base = format!("http://{}", node.local_addr());
    let (_, after) = common::send(Method::GET, &base, &admin, "/v1/tasks?limit=1000", None).await;
    assert_eq!(after["tasks"].as_array().unwrap().len(), 300);
    assert_eq!(after, before);
    // The decision log is read from its first kept record.
    let (status, page) = common::send(Method::GET, &base, &admin, "/v1/audit?limit=5", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"][0]["seq"], cut.seq + 1);
    node.shutdown().await.unwrap();
}
