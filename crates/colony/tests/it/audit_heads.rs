//! Issue 31: signed chain heads. A node signs its decision log's head with its own
//! Ed25519 key (`node.key`, `node.pub`) and serves it at `GET /v1/audit/head`; a
//! history rewritten with every hash recomputed after the change still passes a
//! plain `colony audit verify`, and fails `colony audit verify --head` against a head
//! signed before the rewrite, naming the records; a head signed by another key
//! does not count.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::Digest;

use crate::common;
use common::COLONY;

fn get(url: &str, token: &str, path: &str) -> (u16, Value) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn post(url: &str, token: &str, path: &str, body: Value) -> Value {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn verify(data: &Path, extra: &[&str]) -> (bool, String) {
    let output = Command::new(COLONY)
        .args(["audit", "verify", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// What an attacker with write access to the data directory does: changes record
/// `target`'s justification and recomputes every hash from it on, frames and
/// checksums included, so that the chain verifies again.
fn rewrite_history(data: &Path, target: u64) {
    let mut segments: Vec<_> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(!segments.is_empty(), "no audit segments");
    let mut prev = "0".repeat(64);
    let mut changed = false;
    for path in segments {
        let bytes = std::fs::read(&path).unwrap();
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            let payload = std::str::from_utf8(&bytes[offset + 8..offset + 8 + length]).unwrap();
            offset += 8 + length;
            let split = payload.rfind(",\"hash\":\"").unwrap();
            let mut body = payload[..split].to_string();
            let record: Value = serde_json::from_str(&format!("{body}}}")).unwrap();
            if record["seq"] == json!(target) {
                let old = record["justification"].as_str().unwrap().to_string();
                let old_json = serde_json::to_string(&old).unwrap();
                let new_json = serde_json::to_string("nothing happened here").unwrap();
                body = body.replacen(
                    &format!("\"justification\":{old_json}"),
                    &format!("\"justification\":{new_json}"),
                    1,
                );
                changed = true;
            }
            let old_prev = record["prev_hash"].as_str().unwrap();
            body = body.replacen(
                &format!("\"prev_hash\":\"{old_prev}\""),
                &format!("\"prev_hash\":\"{prev}\""),
                1,
            );
            let hash = hex::encode(sha2::Sha256::digest(format!("{body}}}").as_bytes()));
            let record = format!("{body},\"hash\":\"{hash}\"}}");
            out.extend_from_slice(&(record.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(record.as_bytes()).to_le_bytes());
            out.extend_from_slice(record.as_bytes());
            prev = hash;
        }
        std::fs::write(&path, out).unwrap();
    }
    assert!(changed, "record {target} was not found");
}

#[test]
fn a_rewritten_history_fails_against_a_head_signed_before_it() {
    let config =
        common::config_with(&[("audit.toml", "[heads]\nevery = 5\ninterval = \"100ms\"\n")]);
    let data = tempfile::tempdir().unwrap();
    let (node, url) = common::start_with_config(data.path(), config.path());
    let mut node = node;
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    for n in 0..5 {
        let made = post(
            &url,
            &admin,
            "/v1/tasks",
            json!({"title": format!("task {n}"), "justification": "history to keep"}),
        );
        assert!(made["address"].is_string(), "{made}");
    }
    // The node signs within its interval; wait for a head past those records.
    let written = get(&url, &admin, "/v1/audit?limit=1000").1["records"]
        .as_array()
        .unwrap()
        .len() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let head = loop {
        let (status, head) = get(&url, &admin, "/v1/audit/head");
        if status == 200 && head["seq"].as_u64().unwrap() >= written {
            break head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no head signed: {status} {head}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let public = std::fs::read_to_string(data.path().join("node.pub")).unwrap();
    assert_eq!(head["public_key"], public.trim());
    let cluster = get(&url, &admin, "/v1/cluster").1;
    assert_eq!(cluster["public_key"], public.trim());
    let _ = node.kill();
    let _ = node.wait();
    let saved = data.path().join("..").join(format!(
        "head-{}.json",
        data.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&saved, head.to_string()).unwrap();
    let saved_arg = saved.to_string_lossy().to_string();
    // What a node of the cluster said of its keys, kept apart from the data.
    let keys_file = data.path().join("..").join(format!(
        "cluster-{}.json",
        data.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&keys_file, cluster.to_string()).unwrap();
    let keys_arg = keys_file.to_string_lossy().to_string();
    let (ok, said) = verify(
        data.path(),
        &["--head", &saved_arg, "--keys-from", &keys_arg],
    );
    assert!(ok, "{said}");
    assert!(
        !said.contains("trusting the data directory's own key"),
        "{said}"
    );

    let (ok, said) = verify(data.path(), &["--head", &saved_arg]);
    assert!(ok, "{said}");
    assert!(
        said.contains("matches 1 signed head")
            && said.contains("trusting the data directory's own key"),
        "{said}"
    );

    rewrite_history(data.path(), 3);
    let (ok, said) = verify(data.path(), &[]);
    assert!(
        ok,
        "the plain chain check cannot see a recomputed history: {said}"
    );
    let (ok, said) = verify(data.path(), &["--head", &saved_arg, "--key", public.trim()]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("was rewritten") && said.contains("from 1 to"),
        "{said}"
    );
    let (ok, said) = verify(
        data.path(),
        &["--head", &saved_arg, "--keys-from", &keys_arg],
    );
    assert!(!ok && said.contains("was rewritten"), "{said}");

    // A head signed by another key does not count, whatever it says.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = colony_node::identity::load_or_create(elsewhere.path()).unwrap();
    let other = colony_log::heads::encode_key(&other.verifying_key());
    let (ok, said) = verify(data.path(), &["--head", &saved_arg, "--key", &other]);
    assert!(!ok && said.contains("not a trusted key"), "{said}");
    let _ = std::fs::remove_file(&saved);
    let _ = std::fs::remove_file(&keys_file);
}

/// A node that pruned its logs (`retention.toml` `[logs]`): `colony audit verify`
/// checks the chain from the node's signed cut and says so; the cut held to another
/// key fails, and `--replay` says why it cannot run.
#[test]
fn a_pruned_log_verifies_from_its_signed_cut() {
    let genesis = common::config_with(&[(
        "retention.toml",
        "[logs]\nkeep_bytes = \"16KiB\"\npruned = \"delete\"\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut config = colony_node::NodeConfig {
            data_dir: data.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config_dir: genesis.path().to_path_buf(),
            config_dir_required: true,
            ..colony_node::NodeConfig::default()
        };
        config.store.segment.segment_bytes_max = 4 << 10;
        config.sequencer.snapshot_every_commands = 40;
        let node = colony_node::Node::start(config).await.unwrap();
        let url = format!("http://{}", node.local_addr());
        let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
        let client = reqwest::Client::new();
        for n in 0..200 {
            let response = client
                .post(format!("{url}/v1/tasks"))
                .bearer_auth(admin.trim())
                .json(&json!({"title": format!("task {n}"), "justification": "fill the logs"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 201);
        }
        node.shutdown().await.unwrap();
    });
    assert!(data.path().join("audit/CUT").exists(), "the log was pruned");
    let (ok, output) = verify(data.path(), &[]);
    assert!(ok, "{output}");
    assert!(
        output.contains("verified decision records") && output.contains("pruned before record"),
        "{output}"
    );
    let other = colony_log::heads::encode_key(
        &ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key(),
    );
    let (ok, output) = verify(data.path(), &["--key", &other]);
    assert!(!ok && output.contains("its cut"), "{output}");
    let (ok, output) = verify(data.path(), &["--replay"]);
    assert!(!ok && output.contains("was pruned before"), "{output}");
}
