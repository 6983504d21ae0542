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

/// The allocator the `colony` binary ships with (`crates/colony/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    group_commit(if quick { 20_000 } else { 200_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(http(if quick { 2 } else { 5 }));
    durable_claims(if quick { 20_000 } else { 200_000 });
    runtime.block_on(http_claims(if quick { 2_000 } else { 20_000 }));
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
        if written.is_multiple_of(batch) {
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

/// A node with the given `limits.toml` and `quotas.toml`; returns it, its URL, the
/// admin token, and the directories to keep alive.
async fn bench_node(
    limits: &str,
    quotas: &str,
) -> (Node, String, String, (tempfile::TempDir, tempfile::TempDir)) {
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
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
    (node, base, token, (data, config))
}

async fn http(seconds: u64) {
    println!("== reserve+commit pairs over HTTP (clients in the same process) ==");
    let limits = "[limits.concurrent_api_requests]\nsoft = 4096\nhard = 8192\n";
    let quotas = "[ledger]\nreservations_per_principal_max = 100000\n[defaults.human]\nllm_budget_usd = \"unlimited\"\nio_ops = \"unlimited\"\n";
    let (node, base, token, _dirs) = bench_node(limits, quotas).await;
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

/// Claims through the store with group commit (batches of 1 024), 16 workers in turn.
fn durable_claims(tasks: u64) {
    use colony_kernel::tasks::NewTask;
    use colony_kernel::Effect;
    println!("== durable claims through the store (group commit, batches of 1024) ==");
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut state, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let push = |state: &mut State, store: &mut Store, actor, body| {
        let command = Command::new(state.last_seq + 1, 1_700_000_000_000, actor, "", body);
        let applied = state.apply(&command);
        store.append(&command, &applied, state).unwrap();
        applied
    };
    push(
        &mut state,
        &mut store,
        PrincipalId::SYSTEM,
        CommandBody::Genesis(Box::new(Genesis::unlimited_for_benchmarks([1; 32]))),
    );
    let workers: Vec<PrincipalId> = (0..16u8)
        .map(|index| {
            let create = CreatePrincipal::new(
                format!("worker {index}"),
                PrincipalKind::Ai,
                [100 + index; 32],
            );
            let applied = push(
                &mut state,
                &mut store,
                PrincipalId::ADMIN,
                CommandBody::CreatePrincipal(create),
            );
            let Effect::PrincipalCreated { id, .. } = applied.primary().effect else {
                panic!("bench worker")
            };
            id
        })
        .collect();
    for index in 0..tasks {
        let task = NewTask {
            title: format!("task {index}"),
            description: String::new(),
            priority: colony_kernel::Priority::Normal,
            capabilities: Vec::new(),
            depends_on: Vec::new(),
            budget_micro_usd: None,
            max_attempts: None,
            attempt_timeout_ms: None,
        };
        push(
            &mut state,
            &mut store,
            PrincipalId::ADMIN,
            CommandBody::PostTask(Box::new(task)),
        );
        if index.is_multiple_of(1024) {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    let mut claimed = std::collections::BTreeSet::new();
    let started = Instant::now();
    let mut claims = 0u64;
    'outer: loop {
        for worker in &workers {
            let body = CommandBody::ClaimTask {
                capabilities: Vec::new(),
                lease_ms: None,
                worker: None,
            };
            let applied = push(&mut state, &mut store, *worker, body);
            match &applied.primary().effect {
                Effect::TaskClaimed { address, .. } => {
                    assert!(claimed.insert(address.clone()), "double claim of {address}");
                    claims += 1;
                    if claims.is_multiple_of(1024) {
                        store.sync().unwrap();
                    }
                }
                _ => break 'outer,
            }
        }
    }
    store.sync().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{claims} durable claims by 16 workers: {:.0} claims/s, 0 double claims",
        claims as f64 / seconds
    );
}

/// Claim + complete over HTTP by many clients until the board is empty; every task
/// must be claimed exactly once.
async fn http_claims(tasks: usize) {
    println!("== claims over HTTP (claim then complete, clients in the same process) ==");
    let limits = "[limits.concurrent_api_requests]\nsoft = 4096\nhard = 8192\n[limits.task_queue_depth]\nhard = \"unlimited\"\n";
    let quotas =
        "[defaults.human]\nio_ops = \"unlimited\"\n[defaults.ai]\nio_ops = \"unlimited\"\n";
    let (node, base, admin, _dirs) = bench_node(limits, quotas).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let mut posts = Vec::new();
    for index in 0..tasks {
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        posts.push(tokio::spawn(async move {
            let body = json!({"title": format!("job {index}"), "justification": "bench"});
            let response = http
                .post(format!("{base}/v1/tasks"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        }));
        if posts.len() >= 256 {
            for post in posts.drain(..) {
                post.await.unwrap();
            }
        }
    }
    for post in posts {
        post.await.unwrap();
    }
    let mut workers = Vec::new();
    for index in 0..64 {
        let body =
            json!({"name": format!("worker {index}"), "kind": "ai", "justification": "bench"});
        let created: serde_json::Value = http
            .post(format!("{base}/v1/principals"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        workers.push(created["token"].as_str().unwrap().to_string());
    }
    let started = Instant::now();
    let claimed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for token in workers {
        let (http, base, claimed) = (http.clone(), base.clone(), Arc::clone(&claimed));
        clients.push(tokio::spawn(async move {
            loop {
                let response = http
                    .post(format!("{base}/v1/tasks/claim"))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                if response.status() == reqwest::StatusCode::NO_CONTENT {
                    return;
                }
                let body: serde_json::Value = response.json().await.unwrap();
                let address = body["task"]["address"].as_str().unwrap().to_string();
                let lease = &body["lease"]["token"];
                let done = json!({"lease_token": lease, "result": "ok"});
                let response = http
                    .post(format!("{base}/v1/tasks/{address}/complete"))
                    .bearer_auth(&token)
                    .json(&done)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                claimed.lock().unwrap().push(address);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let claimed = claimed.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<&String> = claimed.iter().collect();
    assert_eq!(
        (claimed.len(), distinct.len()),
        (tasks, tasks),
        "every task claimed exactly once"
    );
    println!(
        "64 clients, {tasks} tasks: {:.0} claims/s ({:.0} requests/s with the completions), 0 double claims",
        tasks as f64 / seconds,
        2.0 * tasks as f64 / seconds
    );
    node.shutdown().await.unwrap();
}
