//! The real binary under `kill -9`, and `colony audit verify` on what it leaves (on
//! the shipped genesis files without kick artifacts: the tests count records).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::common;
use common::{start_quiet as start, COLONY};

/// Every decision record, read through the API page by page.
async fn all_records(http: &reqwest::Client, url: &str, token: &str) -> Vec<Value> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = http
            .get(format!("{url}/v1/audit?after={after}&limit=1000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let batch = page["records"].as_array().unwrap().clone();
        if batch.is_empty() {
            return records;
        }
        after = page["next_after"].as_u64().unwrap();
        records.extend(batch);
    }
}

fn verify(data: &Path, extra: &[&str]) -> (bool, String) {
    let output = Command::new(COLONY)
        .args(["audit", "verify", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_command() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    const ACKS_BEFORE_KILL: usize = 300;
    let mut clients = Vec::new();
    for client in 0..16 {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let (acknowledged, count) = (Arc::clone(&acknowledged), Arc::clone(&count));
        clients.push(tokio::spawn(async move {
            // Each client writes until its requests start failing (the node is gone).
            for step in 0.. {
                let reserve = http
                    .post(format!("{url}/v1/ledger/reserve"))
                    .bearer_auth(&token)
                    .json(&json!({"resource": "disk_bytes", "amount": 10, "justification": format!("client {client} step {step}")}))
                    .send()
                    .await;
                let Ok(response) = reserve else { return };
                let Ok(body) = response.json::<Value>().await else { return };
                let reservation = body["reservation"].as_u64().expect("reserved");
                let commit = http
                    .post(format!("{url}/v1/ledger/commit"))
                    .bearer_auth(&token)
                    .json(&json!({"reservation": reservation, "actual": 7}))
                    .send()
                    .await;
                let Ok(response) = commit else { return };
                if response.status().is_success() {
                    acknowledged.lock().unwrap().push(reservation);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Kill once enough commits are acknowledged, with requests still in flight.
    while count.load(Ordering::SeqCst) < ACKS_BEFORE_KILL {
        tokio::task::yield_now().await;
        if clients.iter().all(|c| c.is_finished()) {
            panic!("the clients stopped before the kill");
        }
    }
    node.kill().unwrap();
    node.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL);

    let (mut node, url) = start(data.path());
    let records = all_records(&http, &url, &token).await;
    let committed: std::collections::BTreeSet<u64> = records
        .iter()
        .filter(|r| r["action"] == "ledger.commit" && r["decision"] == "allowed")
        .map(|r| r["detail"]["effect"]["reservation"].as_u64().unwrap())
        .collect();
    let missing: Vec<&u64> = acknowledged
        .iter()
        .filter(|r| !committed.contains(r))
        .collect();
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    // The ledger agrees with the log exactly: 7 bytes per durable commit.
    let me: Value = http
        .get(format!("{url}/v1/ledger/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["balances"]["disk_bytes"]["used"].as_u64().unwrap(),
        7 * committed.len() as u64
    );
    node.kill().unwrap();
    node.wait().unwrap();

    let (ok, text) = verify(data.path(), &["--replay"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("verified {} decision records", records.len())),
        "{text}"
    );
}

#[test]
fn one_changed_byte_makes_verify_fail_and_name_the_record() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        for index in 0..10 {
            let response = http
                .post(format!("{url}/v1/principals"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("agent {index}"), "kind": "ai", "justification": format!("agent number {index}")}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    });
    node.kill().unwrap();
    node.wait().unwrap();
    let (ok, text) = verify(data.path(), &[]);
    assert!(
        ok && text.contains("verified 13 decision records"),
        "{text}"
    );

    // Change one byte inside record 8 (the fifth agent's justification, after genesis
    // and the alerts and inbox streams).
    let segment = std::fs::read_dir(data.path().join("audit"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let needle = b"agent number 4";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + needle.len() - 1] = b'5';
    std::fs::write(&segment, &bytes).unwrap();
    let (ok, text) = verify(data.path(), &[]);
    assert!(!ok, "a changed byte must fail verification");
    assert!(text.contains("decision record 8"), "{text}");
    let output = Command::new(COLONY)
        .args(["audit", "verify", "--json", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["ok"].as_bool(), report["seq"].as_u64()),
        (Some(false), Some(8))
    );
}

#[test]
fn sigterm_finishes_the_log_and_writes_a_snapshot() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/principals"))
            .bearer_auth(&token)
            .json(&json!({"name": "loom", "kind": "ai", "justification": "before the stop"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    });
    let killed = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = node.wait().unwrap();
    assert!(status.success(), "a clean stop exits 0: {status:?}");
    let snapshots: Vec<_> = std::fs::read_dir(data.path().join("snapshots"))
        .unwrap()
        .collect();
    assert_eq!(snapshots.len(), 1, "a snapshot at shutdown");
    let (ok, text) = verify(data.path(), &["--replay"]);
    assert!(ok && text.contains("verified 4 decision records"), "{text}");
}
