//! A node that cannot go on stops loudly: a panic on the decide thread (injected in
//! this debug build) answers 503, exits with status 70 for a supervisor to restart
//! it, and the restarted node works, without the command that caused it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use common::start_with_env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_deciding_exits_non_zero_and_the_restart_works() {
    let data = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let (mut node, url) = start_with_env(
        data.path(),
        &config,
        &[("COLONY_FAULT_PANIC_ON_JUSTIFICATION", "boom")],
    );
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let create = |name: &str, justification: &str| {
        http.post(format!("{url}/v1/principals"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "kind": "ai", "justification": justification}))
            .send()
    };
    let kept = create("kept", "made before the failure").await.unwrap();
    assert_eq!(kept.status(), 201);
    let failed = create("lost", "boom").await.unwrap();
    assert_eq!(failed.status(), 503);
    let body: Value = failed.json().await.unwrap();
    assert!(
        ["node_failed", "shutting_down"].contains(&body["error"]["code"].as_str().unwrap()),
        "{body}"
    );
    // The process exits by itself, non-zero.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the failed node kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(70));

    // Restarted without the fault, it works, and the failed command was never made.
    let (mut node, url) = start_with_env(data.path(), &config, &[]);
    let health: Value = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let principals: Value = http
        .get(format!("{url}/v1/principals"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = principals["principals"]
        .as_array()
        .unwrap_or_else(|| panic!("{principals}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"kept"), "{names:?}");
    assert!(!names.contains(&"lost"), "{names:?}");
    let again = http
        .post(format!("{url}/v1/principals"))
        .bearer_auth(&token)
        .json(&json!({"name": "again", "kind": "ai", "justification": "after the restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    node.kill().unwrap();
    let _ = node.wait();
}
