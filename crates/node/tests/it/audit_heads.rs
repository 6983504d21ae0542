//! Issue 31: the node signs its decision log's heads with its own key, publishes
//! each on the bus (`colony.audit.heads`), where a member hears it and can check it
//! with the public key alone, and keeps the newest in `audit-heads.jsonl`, cut back to
//! `kept`. A restart keeps the key and signs on from where it was.

use serde_json::{json, Value};

use crate::common;
use common::bus::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_are_signed_published_kept_and_bounded() {
    let config = common::genesis_dir(&[(
        "audit.toml",
        "[heads]\nevery = 1\ninterval = \"100ms\"\nkept = 10\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let public = node.public_key();
    let (_, member) = common::create_principal(&base, &admin, "listener", "ai", &["member"]).await;
    let mut listener = Client::connect(&node, &member).await;
    listener.sub("h", "colony.audit.heads").await;
    // Each posted task adds records: with `every = 1`, heads follow.
    let mut heard: Vec<colony_log::heads::SignedHead> = Vec::new();
    let mut posted = 0;
    while heard.len() < 25 {
        if posted < 60 {
            let made = common::post_json(
                &base,
                &admin,
                "/v1/tasks",
                &json!({"title": format!("t{posted}"), "justification": "to sign"}),
            )
            .await;
            assert!(made["address"].is_string(), "{made}");
            posted += 1;
        }
        let frame: Value = listener.recv().await;
        if frame["op"] == "msg" {
            let data = frame["data"].clone();
            let head: colony_log::heads::SignedHead = match data {
                Value::String(text) => serde_json::from_str(&text).unwrap(),
                other => serde_json::from_value(other).unwrap(),
            };
            heard.push(head);
        }
    }
    let key = colony_log::heads::decode_key(&public).unwrap();
    for head in &heard {
        head.verify(&[key]).unwrap();
    }
    assert!(
        heard.windows(2).all(|w| w[0].seq < w[1].seq),
        "heads move forward"
    );
    // Kept, bounded: never more than twice `kept` lines, the newest last.
    let kept = std::fs::read_to_string(data.path().join("audit-heads.jsonl")).unwrap();
    let lines: Vec<&str> = kept.lines().collect();
    assert!(lines.len() <= 20, "{} heads kept", lines.len());
    let newest: colony_log::heads::SignedHead =
        serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(newest.seq >= heard.last().unwrap().seq);
    let served = common::get_json(&base, &admin, "/v1/audit/head").await;
    assert!(served["seq"].as_u64().unwrap() >= newest.seq, "{served}");
    // A restart keeps the key; the last records are signed at shutdown.
    node.shutdown().await.unwrap();
    let after: colony_log::heads::SignedHead = serde_json::from_str(
        std::fs::read_to_string(data.path().join("audit-heads.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let report =
        colony_log::verify_audit_against(data.path(), std::slice::from_ref(&after)).unwrap();
    assert_eq!(
        report.records, after.seq,
        "the shutdown head covers every record"
    );
    let (node, _, _) = common::start(data.path(), config.path()).await;
    assert_eq!(node.public_key(), public);
}
