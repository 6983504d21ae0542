//! Artifacts using Colony's services: an LLM call on their own budget, the bus and
//! the task board, who may start and stop them, the shipped kick artifact, fair
//! turns, and a quarantine.

use super::*;

const LLM: &str = r#"(module
  (import "colony" "llm_chat" (func $chat (param i32 i32) (result i32)))
  (import "colony" "result" (func $result (param i32 i32) (result i32)))
  (import "colony" "log" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"model\":\"colony-scripted\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"max_tokens\":16}")
  (func (export "run") (result i32)
    (local $n i32)
    (drop (call $chat (i32.const 0) (i32.const 90)))
    (local.set $n (call $result (i32.const 1024) (i32.const 8192)))
    (drop (call $log (i32.const 1024) (local.get $n)))
    (i32.const 0)))"#;

/// Seed 003: an LLM call is checked before (a reservation of the worst case on the
/// artifact's llm_budget_usd) and deducted after (the settlement at the real cost);
/// without budget it is refused with insufficient_resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifacts_llm_call_is_reserved_before_and_settled_after_on_its_own_budget() {
    let colony = start(Vec::new(), &[]).await;
    assert_eq!(
        LLM.split("(data (i32.const 0) \"")
            .nth(1)
            .unwrap()
            .split("\")")
            .next()
            .unwrap()
            .replace("\\\"", "\"")
            .len(),
        90
    );
    let funded = deployed(
        &colony,
        &colony.admin,
        "asks",
        LLM,
        json!({"llm_budget_usd": 100_000}),
    )
    .await;
    // The call's settlement is decided in the background (the gateway's outbox), so
    // it may land just after the run ends: wait for both.
    let view = wait_until(&colony, &funded, "done and settled", |v| {
        v["state"] == "stopped"
            && v["usage"]["runs"] == 1
            && v["balances"]["llm_budget_usd"]["used"].as_u64() > Some(0)
    })
    .await;
    let logs = common::get_json(
        &colony.base,
        &colony.admin,
        &format!("/v1/artifacts/{funded}/logs"),
    )
    .await;
    let answer = logs["lines"][0]["text"].as_str().unwrap();
    assert!(answer.contains("[scripted]"), "{answer}");
    let spent = view["balances"]["llm_budget_usd"]["used"].as_u64().unwrap();
    assert!(spent > 0 && spent < 100_000, "spent {spent}");
    let records = audit_of(&colony, &funded).await;
    let reserve = records.iter().position(|r| {
        r["action"] == "ledger.reserve" && r["detail"]["effect"]["resource"] == "llm_budget_usd"
    });
    let settle = records.iter().position(|r| r["action"] == "llm.settle");
    match (reserve, settle) {
        (Some(reserve), Some(settle)) => {
            assert!(reserve < settle, "reserved before, settled after");
            let settled = &records[settle]["detail"]["effect"];
            assert_eq!(settled["charged"].as_u64().unwrap(), spent);
            assert!(settled["reserved"].as_u64().unwrap() >= spent);
        }
        _ => panic!("no reservation and settlement: {records:?}"),
    }
    let broke = deployed(
        &colony,
        &colony.admin,
        "broke",
        LLM,
        json!({"llm_budget_usd": 0}),
    )
    .await;
    wait_until(&colony, &broke, "done", |v| {
        v["state"] == "stopped" && v["usage"]["runs"] == 1
    })
    .await;
    let logs = common::get_json(
        &colony.base,
        &colony.admin,
        &format!("/v1/artifacts/{broke}/logs"),
    )
    .await;
    let refusal = logs["lines"][0]["text"].as_str().unwrap();
    assert!(
        refusal.contains("insufficient") || refusal.contains("budget"),
        "{refusal}"
    );
    let records = audit_of(&colony, &broke).await;
    assert!(
        records.iter().any(|r| r["decision"] == "denied"
            && r["reason"]["code"] == "insufficient_resource"
            && r["reason"]["resource"] == "llm_budget_usd"),
        "{records:?}"
    );
    colony.node.shutdown().await.unwrap();
}

const ECHO: &str = r#"(module
  (import "colony" "subscribe" (func $sub (param i32 i32) (result i32)))
  (import "colony" "receive" (func $recv (result i32)))
  (import "colony" "result" (func $result (param i32 i32) (result i32)))
  (import "colony" "publish" (func $pub (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $ready (mut i32) (i32.const 0))
  (data (i32.const 0) "work.echo.in")
  (data (i32.const 16) "work.echo.out")
  (func (export "run") (result i32)
    (local $n i32)
    (if (i32.eqz (global.get $ready)) (then
      (drop (call $sub (i32.const 0) (i32.const 12)))
      (global.set $ready (i32.const 1))))
    (local.set $n (call $recv))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 2))))
    (local.set $n (call $result (i32.const 256) (i32.const 8192)))
    (drop (call $pub (i32.const 16) (i32.const 13) (i32.const 256) (local.get $n)))
    (i32.const 1)))"#;

const WORKER: &str = r#"(module
  (import "colony" "task_claim" (func $claim (param i32 i32) (result i32)))
  (import "colony" "result" (func $result (param i32 i32) (result i32)))
  (import "colony" "task_complete" (func $complete (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"capabilities\":[\"wasm\"]}")
  (data (i32.const 64) "{\"result\":\"done by wasm\",")
  (func (export "run") (result i32)
    (local $n i32)
    (local.set $n (call $claim (i32.const 0) (i32.const 25)))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 2))))
    (memory.copy (i32.const 1024) (i32.const 64) (i32.const 25))
    (local.set $n (call $result (i32.const 1048) (i32.const 8192)))
    (i32.store8 (i32.const 1048) (i32.const 44))
    (drop (call $complete (i32.const 1024) (i32.add (local.get $n) (i32.const 24))))
    (i32.const 1)))"#;

/// Posts a task with the capability `WORKER` claims and waits until it is done by it.
async fn a_wasm_task_is_done(colony: &Colony) {
    let task = common::post_json(
        &colony.base,
        &colony.admin,
        "/v1/tasks",
        &json!({"title": "for wasm", "capabilities": ["wasm"], "justification": "a test"}),
    )
    .await;
    let address = task["address"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let task =
            common::get_json(&colony.base, &colony.admin, &format!("/v1/tasks/{address}")).await;
        if task["status"] == "completed" {
            assert_eq!(task["result"], "done by wasm", "{task}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{task}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_talk_on_the_bus_and_work_the_task_board() {
    let colony = start(Vec::new(), &[]).await;
    let echo = deployed(&colony, &colony.admin, "echo", ECHO, json!({})).await;
    let worker = deployed(&colony, &colony.admin, "worker", WORKER, json!({})).await;
    wait_until(&colony, &echo, "idle", |v| v["state"] == "idle").await;
    let mut client = common::bus::Client::connect(&colony.node, &colony.admin).await;
    client.sub("out", "work.echo.out").await;
    let published = client.publish("work.echo.in", json!({"ping": 1})).await;
    assert_eq!(published["op"], "ok", "{published}");
    let message = client.recv().await;
    assert_eq!(message["op"], "msg", "{message}");
    assert_eq!(message["from"], echo.as_str());
    assert_eq!(message["data"]["data"]["ping"], 1, "{message}");
    assert_eq!(message["data"]["subject"], "work.echo.in");
    // A task with the capability it claims is done by it.
    a_wasm_task_is_done(&colony).await;
    let records = audit_of(&colony, &worker).await;
    assert!(records
        .iter()
        .any(|r| r["action"] == "task.complete" && r["decision"] == "allowed"));
    // A publish outside its authorization is refused, and the refusal is its answer.
    colony.node.shutdown().await.unwrap();
}

/// An idle artifact that claims work hears of it when it is posted: with idle wakes
/// an hour apart, a task posted for it is done at once all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_artifact_is_woken_when_tasks_become_claimable() {
    let runtime = colony_artifacts::RuntimeConfig {
        idle_wake_ms: 3_600_000,
        idle_wake_max_ms: 3_600_000,
        ..runtime()
    };
    let colony = start_with(runtime, Vec::new(), &[]).await;
    let worker = deployed(&colony, &colony.admin, "worker", WORKER, json!({})).await;
    let idle = wait_until(&colony, &worker, "idle", |v| v["state"] == "idle").await;
    let turns_before = idle["usage"]["turns"].as_u64().unwrap();
    a_wasm_task_is_done(&colony).await;
    let view = wait_until(&colony, &worker, "idle again", |v| v["state"] == "idle").await;
    assert!(
        view["usage"]["turns"].as_u64().unwrap() > turns_before,
        "{view}"
    );
    colony.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_start_and_stop_an_artifact_and_a_removed_one_stops() {
    let colony = start(Vec::new(), &[]).await;
    let (_, owner) =
        common::create_principal(&colony.base, &colony.admin, "owner", "ai", &["member"]).await;
    let (_, stranger) =
        common::create_principal(&colony.base, &colony.admin, "stranger", "ai", &["member"]).await;
    let address = deployed(&colony, &owner, "spin", SPIN, json!({"compute_ms": 50_000})).await;
    wait_until(&colony, &address, "running", |v| {
        v["usage"]["turns"].as_u64().unwrap_or(0) > 2
    })
    .await;
    let stop = |token: &str| {
        let base = colony.base.clone();
        let token = token.to_string();
        let path = format!("/v1/artifacts/{address}/stop");
        async move {
            common::send(
                reqwest::Method::POST,
                &base,
                &token,
                &path,
                Some(json!({"justification": "enough"})),
            )
            .await
        }
    };
    let (status, body) = stop(&stranger).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = stop(&owner).await;
    assert_eq!(status, 200, "{body}");
    wait_until(&colony, &address, "stopped", |v| v["state"] == "stopped").await;
    let turns = common::get_json(
        &colony.base,
        &colony.admin,
        &format!("/v1/artifacts/{address}"),
    )
    .await["usage"]["turns"]
        .clone();
    // Started again, then removed with its deployer: it stops, its record goes.
    let (status, _) = common::send(
        reqwest::Method::POST,
        &colony.base,
        &owner,
        &format!("/v1/artifacts/{address}/start"),
        Some(json!({"justification": "again"})),
    )
    .await;
    assert_eq!(status, 200);
    wait_until(&colony, &address, "running again", |v| {
        v["state"] == "running" || v["state"] == "exhausted"
    })
    .await;
    assert!(turns.as_u64().unwrap() > 0);
    let (status, _) = common::send(
        reqwest::Method::POST,
        &colony.base,
        &colony.admin,
        &format!("/v1/principals/{address}/remove"),
        Some(json!({"justification": "gone"})),
    )
    .await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = common::send(
            reqwest::Method::GET,
            &colony.base,
            &colony.admin,
            &format!("/v1/artifacts/{address}"),
            None,
        )
        .await;
        if status == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    colony.node.shutdown().await.unwrap();
}

/// The kick artifact shipped in config/genesis: deployed by the admin at first
/// start, it turns a limit alert into a task on the board (once per limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_kick_artifact_turns_a_limit_alert_into_a_task() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let setup = colony_node::genesis::load_artifacts(&shipped).unwrap();
    assert_eq!(setup.kick.len(), 1);
    let colony = start(setup.kick, &[]).await;
    let list = common::get_json(&colony.base, &colony.admin, "/v1/artifacts").await;
    let kick = list["artifacts"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(list["artifacts"][0]["deployer"], "1.1");
    wait_until(&colony, &kick, "listening", |v| v["state"] == "idle").await;
    // ai_accounts' soft value is 10: the eleventh AI is a warning, hence an alert.
    for n in 0..12 {
        common::create_principal(
            &colony.base,
            &colony.admin,
            &format!("ai{n}"),
            "ai",
            &["member"],
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let wanted = "Look into the alert on colony.events.alert.ai_accounts";
    loop {
        let tasks = common::get_json(&colony.base, &colony.admin, "/v1/tasks").await;
        let found: Vec<&Value> = tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["title"] == wanted)
            .collect();
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "one task per limit: {tasks}");
            assert_eq!(found[0]["capabilities"], json!(["ops"]));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no task: {tasks}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    colony.node.shutdown().await.unwrap();
}

/// `scheduler = "round_robin"` with one turn slot: busy artifacts take turns in
/// order, so none gets more than a turn ahead of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_busy_artifacts_equal_turns() {
    // Compute is not what this test is about: the admin's is unlimited and each
    // spinner's far more than it can spend here, so that none runs dry in the window
    // (the first deployed spins alone while the others are deployed on a loaded
    // machine; once, on CI, it ran out of a 60 000 ms quota in the middle of it).
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/quotas.toml"),
    )
    .unwrap();
    let human_compute = "compute_ms = 120000                  # two cores' worth per minute\n";
    assert!(shipped.contains(human_compute));
    let quotas = shipped.replace(human_compute, "compute_ms = \"unlimited\"\n");
    let config = common::genesis_dir(&[("quotas.toml", &quotas)]);
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        artifacts: Some(ArtifactsSetup {
            runtime: colony_artifacts::RuntimeConfig {
                scheduler: colony_artifacts::Scheduler::RoundRobin,
                turns_concurrent_max: 1,
                ..runtime()
            },
            kick: Vec::new(),
        }),
        ..common::node_config(data.path(), config.path())
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let colony = Colony {
        base: format!("http://{}", node.local_addr()),
        node,
        admin: admin.trim().to_string(),
        _dirs: (config, data),
    };
    let mut spinners = Vec::new();
    for name in ["a", "b", "c"] {
        spinners.push(
            deployed(
                &colony,
                &colony.admin,
                name,
                SPIN,
                json!({"compute_ms": 100_000_000}),
            )
            .await,
        );
    }
    for address in &spinners {
        wait_until(&colony, address, "taking turns", |v| {
            v["usage"]["turns"].as_u64().unwrap_or(0) >= 30
        })
        .await;
    }
    // In the order the kernel decided them (one sequence, whatever the timing of
    // reads), once all three are busy their turns go round: in the next 60 turns
    // each takes 20, give or take the one at the window's edges.
    // The artifacts go on turning while their records are read one after another:
    // only records up to the last one read of the first-read artifact are known for
    // all three.
    let mut commits: Vec<(u64, usize)> = Vec::new();
    let mut known_until = u64::MAX;
    for (n, address) in spinners.iter().enumerate() {
        let mut last = 0;
        for record in audit_of(&colony, address).await {
            let justification = record["justification"].as_str().unwrap_or("");
            if record["action"] == "ledger.commit" && justification.contains("turn used") {
                let seq = record["seq"].as_u64().unwrap();
                last = last.max(seq);
                commits.push((seq, n));
            }
        }
        known_until = known_until.min(last);
    }
    commits.retain(|(seq, _)| *seq <= known_until);
    commits.sort();
    let busy_from = (0..spinners.len())
        .map(|n| {
            commits
                .iter()
                .filter(|(_, who)| *who == n)
                .nth(5)
                .unwrap()
                .0
        })
        .max()
        .unwrap();
    let window: Vec<usize> = commits
        .iter()
        .filter(|(seq, _)| *seq > busy_from)
        .take(60)
        .map(|(_, who)| *who)
        .collect();
    assert_eq!(window.len(), 60, "{commits:?}");
    let counts: Vec<usize> = (0..spinners.len())
        .map(|n| window.iter().filter(|who| **who == n).count())
        .collect();
    assert!(
        counts.iter().all(|c| (19..=21).contains(c)),
        "turns {counts:?} in {window:?}"
    );
    colony.node.shutdown().await.unwrap();
}

/// A quarantined artifact (here: too many commands for the anomaly ceiling) waits,
/// reading the state, instead of having a refused command recorded every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_artifact_waits_without_filling_the_log() {
    let anomaly = "[anomaly]\nenabled = true\nwindow = \"1m\"\nwarmup_windows = 3\nfactor = 20\n[anomaly.signals.commands]\nceiling = 40\nmin = 10\n";
    let colony = start(Vec::new(), &[("anomaly.toml", anomaly)]).await;
    let address = deployed(
        &colony,
        &colony.admin,
        "spin",
        SPIN,
        json!({"compute_ms": 50_000}),
    )
    .await;
    let view = wait_until(&colony, &address, "quarantined", |v| {
        v["exhausted"] == "quarantined"
    })
    .await;
    assert_eq!(view["state"], "exhausted", "{view}");
    let before = audit_of(&colony, &address).await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = audit_of(&colony, &address).await.len();
    assert!(after <= before + 1, "{before} records, then {after}");
    colony.node.shutdown().await.unwrap();
}
