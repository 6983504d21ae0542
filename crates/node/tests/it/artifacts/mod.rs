//! Artifacts on a real node: WebAssembly modules deployed over HTTP, run by the
//! runtime turn after turn, and metered through the kernel. Seed 003's five tests
//! over real artifacts (a check before an LLM call, the deduction after it, running
//! until exhausted, no loop flag, the insufficient-resource error), and the attacks:
//! an infinite loop, a memory hog, a module that imports WASI.

use crate::common;

use std::time::Duration;

use colony_node::genesis::{ArtifactsSetup, KickArtifact};
use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};

mod services;

const PATIENCE: Duration = Duration::from_secs(30);

/// A runtime tuned for tests: cheap fuel (so that quotas are reached in
/// milliseconds of real time), short turns and quick idle wakes.
fn runtime() -> colony_artifacts::RuntimeConfig {
    colony_artifacts::RuntimeConfig {
        fuel_per_ms: 20_000,
        turn_ms: 10,
        idle_wake_ms: 100,
        exhausted_retry_ms: 100,
        ..Default::default()
    }
}

struct Colony {
    node: Node,
    base: String,
    admin: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn start(kick: Vec<KickArtifact>, extra: &[(&str, &str)]) -> Colony {
    start_with(runtime(), kick, extra).await
}

async fn start_with(
    runtime: colony_artifacts::RuntimeConfig,
    kick: Vec<KickArtifact>,
    extra: &[(&str, &str)],
) -> Colony {
    let config = common::genesis_dir(extra);
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        artifacts: Some(ArtifactsSetup { runtime, kick }),
        ..common::node_config(data.path(), config.path())
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    Colony {
        base: format!("http://{}", node.local_addr()),
        node,
        admin,
        _dirs: (config, data),
    }
}

async fn deploy(
    colony: &Colony,
    token: &str,
    name: &str,
    wat: &str,
    quotas: Value,
) -> (u16, Value) {
    common::send(
        reqwest::Method::POST,
        &colony.base,
        token,
        "/v1/artifacts",
        Some(json!({"name": name, "wat": wat, "quotas": quotas, "justification": "a test deploys it"})),
    )
    .await
}

async fn deployed(colony: &Colony, token: &str, name: &str, wat: &str, quotas: Value) -> String {
    let (status, body) = deploy(colony, token, name, wat, quotas).await;
    assert_eq!(status, 201, "{body}");
    body["address"].as_str().unwrap().to_string()
}

/// Polls the artifact until `done` holds of it (or fails after PATIENCE).
async fn wait_until(
    colony: &Colony,
    address: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let view = common::get_json(
            &colony.base,
            &colony.admin,
            &format!("/v1/artifacts/{address}"),
        )
        .await;
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{address} never {what}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn audit_of(colony: &Colony, actor: &str) -> Vec<Value> {
    let page = common::get_json(
        &colony.base,
        &colony.admin,
        &format!("/v1/audit?actor={actor}&limit=1000"),
    )
    .await;
    page["records"].as_array().unwrap().clone()
}

const HELLO: &str = r#"(module
  (import "colony" "log" (func $log (param i32 i32) (result i32)))
  (import "colony" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from wasm")
  (data (i32.const 32) "greeting")
  (func (export "run") (result i32)
    (drop (call $log (i32.const 0) (i32.const 15)))
    (drop (call $put (i32.const 32) (i32.const 8) (i32.const 0) (i32.const 15)))
    (i32.const 0)))"#;

const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop $forever (br $forever))
    (i32.const 1)))"#;

const HOG: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (if (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)) (then unreachable))
    (i32.const 1)))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_artifact_runs_logs_stores_and_says_it_is_done() {
    let colony = start(Vec::new(), &[]).await;
    let (agent, token) =
        common::create_principal(&colony.base, &colony.admin, "author", "ai", &["member"]).await;
    let before = common::get_json(&colony.base, &token, "/v1/ledger/me").await;
    let address = deployed(&colony, &token, "hello", HELLO, json!({})).await;
    assert!(address.starts_with("3."), "{address}");
    let view = wait_until(&colony, &address, "stopped", |v| {
        v["state"] == "stopped" && v["usage"]["runs"] == 1
    })
    .await;
    assert_eq!(view["deployer"], agent.as_str());
    assert_eq!(
        view["run"], false,
        "done: the runtime stops it through the kernel"
    );
    assert!(view["usage"]["fuel"].as_u64().unwrap() > 0);
    assert_eq!(view["usage"]["kv_bytes"], 23);
    // The module's bytes are on the deployer's disk; the store's on the artifact's,
    // and so on its deployer's too (quotas nest).
    let after = common::get_json(&colony.base, &token, "/v1/ledger/me").await;
    let used = |v: &Value| v["balances"]["disk_bytes"]["used"].as_u64().unwrap();
    assert_eq!(view["balances"]["disk_bytes"]["used"], 4096);
    assert_eq!(
        used(&after) - used(&before),
        view["bytes"].as_u64().unwrap() + 4096
    );
    let logs = common::get_json(
        &colony.base,
        &colony.admin,
        &format!("/v1/artifacts/{address}/logs"),
    )
    .await;
    assert_eq!(logs["lines"][0]["text"], "hello from wasm");
    // Every step is a decision of record: the deploy, the turn's reservation and
    // commit, the stop with its reason.
    let records = audit_of(&colony, &address).await;
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for wanted in ["ledger.reserve", "ledger.commit", "artifact.stop"] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
    let deploys = audit_of(&colony, &agent).await;
    assert!(deploys
        .iter()
        .any(|r| r["action"] == "artifact.deploy" && r["subject"] == address.as_str()));
    // Started again, it runs again (its store kept).
    let (status, _) = common::send(
        reqwest::Method::POST,
        &colony.base,
        &token,
        &format!("/v1/artifacts/{address}/start"),
        Some(json!({"justification": "once more"})),
    )
    .await;
    assert_eq!(status, 200);
    wait_until(&colony, &address, "ran again", |v| {
        v["state"] == "stopped" && v["run"] == false && v["usage"]["runs"] == 1
    })
    .await;
    let logs = common::get_json(
        &colony.base,
        &colony.admin,
        &format!("/v1/artifacts/{address}/logs?after=1"),
    )
    .await;
    assert_eq!(logs["lines"].as_array().unwrap().len(), 1, "{logs}");
    colony.node.shutdown().await.unwrap();
}

/// Seed 003: an artifact runs until its resources are exhausted, with no loop flag;
/// an infinite loop is stopped within 10% of its compute_ms; the refusal is an
/// insufficient_resource decision naming compute_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_runs_until_its_compute_is_exhausted_and_no_further() {
    let colony = start(Vec::new(), &[]).await;
    let quota = 200;
    let address = deployed(
        &colony,
        &colony.admin,
        "spin",
        SPIN,
        json!({"compute_ms": quota}),
    )
    .await;
    let view = wait_until(&colony, &address, "exhausted", |v| {
        v["state"] == "exhausted"
    })
    .await;
    assert_eq!(view["exhausted"], "compute_ms", "{view}");
    assert!(
        view["refill_at"].is_string(),
        "a flow says when it refills: {view}"
    );
    let used = view["balances"]["compute_ms"]["used"].as_u64().unwrap();
    assert!(
        used <= quota && used * 10 >= quota * 9,
        "charged {used} of {quota} ms"
    );
    let fuel = view["usage"]["fuel"].as_u64().unwrap();
    assert!(
        fuel >= runtime().fuel_of(quota) * 9 / 10,
        "burned {fuel} fuel"
    );
    assert!(view["usage"]["turns"].as_u64().unwrap() >= 18);
    let records = audit_of(&colony, &address).await;
    let refusal = records
        .iter()
        .find(|r| r["action"] == "ledger.reserve" && r["decision"] == "denied")
        .unwrap_or_else(|| panic!("no refused reservation: {records:?}"));
    assert_eq!(
        refusal["reason"]["code"], "insufficient_resource",
        "{refusal}"
    );
    assert_eq!(refusal["reason"]["resource"], "compute_ms", "{refusal}");
    // Nothing about it asks whether it loops: the API has no such property.
    let document = common::get_json(&colony.base, &colony.admin, "/v1/openapi.json").await;
    let deploy_schema = document["components"]["schemas"]["DeployArtifact"].to_string();
    assert!(!deploy_schema.contains("loop"), "{deploy_schema}");
    assert!(!view.to_string().contains("has_loop"));
    colony.node.shutdown().await.unwrap();
}

/// A memory hog is stopped at its memory_bytes (the refused growth is a decision),
/// gives its memory back, stays exhausted, and starts afresh after a grant.
/// Fuel counts instructions, and the cheapest loop burns it slowly: with fuel that
/// would last, each turn is cut at `turn_ms` of time and charged its CPU time, so
/// the loop still stops at its compute_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_outlasts_its_fuel_is_cut_by_time_and_charged_its_cpu() {
    let colony = start_with(
        colony_artifacts::RuntimeConfig {
            fuel_per_ms: 1_000_000_000,
            ..runtime()
        },
        Vec::new(),
        &[],
    )
    .await;
    let quota = 200;
    let address = deployed(
        &colony,
        &colony.admin,
        "spin",
        SPIN,
        json!({"compute_ms": quota}),
    )
    .await;
    let view = wait_until(&colony, &address, "exhausted", |v| {
        v["state"] == "exhausted"
    })
    .await;
    let used = view["balances"]["compute_ms"]["used"].as_u64().unwrap();
    assert!(
        used <= quota && used * 10 >= quota * 9,
        "charged {used} of {quota} ms"
    );
    // The fuel alone would have charged almost nothing: the charge is CPU time.
    let fuel = view["usage"]["fuel"].as_u64().unwrap();
    assert!(fuel < 1_000_000_000 * quota / 2, "{fuel}");
    assert!(view["usage"]["turns"].as_u64().unwrap() >= 15, "{view}");
    colony.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_stopped_at_its_memory_bytes_and_resumes_after_a_grant() {
    let colony = start(Vec::new(), &[]).await;
    let quota = 1 << 20;
    let address = deployed(
        &colony,
        &colony.admin,
        "hog",
        HOG,
        json!({"memory_bytes": quota}),
    )
    .await;
    let view = wait_until(&colony, &address, "exhausted of memory", |v| {
        v["state"] == "exhausted" && v["balances"]["memory_bytes"]["used"] == 0
    })
    .await;
    assert_eq!(view["exhausted"], "memory_bytes", "{view}");
    let error = view["last_error"].as_str().unwrap();
    assert!(error.contains("memory_bytes"), "{error}");
    assert_eq!(view["run"], true, "it waits for a grant: {view}");
    let records = audit_of(&colony, &address).await;
    let refused = records
        .iter()
        .filter(|r| r["action"] == "ledger.reserve" && r["decision"] == "denied")
        .count();
    assert!(
        records
            .iter()
            .any(|r| r["reason"]["resource"] == "memory_bytes"),
        "the refused growth is a decision: {records:?}"
    );
    let denial = records
        .iter()
        .find(|r| r["reason"]["resource"] == "memory_bytes")
        .unwrap();
    assert!(
        denial["reason"]["available"].as_u64().unwrap()
            < denial["reason"]["requested"].as_u64().unwrap(),
        "{denial}"
    );
    // Nothing is retried while nothing changed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = audit_of(&colony, &address).await;
    assert_eq!(
        again.len(),
        records.len(),
        "an exhausted artifact spends no commands"
    );
    // A grant of more memory (the admin deployed it, so it is its parent).
    let (status, body) = common::send(
        reqwest::Method::POST,
        &colony.base,
        &colony.admin,
        "/v1/ledger/grant",
        Some(json!({"to": address, "resource": "memory_bytes", "amount": 4 << 20, "justification": "room to grow"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // It starts afresh and grows until its new quota refuses it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let records = audit_of(&colony, &address).await;
        let refused_after = records
            .iter()
            .filter(|r| r["action"] == "ledger.reserve" && r["decision"] == "denied")
            .count();
        if refused_after > refused {
            let last = records
                .iter()
                .rev()
                .find(|r| r["reason"]["resource"] == "memory_bytes")
                .unwrap();
            assert!(
                last["reason"]["available"].as_u64().unwrap() < 4 << 20,
                "{last}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "it never ran again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    colony.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_reach_outside_colony_or_are_not_modules_are_refused() {
    let colony = start(Vec::new(), &[]).await;
    let wasi = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "run") (result i32) (i32.const 0)))"#;
    let (status, body) = deploy(&colony, &colony.admin, "wasi", wasi, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_module");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("wasi_snapshot_preview1::fd_write"),
        "{message}"
    );
    let unknown = r#"(module (import "colony" "spawn_process" (func)) (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#;
    let (status, body) = deploy(&colony, &colony.admin, "unknown", unknown, json!({})).await;
    assert_eq!(status, 400, "{body}");
    let wrong_type = r#"(module (import "colony" "log" (func (param i32))) (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#;
    let (status, body) = deploy(&colony, &colony.admin, "typed", wrong_type, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("wrong type"));
    let no_run = r#"(module (memory (export "memory") 1))"#;
    let (status, body) = deploy(&colony, &colony.admin, "norun", no_run, json!({})).await;
    assert_eq!(status, 400, "{body}");
    for garbage in [
        json!({"name": "x", "wat": "(module", "justification": "j"}),
        json!({"name": "x", "wasm_base64": "AGFzbQ==", "justification": "j"}),
        json!({"name": "x", "wasm_base64": "!!", "justification": "j"}),
        json!({"name": "x", "wat": HELLO, "wasm_base64": "AA==", "justification": "j"}),
        json!({"name": "bad name", "wat": HELLO, "justification": "j"}),
        json!({"name": "x", "wat": HELLO, "quotas": {"gold": 1}, "justification": "j"}),
    ] {
        let (status, body) = common::send(
            reqwest::Method::POST,
            &colony.base,
            &colony.admin,
            "/v1/artifacts",
            Some(garbage),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }
    let list = common::get_json(&colony.base, &colony.admin, "/v1/artifacts").await;
    assert_eq!(list["artifacts"].as_array().unwrap().len(), 0, "{list}");
    colony.node.shutdown().await.unwrap();
}
