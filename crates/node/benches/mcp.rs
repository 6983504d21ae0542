//! An MCP tool call through Colony beside the same route over HTTP: the round trip of
//! a read tool (`ledger_me` and `GET /v1/ledger/me`) and a write tool (`task_post`
//! and `POST /v1/tasks`), one client at a time and 16 at once, p50 and p99, and
//! the ratio the aim is set on (within 1.2x at p99). Prints figures; asserts nothing.
//!
//! Then a tool of an upstream MCP server through the governed gateway (the tests'
//! `tests/python/mcp_upstream.py`, run by the node over stdio under bubblewrap): its
//! round trip includes the checks, the price reserved, the call and its record.
//!
//! Run: `cargo bench -p colony-node --bench mcp` (add `-- quick` for a short run).

#[path = "../tests/common/tools.rs"]
mod tools;

use std::time::{Duration, Instant};

use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};

/// The allocator the `colony` binary ships with (`crates/colony/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let calls = if quick { 400 } else { 4_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(calls));
}

/// A node whose admin has no quota in the way of the run.
async fn start() -> (Node, String, String, (tempfile::TempDir, tempfile::TempDir)) {
    start_with("").await
}

/// The same, with `mcp.toml`.
async fn start_with(mcp: &str) -> (Node, String, String, (tempfile::TempDir, tempfile::TempDir)) {
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("mcp.toml"), mcp).unwrap();
    std::fs::write(
        config.path().join("limits.toml"),
        "[limits.concurrent_api_requests]\nsoft = 4096\nhard = 8192\n\
         [limits.task_queue_depth]\nsoft = 900000\nhard = 1000000\n\
         [limits.data_creation_bytes]\nsoft = \"unlimited\"\nhard = \"unlimited\"\n",
    )
    .unwrap();
    std::fs::write(
        config.path().join("quotas.toml"),
        "[defaults.human]\nllm_budget_usd = \"unlimited\"\nio_ops = \"unlimited\"\n",
    )
    .unwrap();
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

/// One way of making a call.
#[derive(Clone, Copy)]
enum Way {
    Http,
    Mcp,
}

#[derive(Clone, Copy)]
enum Call {
    Read,
    Write,
}

async fn once(http: &reqwest::Client, base: &str, token: &str, way: Way, call: Call, n: u64) {
    let response = match (way, call) {
        (Way::Http, Call::Read) => {
            http.get(format!("{base}/v1/ledger/me"))
                .bearer_auth(token)
                .send()
                .await
        }
        (Way::Http, Call::Write) => {
            http.post(format!("{base}/v1/tasks"))
                .bearer_auth(token)
                .json(&json!({"title": format!("bench {n}"), "justification": "bench: a write"}))
                .send()
                .await
        }
        (Way::Mcp, call) => {
            let (name, arguments) = match call {
                Call::Read => ("ledger_me", json!({})),
                Call::Write => (
                    "task_post",
                    json!({"title": format!("bench {n}"), "justification": "bench: a write"}),
                ),
            };
            mcp_call(http, base, token, n, name, arguments).await
        }
    };
    let response = response.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let answer: Value = response.json().await.unwrap();
    if matches!(way, Way::Mcp) {
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
}

async fn mcp_call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    n: u64,
    name: &str,
    arguments: Value,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}}))
        .send()
        .await
}

/// An upstream read tool through the gateway beside the colony's own read tool,
/// one client, `calls` each.
async fn upstream(calls: u64) {
    let python = tokio::task::spawn_blocking(tools::python).await.unwrap();
    let mcp = format!(
        "{}[[servers.tools]]\nname = \"*\"\nrate_per_minute = 1000000\n",
        tools::notes_server(&python)
    );
    let (node, base, token, _dirs) = start_with(&mcp).await;
    let http = reqwest::Client::new();
    let timed = |name: &'static str, arguments: Value| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let mut latencies = Vec::new();
            for n in 0..calls + 50 {
                let started = Instant::now();
                let response = mcp_call(&http, &base, &token, n, name, arguments.clone())
                    .await
                    .unwrap();
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["result"]["isError"], false, "{answer}");
                if n >= 50 {
                    latencies.push(started.elapsed());
                }
            }
            latencies.sort();
            latencies
        }
    };
    let own = timed("ledger_me", json!({})).await;
    let read = timed(
        "notes__read_note",
        json!({"name": "groceries", "justification": "bench: an upstream read"}),
    )
    .await;
    println!("== an upstream MCP server's tool through the governed gateway (1 client, {calls} calls each) ==");
    for (label, latencies) in [
        ("colony's ledger_me over MCP", &own),
        ("notes__read_note (stdio, bwrap)", &read),
    ] {
        println!(
            "{label:<34} p50 {:>6.2} ms, p99 {:>6.2} ms",
            percentile(latencies, 0.50),
            percentile(latencies, 0.99)
        );
    }
    node.shutdown().await.unwrap();
}

/// Latencies of `calls` calls made by `clients` clients at once.
async fn measure(
    base: &str,
    token: &str,
    way: Way,
    call: Call,
    calls: u64,
    clients: u64,
) -> Vec<Duration> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, base, token) = (http.clone(), base.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..calls / clients {
                let started = Instant::now();
                once(&http, &base, &token, way, call, client * 1_000_000 + i).await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3
}

async fn run(calls: u64) {
    let (node, base, token, _dirs) = start().await;
    println!("== an MCP tool call beside the same route over HTTP ({calls} calls each) ==");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}",
        "call", "http p50", "http p99", "mcp p50", "mcp p99"
    );
    for (call, label) in [
        (Call::Read, "read (ledger_me)"),
        (Call::Write, "write (task_post)"),
    ] {
        for clients in [1, 16] {
            // Warm both paths, then alternate so that neither gets the quieter moment.
            measure(&base, &token, Way::Http, call, 50, 1).await;
            measure(&base, &token, Way::Mcp, call, 50, 1).await;
            let http = measure(&base, &token, Way::Http, call, calls, clients).await;
            let mcp = measure(&base, &token, Way::Mcp, call, calls, clients).await;
            println!(
                "{:<28} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
                format!("{label}, {clients} client(s)"),
                percentile(&http, 0.50),
                percentile(&http, 0.99),
                percentile(&mcp, 0.50),
                percentile(&mcp, 0.99)
            );
            println!(
                "mcp / http at p99: {:.2}x, at p50: {:.2}x",
                percentile(&mcp, 0.99) / percentile(&http, 0.99),
                percentile(&mcp, 0.50) / percentile(&http, 0.50)
            );
        }
    }
    node.shutdown().await.unwrap();
    upstream(calls).await;
}
