//! Worker sessions held on the bus: a reconnect within the grace period, and a queued
//! hello told when its session is admitted.

use crate::common;

use colony_node::bus::BusConfig;
use serde_json::{json, Value};

use common::bus::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sessions_over_the_bus_survive_a_reconnect_within_grace_only() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let bus = BusConfig {
        worker_grace_ms: 2_000,
        ..test_bus()
    };
    let (node, base, admin) = start_with(data.path(), config.path(), bus).await;
    let (address, token) =
        common::create_principal(&base, &admin, "builder", "ai", &["member"]).await;
    let http = reqwest::Client::new();
    let posted = common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "build it", "capabilities": ["rust"], "justification": "test"}),
    )
    .await;
    let task = posted["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{posted}"))
        .to_string();

    // hello registers a session; a claim for it holds the task.
    let mut client = Client::connect(&node, &token).await;
    let hello = client
        .request(
            json!({"op": "hello", "capabilities": ["rust"], "model": "scripted"}),
            "h",
        )
        .await;
    assert_eq!(hello["op"], "ok", "{hello}");
    assert_eq!(hello["status"], "active");
    assert!(hello["heartbeat_ms"].as_u64().unwrap() > 0);
    let worker = hello["worker"].as_u64().unwrap();
    let claim: Value = http
        .post(format!("{base}/v1/tasks/claim"))
        .bearer_auth(&token)
        .json(&json!({"worker": worker, "justification": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["task"]["address"], json!(task), "{claim}");
    assert_eq!(
        client.request(json!({"op": "heartbeat"}), "hb").await["op"],
        "ok"
    );

    // The connection drops and comes back within the grace period: still active.
    drop(client);
    wait_for_connections(&base, &admin, 0).await;
    let mut client = Client::connect(&node, &token).await;
    let resumed = client
        .request(json!({"op": "hello", "worker": worker}), "h2")
        .await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    wait_for_decision(&base, &admin, "worker.disconnected", &address).await;
    let state = common::get_json(&base, &admin, &format!("/v1/workers/{worker}")).await;
    assert_eq!(state["state"], "active", "{state}");

    // It drops again and stays away: lost, with the evidence, and its task is back.
    drop(client);
    let lost = wait_for_decision(&base, &admin, "worker.lost", &address).await;
    assert_eq!(lost["reason"]["code"], "worker_disconnected", "{lost}");
    assert_eq!(lost["reason"]["revoked"], json!([task]));
    let task_state = common::get_json(&base, &admin, &format!("/v1/tasks/{task}")).await;
    assert_eq!(task_state["status"], "pending", "{task_state}");

    // A graceful bye ends a session at once.
    let mut client = Client::connect(&node, &token).await;
    let hello = client
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h3")
        .await;
    let second = hello["worker"].as_u64().unwrap();
    let bye = client.request(json!({"op": "bye"}), "bye").await;
    assert_eq!(bye["status"], "left", "{bye}");
    let state = common::get_json(&base, &admin, &format!("/v1/workers/{second}")).await;
    assert_eq!(state["state"], "left", "{state}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_hello_is_told_when_its_session_is_admitted_and_withdrawn_when_gone() {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/limits.toml"),
    )
    .unwrap();
    let limits = shipped.replace(
        "[limits.active_workers]\n# Hypernet max_concurrent_workers; the swarm's soft_max_sessions/hard_max_sessions\n# (2/4 per machine) map here too. Enforced once worker sessions exist.\nsoft = 15\nhard = 30",
        "[limits.active_workers]\nsoft = 1\nhard = 3",
    );
    assert_ne!(limits, shipped, "the test edits active_workers");
    let config = common::genesis_dir(&[("limits.toml", &limits)]);
    let data = tempfile::tempdir().unwrap();
    let bus = BusConfig {
        worker_grace_ms: 200,
        ..test_bus()
    };
    let (node, base, admin) = start_with(data.path(), config.path(), bus).await;
    let (address, token) =
        common::create_principal(&base, &admin, "builder", "ai", &["member"]).await;

    let mut first = Client::connect(&node, &token).await;
    let active = first
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h1")
        .await;
    assert_eq!(active["status"], "active", "{active}");
    let mut second = Client::connect(&node, &token).await;
    let queued = second
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h2")
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let ticket = queued["worker"].as_u64().unwrap();

    // The first leaves: the queue admits the second, which is told so on its
    // connection and can heartbeat its session at once.
    let bye = first
        .request(json!({"op": "bye", "worker": active["worker"]}), "b1")
        .await;
    assert_eq!(bye["op"], "ok", "{bye}");
    let admitted = loop {
        let frame = second.recv().await;
        if frame["op"] == "admitted" {
            break frame;
        }
    };
    assert_eq!(admitted["worker"], json!(ticket));
    assert!(admitted["heartbeat_ms"].as_u64().unwrap() > 0);
    let beat = second
        .request(json!({"op": "heartbeat", "worker": ticket}), "hb")
        .await;
    assert_eq!(beat["op"], "ok", "{beat}");

    // A third hello waits behind the second; its connection drops, and once the
    // grace period runs out its registration leaves the queue.
    let mut third = Client::connect(&node, &token).await;
    let queued = third
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h3")
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    drop(third);
    let withdrawn = wait_for_decision(&base, &admin, "worker.withdraw", &address).await;
    assert_eq!(
        withdrawn["reason"]["code"], "worker_disconnected",
        "{withdrawn}"
    );
    let limits = common::get_json(&base, &admin, "/v1/limits/active_workers").await;
    assert_eq!(limits["queued"], json!(0), "{limits}");
    assert_eq!(
        limits["usage"],
        json!(1),
        "only the admitted session: {limits}"
    );

    // A fourth says `bye` before its turn: out of the queue at once.
    let mut fourth = Client::connect(&node, &token).await;
    let queued = fourth
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h4")
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let bye = fourth
        .request(json!({"op": "bye", "worker": queued["worker"]}), "b4")
        .await;
    assert_eq!(
        (&bye["op"], &bye["status"], &bye["worker"]),
        (&json!("ok"), &json!("withdrawn"), &queued["worker"]),
        "{bye}"
    );
    let limits = common::get_json(&base, &admin, "/v1/limits/active_workers").await;
    assert_eq!(limits["queued"], json!(0), "{limits}");
    node.shutdown().await.unwrap();
}
