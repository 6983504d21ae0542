//! Issue 31: agreement you can check. A node whose log disagrees with another's at
//! the same record is reported loudly (the log, `/metrics`, `GET /v1/cluster`, the
//! dashboard's banner in a real browser), and only the cluster's admitted nodes are
//! heard: a report forged by something else with access to NATS changes nothing.

use std::time::{Duration, Instant};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use super::bus::publish_raw;
use super::nodes::{figure, get, metrics, start_node, until_all, Nodes};
use crate::common::config_with;
use crate::common::nats::NatsCluster;

/// Where a node tells the others how far it is (`colony.cluster.<stream>.nodes.<name>`).
const REPORTS: &str = "colony.cluster.COLONY_COMMANDS.nodes";

/// A report as docs/cluster.md describes it: `[1][signature][key][JSON]`, the
/// signature over `colony-node-report/v1\n`, the key and the JSON.
fn signed_report(key: &SigningKey, report: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(report).unwrap();
    let public = key.verifying_key().to_bytes();
    let mut signed = b"colony-node-report/v1\n".to_vec();
    signed.extend(public);
    signed.extend(&json);
    let mut bytes = vec![1u8];
    bytes.extend(key.sign(&signed).to_bytes());
    bytes.extend(public);
    bytes.extend(json);
    bytes
}

/// Publishes `messages` on every server until `holds` is true of the node's
/// `/metrics` (at most 30 s). Reports travel on core NATS, delivered at most once,
/// and a node tells the others again every second: the test does the same.
async fn tell_until(
    nats: &NatsCluster,
    messages: &[(String, Vec<u8>)],
    http: &reqwest::Client,
    url: &str,
    token: &str,
    what: &str,
    holds: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for server in &nats.servers {
            for (subject, payload) in messages {
                publish_raw(server.port, subject, payload);
            }
        }
        let text = metrics(http, url, token).await;
        if holds(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergence_is_told_loudly_and_a_forged_report_is_not_heard() {
    let (browser, driver) = tokio::task::spawn_blocking(crate::common::chromium)
        .await
        .unwrap();
    let nats = NatsCluster::start(3);
    // Checkpoints every 10 decision records.
    let config = config_with(&[("audit.toml", "[heads]\nevery = 10\ninterval = \"1s\"\n")]);
    let data = tempfile::tempdir().unwrap();
    let (child, url) = start_node(data.path(), config.path(), &nats.urls(), "node-1");
    let _nodes = Nodes(vec![Some(child)]);
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    for n in 0..12 {
        let posted = http
            .post(format!("{url}/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("task {n}"), "justification": "records to checkpoint"}))
            .send()
            .await
            .unwrap();
        assert!(
            posted.status().is_success(),
            "{}",
            posted.text().await.unwrap()
        );
    }
    let node = [url.clone()];
    until_all(&http, &node, &token, "/v1/cluster", |view| {
        view["nodes"][0]["checkpoint_seq"].as_u64() >= Some(10)
    })
    .await;
    let view = get(&http, &format!("{url}/v1/cluster"), &token).await;
    let checkpoint = view["nodes"][0]["checkpoint_seq"].as_u64().unwrap();
    let head = view["nodes"][0]["checkpoint_head"]
        .as_str()
        .unwrap()
        .to_string();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let astray = "ab".repeat(32);
    assert_ne!(head, astray);
    let report = |name: &str| {
        json!({"name": name, "applied_seq": checkpoint, "at_ms": now_ms(), "connected": true,
               "checkpoint": [checkpoint, astray]})
    };

    // Something with access to NATS but no admitted key: an unsigned report, one
    // signed by a key nobody admitted, and one under node-1's name signed by that
    // stranger. None is heard: no divergence, no extra node.
    let refused_before = figure(
        &metrics(&http, &url, &token).await,
        "colony_cluster_reports_refused_total",
    );
    let stranger = SigningKey::from_bytes(&[42; 32]);
    let forged = [
        (
            format!("{REPORTS}.node-2"),
            serde_json::to_vec(&report("node-2")).unwrap(),
        ),
        (
            format!("{REPORTS}.node-2"),
            signed_report(&stranger, &report("node-2")),
        ),
        (
            format!("{REPORTS}.node-1"),
            signed_report(&stranger, &report("node-1")),
        ),
    ];
    let figures = tell_until(
        &nats,
        &forged,
        &http,
        &url,
        &token,
        "forged reports never refused",
        |text| figure(text, "colony_cluster_reports_refused_total") >= refused_before + 3,
    )
    .await;
    assert_eq!(figure(&figures, "colony_cluster_divergences_total"), 0);
    assert_eq!(figure(&figures, "colony_cluster_live_nodes"), 1);
    let view = get(&http, &format!("{url}/v1/cluster"), &token).await;
    assert_eq!(view["divergences"], 0, "{view}");
    assert_eq!(view["nodes"].as_array().unwrap().len(), 1, "{view}");
    let overview = get(&http, &format!("{url}/v1/dashboard"), &token).await;
    assert_eq!(overview["cluster"]["node"], "node-1", "{overview}");
    assert_eq!(overview["cluster"]["divergences"], 0, "{overview}");

    // A node the cluster admitted (the test holds its key) whose log went astray:
    // its checkpoint at the same record disagrees, and node-1 says so everywhere.
    let astray_node = SigningKey::from_bytes(&[43; 32]);
    let public =
        base64::engine::general_purpose::STANDARD.encode(astray_node.verifying_key().to_bytes());
    let admitted = http
        .post(format!("{url}/v1/cluster/nodes"))
        .bearer_auth(&token)
        .json(&json!({"name": "node-2", "public_key": public, "justification": "a node whose log will go astray"}))
        .send()
        .await
        .unwrap();
    assert!(
        admitted.status().is_success(),
        "{}",
        admitted.text().await.unwrap()
    );
    let astray_report = [(
        format!("{REPORTS}.node-2"),
        signed_report(&astray_node, &report("node-2")),
    )];
    tell_until(
        &nats,
        &astray_report,
        &http,
        &url,
        &token,
        "the divergence never seen",
        |text| figure(text, "colony_cluster_divergences_total") >= 1,
    )
    .await;
    let evidence = format!("node `node-2` has chain hash {astray} at decision record {checkpoint}");
    until_all(&http, &node, &token, "/v1/dashboard", |overview| {
        overview["cluster"]["divergences"] == 1
    })
    .await;
    let overview = get(&http, &format!("{url}/v1/dashboard"), &token).await;
    let told = overview["cluster"]["divergence"].as_str().unwrap();
    assert!(
        told.contains(&evidence) && told.contains(&head),
        "{overview}"
    );
    let figures = metrics(&http, &url, &token).await;
    assert_eq!(figure(&figures, "colony_cluster_divergences_total"), 1);
    let view = get(&http, &format!("{url}/v1/cluster"), &token).await;
    assert_eq!(view["divergences"], 1, "{view}");

    // The dashboard, in Chromium, shows it above every view.
    crate::common::run_python(
        "selenium",
        "dashboard_divergence.py",
        vec![
            format!("{url}/#token={token}"),
            browser.display().to_string(),
            driver.display().to_string(),
            evidence,
        ],
    )
    .await;
}
