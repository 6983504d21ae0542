//! Durable throughput and restart time. Prints figures; asserts nothing.
//!
//! 1. Reserve+commit pairs through the store with group commit, by batch size.
//! 2. Reserve+commit pairs over HTTP against a node, many concurrent clients
//!    (the clients run in the same process, on the same two cores).
//! 3. Restart of a log of one million commands, with and without a snapshot.
//!
//! Run: `cargo bench -p colony-node --bench durable` (add `-- quick` for a short run).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_kernel::{
    Command, CommandBody, CreatePrincipal, Genesis, PrincipalId, PrincipalKind, Resource, State,
};
use colony_log::{snapshot, Store, StoreOptions};
use colony_node::{Node, NodeConfig};
use serde_json::json;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    group_commit(if quick { 20_000 } else { 200_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(http(if quick { 2 } else { 5 }));
    restart(if quick { 100_000 } else { 1_000_000 });
}

/// Applies and appends `commands` (after genesis and one principal), syncing every
/// `batch` commands. Returns the time spent on the reserve+commit commands.
fn write_log(dir: &Path, commands: u64, batch: u64) -> Duration {
    let (mut store, mut state, _) = Store::open(dir, StoreOptions::default()).unwrap();
    let push = |state: &mut State, store: &mut Store, actor, body| {
        let command = Command::new(
            state.last_seq + 1,
            1_700_000_000_000 + state.last_seq / 1000,
            actor,
            "bench: one LLM call",
            body,
        );
        let applied = state.apply(&command);
        store.append(&command, &applied, state).unwrap();
    };
    push(
        &mut state,
        &mut store,
        PrincipalId::SYSTEM,
        CommandBody::Genesis(Box::new(Genesis::unlimited_for_benchmarks([1; 32]))),
    );
    push(
        &mut state,
        &mut store,
        PrincipalId::ADMIN,
        CommandBody::CreatePrincipal(CreatePrincipal::new("bench", PrincipalKind::Ai, [2; 32])),
    );
    store.sync().unwrap();
    let agent = state.principal_by_token(&[2; 32]).unwrap().id;
    let started = Instant::now();
    let mut written = 0;
    while written < commands {
        let reservation = state.last_seq + 1;
        push(
            &mut state,
            &mut store,
            agent,
            CommandBody::Reserve {
                resource: Resource::LlmBudgetUsd,
                amount: 1_000,
                ttl_ms: None,
            },
        );
        push(
            &mut state,
            &mut store,
            agent,
            CommandBody::Commit {
                reservation,
                actual: 700,
            },
        );
        written += 2;
        if written % batch == 0 {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    started.elapsed()
}

fn group_commit(commands: u64) {
    println!("== durable commands through the store (apply + append + fsync per batch) ==");
    for batch in [2, 64, 1_024, 8_192] {
        let dir = tempfile::tempdir().unwrap();
        let count = if batch == 2 { commands / 20 } else { commands };
        let elapsed = write_log(dir.path(), count, batch);
        println!(
            "batch {batch:>5}: {:>9.0} durable commands/s ({:.0} reserve+commit pairs/s; {count} commands in {:.2} s)",
            count as f64 / elapsed.as_secs_f64(),
            count as f64 / 2.0 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
}

async fn http(seconds: u64) {
    println!("== reserve+commit pairs over HTTP (clients in the same process) ==");
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let limits = "[limits.concurrent_api_requests]\nsoft = 4096\nhard = 8192\n";
    let quotas = "[ledger]\nreservations_per_principal_max = 100000\n[defaults.human]\nllm_budget_usd = \"unlimited\"\nio_ops = \"unlimited\"\n";
    std::fs::write(config.path().join("limits.toml"), limits).unwrap();
    std::fs::write(config.path().join("quotas.toml"), quotas).unwrap();
    std::fs::write(
        config.path().join("governance.toml"),
        "[governance]\nreview_period = \"24h\"\n",
    )
    .unwrap();
    let node = Node::start(NodeConfig {
        data_dir: data.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        config_dir: config.path().to_path_buf(),
        config_dir_required: true,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", node.local_addr());
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    for clients in [16, 64, 256] {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, base, token, latencies) = (
                http.clone(),
                base.clone(),
                token.clone(),
                Arc::clone(&latencies),
            );
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let reserved: serde_json::Value = http
                        .post(format!("{base}/v1/ledger/reserve"))
                        .bearer_auth(&token)
                        .json(&json!({"resource": "llm_budget_usd", "amount": 1000, "justification": "bench: one LLM call"}))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    mine.push(started.elapsed());
                    let started = Instant::now();
                    let response = http
                        .post(format!("{base}/v1/ledger/commit"))
                        .bearer_auth(&token)
                        .json(&json!({"reservation": reserved["reservation"], "actual": 700}))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
                    mine.push(started.elapsed());
                }
                latencies.lock().unwrap().extend(mine);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut latencies = latencies.lock().unwrap().clone();
        latencies.sort();
        let percentile =
            |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3;
        println!(
            "{clients:>4} clients: {:>7.0} durable requests/s ({:.0} pairs/s), latency p50 {:.2} ms, p99 {:.2} ms",
            latencies.len() as f64 / seconds as f64,
            latencies.len() as f64 / 2.0 / seconds as f64,
            percentile(0.50),
            percentile(0.99)
        );
    }
    node.shutdown().await.unwrap();
}

fn restart(commands: u64) {
    println!("== restart of a log of {commands} commands ==");
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), commands, 8_192);
    let started = Instant::now();
    let (_, state, report) = Store::open(
        dir.path(),
        StoreOptions {
            ignore_snapshots: true,
            ..Default::default()
        },
    )
    .unwrap();
    println!(
        "without a snapshot: {:.2} s (replayed {} commands)",
        started.elapsed().as_secs_f64(),
        report.replayed
    );
    let encode = Instant::now();
    let payload = snapshot::encode_state(&state);
    snapshot::write_snapshot(&dir.path().join("snapshots"), state.last_seq, &payload).unwrap();
    let written = encode.elapsed();
    let started = Instant::now();
    let (_, _, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    println!(
        "with a snapshot at the end: {:.3} s (replayed {} commands; the snapshot is {} bytes, written in {:.3} s)",
        started.elapsed().as_secs_f64(),
        report.replayed,
        payload.len(),
        written.as_secs_f64()
    );
}
